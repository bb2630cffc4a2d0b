"""Re-entrancy and linearity in ``grad_output`` from two backwards of one vector, where the full check holds the
Jacobian's rows of every output: the passing path of ``structural`` and ``linearity`` at a third of their
backwards.

Backwards of ``c = 3·v1 - 2·v2`` (``linearity``'s vectors: entries of size 8 to 18 with random signs) and
of ``-c`` over the graph the check built, after the one that gave the checked Jacobian ``J``:

- ``b(-c) = -b(c)`` exactly (within ``nondet_tol``): negation is exact and rounds symmetrically, so a
  linear backward that does not change between calls agrees bit for bit, while ``abs`` or a square of
  ``grad_output``, a saved tensor modified in place or a counter moves it; both leave their
  ``grad_output`` untouched (``reentrant``);
- the first of them equals ``Jᵀc`` within the roundings ``linearity`` allows its three backwards (a
  backward that clamps, takes ``abs``/``sign``/powers of or normalises ``grad_output`` gives the right rows
  for one-hot vectors and a ``b(c)`` far from ``Jᵀc``; one that changes from its second call on differs
  from the rows of its first).

Where all of that holds, both checks pass as their own passes would have them pass. Anything else (a
difference, a raise, complex values, projected rows) returns ``None``, and the caller runs ``structural``
and ``linearity`` in full, which decide and word the failure.
"""

from __future__ import annotations

import numpy as np
import torch

from gradcheck_kit._engine import limits
from gradcheck_kit._engine.analytic import batched_grad, plain_grad
from gradcheck_kit._engine.graph import python_function_nodes
from gradcheck_kit._engine.limits import BACKWARD_BATCH_ELEMENTS, STRUCTURAL_BATCH_ELEMENTS
from gradcheck_kit._engine.linearity import (
    BLOCK, COEFFICIENTS, TF32_EPS, ULPS, _tables, _vectors, draw, subnormal_spacing,
)
from gradcheck_kit._engine.tolerances import eps
from gradcheck_kit.report import CheckResult

__all__ = ["quick_checks", "batched_passes", "signed_vectors"]

#: roundings of the largest size over the inputs allowed on each element
TOP_EPS = 4.0
LINEARITY_DETAIL = "backward(c) = Jᵀ·c (the checked Jacobian's rows) and backward(-c) = -backward(c), c = 3·v1 - 2·v2"


def quick_checks(graph, seed: int, signed: dict | None = None) -> tuple[CheckResult, CheckResult] | None:
    """``(reentrant, linearity)`` both passed, or ``None`` where the full checks must decide. ``graph``:
    the ``structural.Graph`` of a full check; ``signed``: per (input, output) the columns ``b(c)``, ``b(-c)``
    that went with the Jacobian's rows (``signed_vectors``), tried first."""
    state = graph.full
    if state is None or graph.directional is not None or not state.analytic or not state.rows:
        return None
    pairs = [(graph.outs[k], k) for k in graph.out_idx if graph.outs[k].requires_grad]
    if not pairs or any(state.rows.get(k) != "jacobian" for _, k in pairs):
        return None
    if any((i, k) not in state.analytic for i in graph.wrt for _, k in pairs):
        return None
    leaves = [graph.leaves[i] for i in graph.wrt]
    outs = [o for o, _ in pairs]
    if any(not t.is_floating_point() for t in (*outs, *leaves)):
        return None
    vectors = _combined_vectors(outs, seed)
    if signed is not None and _signed_agree(graph, state, pairs, vectors, leaves, signed):
        return _passed(graph.nondet_tol, "b(c) and b(-c) batched with the Jacobian's rows")
    try:
        given = [c.clone() for c in vectors]
        first = _grads(outs, leaves, given)
        negated = [-c for c in vectors]
        second = _grads(outs, leaves, negated)
    except Exception:  # noqa: BLE001 - the full checks report it
        return None
    try:
        if not _agree(graph, state, pairs, vectors, (given, negated), (first, second)):
            return None
    except Exception:  # noqa: BLE001 - anything unusual (an immutable zero gradient...): the full checks decide
        return None
    return _passed(graph.nondet_tol, "two passes (of c and -c)")


def _passed(tol: float, passes: str) -> tuple[CheckResult, CheckResult]:
    detail = f"{passes} agree" + (f" within nondet_tol={tol:g}" if tol else " exactly")
    return CheckResult("reentrant", "passed", detail), CheckResult("linearity", "passed", LINEARITY_DETAIL)


