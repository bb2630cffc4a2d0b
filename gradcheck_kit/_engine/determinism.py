"""fn is a deterministic function of its inputs: called again at the end of a check, it gives what it gave first.

Finite differences compare values of ``fn`` taken in many calls; a function whose values move between
calls (a counter, a cache, noise from a ``torch.Generator`` of its own or from numpy's global generator)
makes them meaningless, and a wrong gradient can pass among derivatives "that could not be checked". The
kit reseeds torch's global generator before every call (dropout stays one function); nothing else is
reseeded. The outputs of the first call (autograd's forward at the inputs as given) are compared bit for bit
(within ``nondet_tol`` where the caller gave one) with those of one more call made the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._engine.evaluate import as_outputs, describe_exception, seed_global_rng
from gradcheck_kit._inputs import coord_index, layout_clone
from gradcheck_kit.report import format_index
from gradcheck_kit.errors import FunctionError

__all__ = ["call_again", "kept_outputs_agree", "moved_outputs", "not_deterministic"]

CAUSE = (
    "gradients of a function whose values change between calls cannot be checked: make fn a pure function "
    "of its arguments (state kept between calls, a counter or a cache, a torch.Generator of its own or numpy's "
    "random generator, which the kit does not reseed; torch's global generator is reseeded for every call)"
)


def call_again(
    fn: Callable, inputs: Sequence[Any], grad_positions: Sequence[int], rng_seed: int
) -> tuple[tuple | None, str | None]:
    """fn called as the check's first call was (fresh copies of the inputs, those at ``grad_positions``
    requiring grad, grad enabled, the global RNG seeded): its outputs, or ``None`` and what went wrong."""
    args = []
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor):
            clone = layout_clone(t)
            if i in grad_positions:
                clone.requires_grad_(True)
            args.append(clone)
        else:
            args.append(t)
    seed_global_rng(rng_seed)
    try:
        with torch.enable_grad():
            result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the function's failure is reported
        return None, f"it raised {describe_exception(exc)}"
    try:
        return as_outputs(result), None
    except FunctionError as exc:
        return None, "it " + str(exc).removeprefix("fn ").split("; it must")[0]


def kept_outputs_agree(
    first: Sequence[torch.Tensor], kept: Sequence[torch.Tensor] | None, out_idx: Sequence[int], nondet_tol: float
) -> bool:
    """Whether fn's outputs at the inputs from its latest call in the check (a forward-mode pass's primal
    values, kept by ``analytic.DualMemo``) equal those of its first call: fn did not change between the
    calls, and no call of its own is needed. Where they differ (a pass without grad may take another
    branch of fn), the call made as the first was decides."""
    return kept is not None and moved_outputs(first, kept, out_idx, nondet_tol) is None


def _where(j: int, out: torch.Tensor, k: int, n_outputs: int) -> str:
    index, part = coord_index(j, out.shape, out.is_complex())
    name = "out" if n_outputs == 1 else f"out{k}"
    return f"{name}{format_index(index)}" + (f" ({part})" if part else "")


def moved_outputs(
    first: Sequence[torch.Tensor], again: Sequence[torch.Tensor], out_idx: Sequence[int], nondet_tol: float = 0.0
) -> str | None:
    """What differs between two calls' outputs ``out_idx`` (beyond ``nondet_tol``), in words, else None."""
    if len(again) <= max(out_idx, default=-1):
        return f"it returned {len(again)} output(s), {len(first)} the first time"
    for k in out_idx:
        a, b = first[k].detach(), again[k].detach()
        if not isinstance(b, torch.Tensor) or b.shape != a.shape or b.dtype != a.dtype:
            got = f"{tuple(b.shape)} {str(b.dtype).replace('torch.', '')}"
            want = f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}"
            return f"output {k} is {got}, the first time {want}"
        if torch.equal(a, b):
            continue
        ra = torch.view_as_real(a) if a.is_complex() else a
        rb = torch.view_as_real(b) if b.is_complex() else b
        ra, rb = ra.reshape(-1).to("cpu", torch.float64), rb.reshape(-1).to("cpu", torch.float64)
        diff = (ra - rb).abs()
        same_nan = torch.isnan(ra) & torch.isnan(rb)
        diff = torch.where(same_nan, torch.zeros_like(diff), diff.nan_to_num(nan=float("inf")))
        moved = diff > nondet_tol
        if not bool(moved.any()):
            continue
        j = int(diff.argmax())
        beyond = f" (beyond nondet_tol={nondet_tol:g})" if nondet_tol else ""
        return (
            f"{int(moved.sum())} of {ra.numel()} element(s) of output {k} changed{beyond}, the largest at "
            f"{_where(j, a, k, len(first))}: {ra[j].item():.6g} the first time, {rb[j].item():.6g} now "
            f"(|change| {diff[j].item():.1e})"
        )
    return None


def not_deterministic(what: str) -> str:
    """The report's error for a function found to change between calls (``what``: how, in words)."""
    return f"fn is not a deterministic function of its inputs: called again with the same inputs, {what}; {CAUSE}"
