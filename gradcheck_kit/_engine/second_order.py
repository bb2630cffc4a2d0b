"""``order=2``: second derivatives, the backward of the backward, against finite differences.

The first derivative projected on the check's output vectors ``v`` is itself a function of the inputs,
``G(x) = d(v·fn(x))/dx`` (one output per differentiated input). Its Jacobian is checked like any other:
the autograd side is reverse-over-reverse (``create_graph=True``), and forward-over-reverse where torch
supports forward AD through the backward; the numerical side is finite differences of ``G``. A backward
that is not differentiable (``.detach()`` inside it) gives ``G`` no graph and its second derivative
compares as zero; a double backward wrong by a factor differs from the numerical one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from gradcheck_kit._engine.analytic import rows_from_coords
from gradcheck_kit._engine.context import Results
from gradcheck_kit._engine.evaluate import as_outputs
from gradcheck_kit._engine.notes import NO_GRADIENT_FLOW
from gradcheck_kit._orders import _order_and_base, chain, second_order_name
from gradcheck_kit.report import CheckResult, Note, NoteCode

__all__ = ["first_derivative", "first_derivative_of", "results_of", "second_order_name"]


def first_derivative(fn, wrt: list[int], vectors: list[torch.Tensor]):
    """``G(*args) = d(sum_k v_k·out_k)/d args[wrt]`` as a tuple, differentiable when the backward is."""

    def G(*args: Any):
        call = list(args)
        with torch.enable_grad():
            for i in wrt:
                if not call[i].requires_grad:
                    # a dual tensor (forward-over-reverse, which runs without grad) keeps its tangent
                    # through clone; detach would drop it and give the second derivative a zero jvp
                    dual = fwAD.unpack_dual(call[i]).tangent is not None
                    call[i] = (call[i].clone() if dual else call[i].detach()).requires_grad_(True)
            outs = as_outputs(fn(*call))
            diff = [(o, v) for o, v in zip(outs, vectors) if v is not None and o.requires_grad]
            if not diff:
                return tuple(torch.zeros_like(call[i]) for i in wrt)
            grads = torch.autograd.grad(
                [o for o, _ in diff],
                [call[i] for i in wrt],
                grad_outputs=[v.to(o.dtype) for o, v in diff],
                create_graph=True,
                allow_unused=True,
            )
        # None (unused) and autograd's immutable ZeroTensor both become a plain zero of the input's shape
        return tuple(
            torch.zeros_like(call[i]) if g is None or g._is_zerotensor() else g for g, i in zip(grads, wrt)
        )

    G.__name__ = G.__qualname__ = f"grad({getattr(fn, '__name__', 'fn')})"
    return G


def first_derivative_of(run):
    """``G`` of a first-order check ``run``: its function's first derivative projected on its vectors ``v``."""
    vectors: list = []
    for k, out in enumerate(run.outs):
        vectors.append(rows_from_coords(run.v[k].unsqueeze(0), out)[0] if k in run.v else None)
    return first_derivative(run.fn, list(run.wrt), vectors)


def results_of(report, names: list, wrt: list) -> Results:
    """The results of orders 2 and up from the report of ``G``'s check (``report``, of order one less):
    its checks, groups and mismatches renamed one order up, and its no-gradient notes said of the backward.
    Where ``G``'s check stopped with errors, one ``backward²`` error with them."""
    found = Results()
    for group in report.groups:
        found.groups.append(dataclasses.replace(group, check=second_order_name(group.check)))
    for m in report.mismatches:
        found.mismatches.append(dataclasses.replace(m, check=second_order_name(m.check), note=_note(m, names, wrt)))
    if report.errors:
        found.checks.append(CheckResult(second_order_name("backward"), "error", "; ".join(report.errors)))
        return found
    for c in report.checks:
        found.checks.append(CheckResult(second_order_name(c.name), c.status, _detail(c)))
    for note in report.notes:
        if note.code in (NO_GRADIENT_FLOW, NoteCode.BACKWARD_NOT_DIFFERENTIABLE):
            found.notes.append(Note(
                "second order: the backward is not differentiable (its result has no graph: .detach() or "
                "no_grad inside backward?); " + note, NoteCode.BACKWARD_NOT_DIFFERENTIABLE,
                (note.code, *note.fields),
            ))
    return found


def _detail(c) -> str:
    name = second_order_name(c.name)
    detail = c.detail
    order, base = _order_and_base(name)
    if base in ("forward", "backward"):
        if _order_and_base(c.name)[0] > 1:  # G's own higher orders: their detail starts with G's chain
            detail = detail.split("; ", 1)[1] if "; " in detail else ""
        what = (
            f"reverse-over-reverse ({chain(order)})" if base == "backward"
            else f"forward-over-reverse (forward over {chain(order - 1)})"
        )
        detail = f"{what}; {detail}" if detail else what
    return detail


def _note(m, names: list, wrt: list) -> str:
    if _order_and_base(m.check)[0] > 1:  # a derivative of G of order 2 and up: its note says so already
        return m.note
    wrt_name = names[wrt[m.output_index]] if m.output_index < len(wrt) else "?"
    text = f"second derivative: output {m.output_index} is d(v·out)/d {wrt_name}"
    return f"{text}; {m.note}" if m.note else text