def signed_vectors(run, rows: dict, leaves: list, outs, n_rows: int) -> dict[int, torch.Tensor] | None:
    """``{k: [c; -c]}`` (``(2, n_out_coords)`` float64) for the one output ``k`` of a full check, to go with its
    Jacobian's rows through their one batched backward, where that is how the rows come (a CPU graph of real
    floating tensors without custom Functions, Jacobian rows, one batch, not through functorch):
    ``quick_checks`` then needs no backwards of its own. ``None`` elsewhere."""
    graded = [outs[k] for k in run.out_idx]
    if len(graded) != 1 or rows[run.out_idx[0]] != "jacobian" or limits.TUNING.functorch_rows <= n_rows:
        return None  # (several outputs: b(c) sums over them, which ``_signed_agree`` does not take)
    if any(not o.requires_grad for o in graded) or not leaves:
        return None
    if any(not t.is_floating_point() or t.device.type != "cpu" for t in (*graded, *leaves)):
        return None
    cols = sum(leaf.numel() for leaf in leaves)
    if max(o.numel() + 3 for o in graded) * cols > BACKWARD_BATCH_ELEMENTS or (run.graph.names if outs is run.outs else python_function_nodes(graded)):
        return None
    vectors = _combined_vectors(graded, run.seed)
    return {k: torch.stack([c.reshape(-1), -c.reshape(-1)]).to(torch.float64) for k, c in zip(run.out_idx, vectors)}


def _signed_agree(graph, state, pairs, vectors, leaves, signed) -> bool:
    """``_agree`` of the columns ``b(c)``, ``b(-c)`` that went with the Jacobian's rows of one output: no
    ``grad_output`` reached Python code (none runs in that backward), and the comparisons run on the host
    (the columns hold the inputs' dtype's values in float64, exactly). ``dtypes`` of ``_matches_rows``: the
    inputs'."""
    if len(pairs) != 1 or any((i, pairs[0][1]) not in signed for i in graph.wrt):
        return False
    k, tol = pairs[0][1], graph.nondet_tol
    first = []
    try:
        for i in graph.wrt:
            both = signed[(i, k)].numpy()  # (n_i, 2)
            a, b = both[:, 0], both[:, 1]
            # negation is exact and rounds symmetrically: a linear backward gives -b(c) bit for bit
            if not (np.array_equal(a, -b) or (tol and bool((np.abs(a + b) <= tol).all()))):
                return False
            first.append(a)
        return _matches_rows(graph, state, pairs, vectors, first, [leaf.dtype for leaf in leaves])
    except Exception:  # noqa: BLE001 - anything unusual: the two passes of their own
        return False


def _agree(graph, state, pairs, vectors, sent, passes) -> bool:
    """Both ``grad_output``s as sent, ``b(-c) = -b(c)`` bit for bit (within ``nondet_tol``), and ``b(c)``
    against the checked rows (``_matches_rows``)."""
    given, negated = sent
    first, second = passes
    if not all(torch.equal(c, g) and torch.equal(c, -n) for c, g, n in zip(vectors, given, negated)):
        return False  # grad_output modified in place
    tol = graph.nondet_tol
    for a, b in zip(first, second):
        # negation is exact and rounds symmetrically: a linear backward gives -b(c) bit for bit
        if not (torch.equal(a, -b) or (tol and bool(((a + b).abs() <= tol).all()))):
            return False
    return _matches_rows(graph, state, pairs, vectors, first)


def _combined_vectors(outs: list, seed: int) -> list[torch.Tensor]:
    """``c`` of every output, drawn as ``linearity`` draws its vectors; kept per seed and outputs' shapes,
    dtypes and devices where they come from its small-output tables (never modified: each backward gets a
    copy, and none is handed to fn)."""
    key = (seed, tuple((tuple(o.shape), o.dtype, o.device) for o in outs))
    small = all(o.numel() <= BLOCK for o in outs)
    if small and key in _DRAWN:
        return _DRAWN[key]
    gen = torch.Generator().manual_seed((seed * 1000003 + 7) % (2**63))  # linearity's vectors
    vectors = [_combined(o, gen) for o in outs]
    if small:
        if len(_DRAWN) >= _DRAWN_KEPT:
            _DRAWN.clear()
        _DRAWN[key] = vectors
    return vectors


#: ``_combined_vectors`` kept (at most ``_DRAWN_KEPT`` entries)
_DRAWN: dict = {}
_DRAWN_KEPT = 64


