"""Structural checks borrowed from ``torch.autograd.gradcheck``, run on the graph the check already built.

- ``reentrant``: two backward passes over the same graph agree (exactly, or within ``nondet_tol`` for
  functions that are legitimately nondeterministic); the backward leaves ``grad_output`` untouched; a
  backward that modified a saved tensor in place shows up as a second pass that differs or raises. In full
  mode the first of them is also compared with the main check's own pass (the Jacobian's rows, ``J^T v``
  in float64, within 64 roundings of ``|J|^T |v|``, float32's at least): a backward that goes wrong from its second call
  on (a counter, a cache filled by the first call) agrees with itself on every later pass.
- ``zero_grad_output``: a zero ``grad_output`` gives a zero gradient (in full mode a zero row goes with
  the Jacobian's batched rows, so this costs no backward of its own).

Undefined ``grad_output``s (one output's gradient missing) are exercised by the main check, which
differentiates each output on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from gradcheck_kit._engine.analytic import rows_from_coords
from gradcheck_kit._engine.evaluate import describe_exception
from gradcheck_kit._engine.graph import PythonInBackward
from gradcheck_kit._engine.limits import NUMPY_ELEMENTS
from gradcheck_kit._engine.linearity import natural_size, rounding_eps, smallest_normal
from gradcheck_kit._inputs import bitwise_equal, coord_index, coords64
from gradcheck_kit.report import CheckResult, format_index

__all__ = ["structural_checks", "watched_reentrant", "zero_grad_check", "Graph"]

#: above this many input coordinates a directional check skips the zero-grad_output backward
LARGE_INPUT = 1 << 16
#: a later backward may differ from J^T v (the checked Jacobian's rows times v, in float64) by this many
#: roundings of the gradient's dtype of |J|^T |v| (elementwise) plus a few of its largest value
FIRST_PASS_EPS = 64.0
FIRST_PASS_FLOOR_EPS = 4.0
#: and, for a low-precision input, this many times the conditioning probe's spread: the main comparison allows
#: one pass's measured error up to 4x the conditioning, and here two rounded passes are compared
CONDITIONING_TIMES = 8.0
#: above this many elements the re-entrancy pass watches grad_output for in-place writes instead of
#: comparing it with a copy (a copy of 10^6 elements is a page-faulting allocation on top of the backward's)
LARGE_GRAD_OUTPUT = 1 << 16
_FOLDED = "the zero grad_output went with the Jacobian's batched rows"


@dataclass(frozen=True)
class Graph:
    """What the structural checks read of the first-order check: fn's outputs and the differentiated leaves
    of its graph, the output vectors v (and as drawn), the backward's state (``full`` where it ran entry by
    entry, ``directional`` where along directions, ``zero_grad_rows`` where a zero row went with the
    Jacobian's rows), fn's coarser inside precision and the conditioning probe, computed on demand."""

    outs: tuple
    out_idx: list
    leaves: dict
    wrt: list
    inputs: list
    names: list
    v: dict
    drawn_vectors: dict
    nondet_tol: float
    n_in: int
    full: Any
    directional: Any
    zero_grad_rows: dict | None
    coarse_eps: Callable[[], float]
    conditioning: Callable[[], dict | None]
    custom_functions: tuple  # the custom autograd.Functions' names in the graph of outs (``graph.Facts``)


def _grads(outs, leaves, grad_outputs):
    grads = torch.autograd.grad(outs, leaves, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g.detach() for g, leaf in zip(grads, leaves)]


def _same_sum(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(a, b) or (torch.isnan(a).all() and torch.isnan(b).all()))


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def _conditioning_spread(run: Graph, full_state, i: int, pairs, vectors) -> torch.Tensor | None:
    """For a low-precision input whose check made a float64 autograd run: how far ``J^T v`` of the float64
    derivatives moves when the inputs move by a few roundings of their precision (the check's conditioning
    probe, ``allowance.full_conditioning``), projected on ``|v|``. An ill-conditioned backward (a Sinkhorn loss in
    float32) rounds the same ``v`` that much differently through another order of sums. The probe reruns
    float64 autograd on moved inputs, all later calls alike, so a backward that changes from its second
    call on moves nothing here. None where there is no such run."""
    reference, rows = full_state.reference or {}, full_state.rows or {}
    if run.inputs[i].dtype != torch.float32 or not all((i, k) in reference for _, k in pairs):
        return None  # float16/bfloat16: 64 of their roundings would hide a backward wrong by percents
    conditioning = run.conditioning()
    if not conditioning or not all((i, k) in conditioning for _, k in pairs):
        return None
    spread = None
    for (_, k), v in zip(pairs, vectors):
        c = conditioning[(i, k)].to(torch.float64).abs()
        part = c @ coords64(v).abs() if rows[k] == "jacobian" else c[:, 0]
        spread = part if spread is None else spread + part
    return spread


def _against_first_pass(run: Graph, full_state, pairs, vectors, later, nondet_tol: float) -> str | None:
    """Where a later backward of ``v`` differs from ``J^T v`` of the Jacobian the main check compared (its
    first backward), beyond the roundings allowed: a message, else None."""
    analytic, rows = full_state.analytic, full_state.rows
    if not analytic or not rows:
        return None
    checked = []
    for i, g in zip(run.wrt, later):
        if any((i, k) not in analytic for _, k in pairs):
            continue
        expected = torch.zeros(analytic[(i, pairs[0][1])].shape[0], dtype=torch.float64)
        size = torch.zeros_like(expected)
        for (o, k), v in zip(pairs, vectors):
            a = analytic[(i, k)].to(torch.float64)
            if rows[k] == "jacobian":
                w = coords64(v)
                expected += a @ w
                size += a.abs() @ w.abs()
            else:  # one row per output: the projection on this same v
                expected += a[:, 0]
                size += a[:, 0].abs()
        finite = torch.isfinite(size) & torch.isfinite(expected)
        checked.append((i, g, expected, size, finite))
    # the largest size over every input, or the natural size of the terms, whichever is larger: a correct
    # backward whose terms cancel (a bias in front of a normalisation) rounds at the size of its terms
    top_all = max((float(size[finite].max()) for _, _, _, size, finite in checked if bool(finite.any())), default=0.0)
    for i, g, expected, size, finite in checked:
        got = coords64(g)
        if torch.equal(got, expected):  # the same sums (an elementwise fn): nothing to allow for
            continue
        top = max(top_all, natural_size([o for o, _ in pairs], vectors, run.leaves[i]))
        diff = (got - expected).abs()
        e = rounding_eps([g], [o for o, _ in pairs])
        for floor in (0.0, None):  # None: fn's coarser inside precision, asked for only where needed
            e = max(e, run.coarse_eps() if floor is None else floor)
            allowed = nondet_tol + FIRST_PASS_EPS * e * size + smallest_normal(e) + FIRST_PASS_FLOOR_EPS * e * top
            bad = torch.where(finite, ~(diff <= allowed), torch.isfinite(got))
            if not bool(bad.any()):
                break
        if bool(bad.any()):
            spread = _conditioning_spread(run, full_state, i, pairs, vectors)
            if spread is not None and spread.shape == allowed.shape:
                allowed = allowed + CONDITIONING_TIMES * spread
                bad = torch.where(finite, ~(diff <= allowed), torch.isfinite(got))
        if not bool(bad.any()):
            continue
        ratio = torch.where(bad, (diff / allowed.clamp_min(1e-300)).nan_to_num(float("inf")), torch.zeros_like(diff))
        j = int(ratio.argmax())
        index, _ = coord_index(j, run.leaves[i].shape, run.leaves[i].is_complex())
        return (
            f"a later backward differs from the first: at {run.names[i]}{format_index(index)} the checked "
            f"Jacobian's rows (the first backward) give J^T·v = {expected[j].item():.6g}, a later backward of the "
            f"same v over the same graph gives {got[j].item():.6g} (|diff| {diff[j].item():.1e} > allowed "
            f"{allowed[j].item():.1e}; {int(bad.sum())} element(s)); a backward must not depend on how many times "
            "it ran (state kept between calls, a counter, a cache) nor on grad_output other than linearly"
        )
    return None


def structural_checks(run: Graph) -> list[CheckResult]:
    """The results of ``reentrant`` and ``zero_grad_output`` (one of them where no output requires grad)."""
    pairs = [(run.outs[k], k) for k in run.out_idx if run.outs[k].requires_grad]
    if not pairs:
        return [CheckResult("reentrant", "skipped", "no output requires grad")]
    vectors = _given_vectors(run, pairs)
    reentrant = _reentrant(run, pairs, vectors)
    if reentrant.status == "error":
        return [reentrant]
    return [reentrant, _zero_grad_output(run, pairs, vectors)]


def _given_vectors(run: Graph, pairs) -> list[torch.Tensor]:
    # the drawn grad_output itself where it has the output's dtype (no rebuild from float64 coordinates):
    # the main backward already used it, so a backward that modified it in place makes the passes differ
    drawn = run.drawn_vectors
    return [
        drawn[k] if k in drawn and drawn[k].dtype == o.dtype else rows_from_coords(run.v[k].unsqueeze(0), o)[0]
        for o, k in pairs
    ]


def watched_reentrant(run: Graph) -> tuple[CheckResult, bool]:
    """``reentrant`` as ``structural_checks`` makes it, its backwards watched (``graph.PythonInBackward``):
    the result and whether they were seen to run no Python code (no custom Function's backward, no hook;
    False where nothing could watch: another profile function installed, or a backward off this thread)."""
    pairs = [(run.outs[k], k) for k in run.out_idx if run.outs[k].requires_grad]
    if not pairs:
        return CheckResult("reentrant", "skipped", "no output requires grad"), False
    if run.custom_functions:  # a custom Function's backward: Python, unwatched
        return _reentrant(run, pairs, _given_vectors(run, pairs)), False
    on_cpu = all(o.device.type == "cpu" for o, _ in pairs)
    with PythonInBackward() as probe:
        result = _reentrant(run, pairs, _given_vectors(run, pairs), lambda: not (probe.watching and on_cpu) or probe.ran)
    return result, probe.watching and not probe.ran and on_cpu


def zero_grad_check(run: Graph, zeros: list | None = None) -> CheckResult:
    """``zero_grad_output`` alone (``reentrant`` ran elsewhere: ``one_vector``); ``zeros``: the gradients of
    a zero grad_output per input where already made (a batched backward's)."""
    pairs = [(run.outs[k], k) for k in run.out_idx if run.outs[k].requires_grad]
    return _zero_grad_output(run, pairs, [o.detach() for o, _ in pairs], zeros)


def _reentrant(run: Graph, pairs, vectors, python_may_run: Callable[[], bool] = lambda: True) -> CheckResult:
    """Two passes over one graph agree, and grad_output is left as it was. With one output, the main
    check's own backward (same v, same graph) is the first pass: one backward saved on large inputs.

    ``python_may_run``: asked after both passes, whether Python code may have run in them. Where none did
    (torch's built-in backwards on the CPU, watched), a later pass that differs from the checked Jacobian's
    rows differs by the order of its sums only (a batched backward reduces otherwise than a plain one), so
    that comparison is not made: it looks for a backward that changes from its second call on, which needs
    Python code, and its allowance cannot see terms that cancel (``d/dy sum(x·y) = sum(x)`` at a zero-sum x)."""
    outs = [o for o, _ in pairs]
    leaves = [run.leaves[i] for i in run.wrt]
    nondet_tol = run.nondet_tol
    problems = []
    state = run.directional
    if state is not None and len(pairs) == 1:
        k = pairs[0][1]
        raw = state.raw_grads
        first = [torch.zeros_like(leaf) if raw[(i, k)] is None else raw[(i, k)] for i, leaf in zip(run.wrt, leaves)]
    else:
        given = [v.clone() for v in vectors]
        try:
            first = _grads(outs, leaves, given)
        except Exception as exc:  # noqa: BLE001
            return CheckResult("reentrant", "error", f"backward raised {describe_exception(exc)}")
    # the second pass gets a copy of each grad_output to compare with afterwards; a large one goes itself,
    # watched by its version counter (which every in-place op bumps) and its sum (for writes through .data)
    given = [v if v.numel() > LARGE_GRAD_OUTPUT else v.clone() for v in vectors]
    watched = [(v._version, v.sum()) if g is v else None for v, g in zip(vectors, given)]
    try:
        second = _grads(outs, leaves, given)
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"a second backward over the same graph raised {describe_exception(exc)} "
            "(did the first backward modify a saved tensor in place?)"
        )
        second = None
    mutated = [
        k
        for (o, k), v, g, w in zip(pairs, vectors, given, watched)
        if (not torch.equal(v, g) if w is None else (v._version != w[0] or not _same_sum(v.sum(), w[1])))
    ]
    if mutated:
        problems.insert(
            0, "backward modified grad_output in place (output " + ", ".join(str(k) for k in mutated) + ")"
        )
    if state is None and run.full is not None and python_may_run():
        moved = _against_first_pass(run, run.full, pairs, vectors, first, nondet_tol)
        if moved:
            problems.append(moved)
    if second is not None:
        problems.extend(_passes_differ(run, first, second, nondet_tol))
    detail = "two passes agree" + (f" within nondet_tol={nondet_tol:g}" if nondet_tol else " exactly")
    return CheckResult("reentrant", "failed" if problems else "passed", "; ".join(problems) if problems else detail)


