"""Autograd's Jacobian rows and the float64 reference's together: one engine call for both graphs.

A low-precision check with a float64 reference run needs the rows ``e_k·J`` of two graphs, fn at the inputs
and fn at their float64 copies. ``torch.autograd.grad`` takes several outputs with a ``grad_output`` each
and differentiates every graph in one engine call, so the first row of both (the plain backward that
``analytic.vjp_rows`` watches for Python code) and the other rows (batched) cost one call each instead of
two. Used where that machinery applies as it stands (one output, Jacobian rows, a CPU graph with no custom
``autograd.Function``, a batch of rows below ``BACKWARD_BATCH_ELEMENTS``); anything else, or anything
unusual on the way (Python code in the backward, a raise, a malformed gradient), takes the separate calls,
which report it.
"""

from __future__ import annotations

import torch

from gradcheck_kit._engine import autograd_rows, context, limits, one_vector
from gradcheck_kit._engine.analytic import _add_block, batched_grad, rows_from_coords, watched_grad
from gradcheck_kit._engine.graph import python_function_nodes
from gradcheck_kit._engine.limits import BACKWARD_BATCH_ELEMENTS, FUNCTORCH_ELEMENTS

__all__ = ["rows_and_reference"]


def rows_and_reference(run, rows: dict[int, str], zero_rows: dict | None) -> tuple[dict, dict, str, dict | None]:
    """``autograd_rows.analytic_full`` of the check's graph (``zero_rows`` as there), and of the float64
    reference run's where the check makes one (else ``None``; also where that run fails)."""
    run.signed_rows = None  # (set by ``analytic_full`` where they go with the check's rows)
    qualified = run.reference and _qualifies(run, rows)
    ref = _reference_inputs(run) if qualified else None
    if ref is not None:
        paired = _paired(run, rows, zero_rows, ref)
        if paired is not None:
            return paired
    analytic, flowed, path = autograd_rows.analytic_full(run, rows, run.leaves, run.outs, run.analytic_args, zero_rows)
    if run.reference and not qualified:  # (after the check's own rows, as without pairing)
        ref = _reference_inputs(run)
    return analytic, flowed, path, _reference_rows(run, rows, ref)


def _reference_inputs(run):
    """``autograd_rows.reference_leaves`` of the check, or ``None`` where the float64 run fails."""
    try:
        return autograd_rows.reference_leaves(run)
    except context.Failure:
        return None


def _reference_rows(run, rows, ref) -> dict | None:
    if ref is None:
        return None
    ref_args, ref_leaves, ref_outs = ref
    try:
        return autograd_rows.analytic_full(run, rows, ref_leaves, ref_outs, ref_args)[0]
    except context.Failure:
        return None


def _qualifies(run, rows) -> bool:
    """One output with Jacobian rows, a CPU graph without custom Functions, rows not through functorch."""
    if len(run.out_idx) != 1:
        return False
    k = run.out_idx[0]
    out = run.outs[k]
    if rows[k] != "jacobian" or not out.requires_grad or out.device.type != "cpu":
        return False
    n_rows = out.numel() * (2 if out.is_complex() else 1) + 1
    leaves = [run.leaves[i] for i in run.wrt]
    if limits.TUNING.functorch_rows <= n_rows and n_rows * sum(t.numel() for t in leaves) <= FUNCTORCH_ELEMENTS:
        return False  # the rows come through vmap over torch.func.vjp there
    return not python_function_nodes([out])


def _paired(run, rows, zero_rows, ref) -> tuple[dict, dict, str, dict] | None:
    """Both graphs' rows through shared engine calls, or ``None`` where the separate calls must run."""
    _, ref_leaves, ref_outs = ref
    k = run.out_idx[0]
    out, ref_out = run.outs[k], ref_outs[k] if k < len(ref_outs) else None
    if not isinstance(ref_out, torch.Tensor) or not ref_out.requires_grad or ref_out.shape != out.shape:
        return None
    order = list(run.wrt)
    leaves = [run.leaves[i] for i in order]
    twins = [ref_leaves[i] for i in order]
    n_out = out.numel() * (2 if out.is_complex() else 1)
    fold = zero_rows is not None and n_out >= 2
    n_rows = n_out + (1 if fold else 0)
    n_cols = sum(t.numel() * (2 if t.is_complex() else 1) for t in leaves)
    if n_rows < 2 or n_rows * max(n_cols, 1) > BACKWARD_BATCH_ELEMENTS or python_function_nodes([ref_out]):
        return None
    vectors = torch.eye(n_rows, n_out, dtype=torch.float64)  # one-hot rows, the folded zero row last
    signed = one_vector.signed_vectors(run, rows, leaves, run.outs, n_rows) if fold else None
    if signed is not None:  # c and -c after them (the reference graph's two rows unread)
        vectors = torch.cat([vectors, signed[k]])
    ours, theirs = rows_from_coords(vectors, out), rows_from_coords(vectors, ref_out)
    every = leaves + twins
    results: list[list[torch.Tensor]] = [[] for _ in every]
    flowed = [False] * len(every)
    try:
        first, ran = watched_grad([out, ref_out], every, [ours[0], theirs[0]])
        if ran:
            return None
        rest = batched_grad([out, ref_out], every, [ours[1:], theirs[1:]])
        _add_block(results, flowed, [None if g is None else g.unsqueeze(0) for g in first], every, 1)
        _add_block(results, flowed, rest, every, vectors.shape[0] - 1)
    except Exception:  # noqa: BLE001 - the separate calls run and report it
        return None
    analytic, flows, reference = {}, {}, {}
    for pos, i in enumerate(order):
        g, r = torch.cat(results[pos]), torch.cat(results[len(order) + pos])
        if signed is not None:
            run.signed_rows = run.signed_rows or {}
            run.signed_rows[(i, k)] = g[-2:].T
            g, r = g[:-2], r[:-2]
        if fold:
            zero_rows[(i, k)] = g[-1]
            g, r = g[:-1], r[:-1]
        analytic[(i, k)], flows[(i, k)], reference[(i, k)] = g.T, flowed[pos], r.T
    return analytic, flows, "batched", reference