def _combined(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``linearity``'s ``c`` for ``out`` (the same draw as its ``_vectors``) without ``v1`` and ``v2``."""
    n = out.numel()
    if n > BLOCK:
        return _vectors(out, gen)[2]
    code = torch.randint(0, 50, (n,), generator=gen)
    return _tables()[2][code].reshape(out.shape).to(device=out.device, dtype=out.dtype)


def _grads(outs, leaves, grad_outputs) -> list[torch.Tensor]:
    grads = plain_grad(outs, leaves, grad_outputs)
    return [torch.zeros_like(leaf) if g is None else g.detach() for g, leaf in zip(grads, leaves)]


def _matches_rows(graph, state, pairs, vectors, got, dtypes: list | None = None) -> bool:
    """Whether each backward of ``c`` equals ``Jᵀc`` of the checked rows within ``linearity``'s allowance:
    ``ULPS`` roundings of ``|b(c)| + 2·|J|ᵀ|c|`` (its sizes ``|b(c)| + 3|b(v1)| + 2|b(v2)|`` plus the
    cancellation of its terms, where ``|c| = 3|v1| + 2|v2|``), and ``TOP_EPS`` of the largest such size over
    the inputs (``structural``'s first-pass comparison allows as many). The rounding unit is the dtypes'
    (float32's at least, TF32's where CUDA may use it): a backward that rounds coarser inside goes to the
    full checks, which look for that. Numpy: the Jacobian is small (``limits.JACOBIAN_ENTRIES``)."""
    dtypes_of_got = [t.dtype for t in got] if dtypes is None else dtypes
    e = max(eps(d) for d in (*dtypes_of_got, *(o.dtype for o, _ in pairs)))
    e = max(e, eps(torch.float32))
    cuda = dtypes is None and any(t.is_cuda for t in got)  # (``dtypes`` given: ``got`` on the host already)
    if cuda and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
        e = max(e, TF32_EPS)
    floor = (abs(COEFFICIENTS[0]) + abs(COEFFICIENTS[1]) + 1.0) * (graph.nondet_tol + ULPS * subnormal_spacing(e))
    ws = [(w, np.abs(w)) for w in map(_host64, vectors)]
    checked = []
    for i, g in zip(graph.wrt, got):
        expected = size = 0.0
        for (_, k), (w, w_abs) in zip(pairs, ws):
            a = state.analytic[(i, k)].numpy()
            expected = expected + a @ w
            size = size + np.abs(a) @ w_abs
        b = g if dtypes is not None else _host64(g)
        b_abs = np.abs(b)
        sizes = b_abs + 2 * size  # NaN or inf anywhere (a non-finite term) fails the comparison below
        if not np.isfinite(sizes).all() or not np.isfinite(expected).all():
            return False
        checked.append((b, expected, sizes))
    top = max((float(sizes.max()) for _, _, sizes in checked if sizes.size), default=0.0)
    for b, expected, sizes in checked:
        if not (np.abs(b - expected) <= floor + ULPS * e * sizes + TOP_EPS * e * top).all():
            return False
    return True


def _host64(t: torch.Tensor) -> np.ndarray:
    """``t`` flat as float64 on the host, in numpy."""
    flat = t.detach().reshape(-1).cpu()
    if flat._is_zerotensor():  # autograd's immutable zero (the second derivative of abs)
        return np.zeros(flat.numel())
    return (flat if flat.dtype == torch.float64 else flat.double()).numpy()


def batched_passes(graph, seed: int) -> tuple[list, list, list, list] | None:
    """``linearity``'s three backwards (of its ``v1``, ``v2``, ``c`` for ``seed``) and ``zero_grad_output``'s,
    per input, through one batched backward (``is_grads_batched``) over the graph the check built: a
    backward of torch's own operations batches four vectors for about the cost of two of its passes. Only
    where that backward ran no Python code (``structural.watched_reentrant``: a custom Function's backward
    or a hook could crash the process under batching, ``graph``), on inputs small enough that a pass's
    fixed cost outweighs its arithmetic (``STRUCTURAL_BATCH_ELEMENTS``); ``None`` where torch cannot batch it,
    and the checks then make their own backwards. Each vector's rows are computed as their own backward
    would (the batch dimension is torch's, never mixed into another vector's sums), so a backward that
    clamps, takes ``abs``/``sign``/powers of or normalises ``grad_output`` differs from the linear
    combination here as there; one that changes between calls is ``reentrant``'s to find."""
    pairs = [(graph.outs[k], k) for k in graph.out_idx if graph.outs[k].requires_grad]
    leaves = [graph.leaves[i] for i in graph.wrt]
    outs = [o for o, _ in pairs]
    if not outs or not leaves or 4 * sum(leaf.numel() for leaf in leaves) > STRUCTURAL_BATCH_ELEMENTS:
        return None
    v1, v2, c = draw(outs, seed)
    stacked = [torch.stack([a, b, w, torch.zeros_like(a)]) for a, b, w in zip(v1, v2, c)]
    try:
        grads = batched_grad(outs, leaves, stacked)
        per_vector = [
            [torch.zeros_like(leaf) if g is None else g[j].detach().clone() for g, leaf in zip(grads, leaves)]
            for j in range(4)
        ]
    except Exception:  # noqa: BLE001 - torch could not batch this backward: the checks make their own
        return None
    return per_vector[0], per_vector[1], per_vector[2], per_vector[3]