def _passes_differ(run: Graph, first, second, nondet_tol: float) -> list[str]:
    problems = []
    for i, a, b in zip(run.wrt, first, second):
        if bitwise_equal(a, b) or torch.equal(a, b):  # the usual case: the same bits (or values)
            continue
        a, b = _wide(a), _wide(b)
        # NaN in the same places on both passes agrees; NaN on one pass only is the largest difference
        same_nans = torch.equal(torch.isnan(a), torch.isnan(b))
        diff = (a - b).abs().nan_to_num(nan=0.0 if same_nans else float("inf"))
        worst = float(diff.max()) if diff.numel() else 0.0
        if worst > nondet_tol:
            j = int(diff.reshape(-1).argmax())
            index, _ = coord_index(j, a.shape, False)
            problems.append(
                f"two backward passes over the same graph differ for {run.names[i]}: at "
                f"{run.names[i]}{format_index(index)} {a.reshape(-1)[j].item():.6g} then "
                f"{b.reshape(-1)[j].item():.6g} (|diff| {worst:.1e} > nondet_tol={nondet_tol:g}); "
                "a nondeterministic backward needs nondet_tol, a backward that modifies saved tensors in "
                "place is a bug"
            )
    return problems


def _zero_grad_output(run: Graph, pairs, vectors, given: list | None = None) -> CheckResult:
    """A zero grad_output gives a zero gradient (one more backward: on large inputs, full mode only;
    ``given``: its gradients per input where already made)."""
    nondet_tol = run.nondet_tol
    if run.directional is not None and run.n_in > LARGE_INPUT:
        return CheckResult(
            "zero_grad_output", "skipped",
            f"directional check of {run.n_in} coordinates: one backward saved; run mode='full' on a smaller input",
        )
    folded = run.zero_grad_rows  # full mode: a zero row went with the Jacobian's rows
    if folded is not None and all((i, k) in folded for i in run.wrt for _, k in pairs):
        parts = [folded[(i, k)] for i in run.wrt for _, k in pairs]
        if all(t.device.type == "cpu" and not t.is_neg() and t.numel() <= NUMPY_ELEMENTS for t in parts):  # numpy: small
            nonzero = bool((np.abs(np.concatenate([t.numpy() for t in parts])) > nondet_tol).any())
        else:
            nonzero = bool((torch.cat(parts).abs() > nondet_tol).any())
        if not nonzero:  # the usual case: one test over everything
            return CheckResult("zero_grad_output", "passed", _FOLDED)
        # per input, the largest |gradient| of a zero grad_output over the outputs, element by element
        zeros = []
        for i in run.wrt:
            g = torch.stack([folded[(i, k)] for _, k in pairs]).abs().nan_to_num(0.0).amax(dim=0)
            zeros.append(g.view(-1, 2).amax(dim=1) if run.inputs[i].is_complex() else g)
    elif given is not None:
        zeros = given
    else:
        try:
            zeros = _grads([o for o, _ in pairs], [run.leaves[i] for i in run.wrt], [torch.zeros_like(v) for v in vectors])
        except Exception as exc:  # noqa: BLE001
            return CheckResult(
                "zero_grad_output", "error", f"backward of a zero grad_output raised {describe_exception(exc)}"
            )
    nonzero = [(i, g) for i, g in zip(run.wrt, zeros) if bool((g.abs() > nondet_tol).any())]
    if nonzero:
        i, g = nonzero[0]
        return CheckResult(
            "zero_grad_output",
            "failed",
            f"a zero grad_output gave a nonzero gradient for {run.names[i]} "
            f"({int((g.abs() > nondet_tol).sum())} nonzero element(s), largest "
            f"{float(g.abs().nan_to_num(float('inf')).max()):.3g})",
        )
    return CheckResult("zero_grad_output", "passed", "" if folded is None else _FOLDED)
