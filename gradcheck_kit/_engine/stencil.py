"""Stencil evaluations of full mode: f at x + m·h_j·e_j per coordinate (batched through vmap, several small
inputs through one), the steps and multipliers, and f along single coordinates or masks at chosen offsets."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from gradcheck_kit._engine import autograd_rows, limits, workspace
from gradcheck_kit._engine.evaluate import _VmapMismatch as VmapMismatch, exception_text
from gradcheck_kit._engine.reasons import vmap_reason
from gradcheck_kit._engine.finite_diff import estimate_with_sigma, Estimates, noise_sigma
from gradcheck_kit._engine.limits import EVALUATION_BATCH_ELEMENTS
from gradcheck_kit._inputs import coords, coords64, from_coords, n_coords


def stencil_values(run, i: int, rows: dict[int, str], mults: Sequence[float]) -> dict[int, torch.Tensor]:
    """``f`` at ``x + m·h_j·e_j`` for every coordinate ``j`` of input ``i`` and each multiplier ``m``:
    per output ``(len(mults), n_i, r_k)`` float64 (projected rows when ``rows[k]`` says so). The points
    are written into memory kept between batches (``workspace``)."""
    x = run.evaluator.base_args[i]
    complex_ = x.is_complex()
    base = coords(x)  # the input's (real) dtype
    n_i = base.numel()
    step = step_of(run, i)
    mult = multipliers(run, mults)
    npts = len(mults)
    cols_per_batch = max(1, EVALUATION_BATCH_ELEMENTS // ((n_i + run.n_out) * npts))
    values = {}
    if cols_per_batch < n_i:
        values = {k: torch.empty(npts, n_i, autograd_rows.row_count(run, k, rows[k]), dtype=torch.float64) for k in run.out_idx}
    probed = run.probed_batch.pop(i, None)  # (points, f there) of the vmap probe: used where the same points
    for start in range(0, n_i, cols_per_batch):
        stop = min(n_i, start + cols_per_batch)
        b = stop - start
        with workspace.points(npts * b * n_i, base.dtype, base.device) as lease:
            points = lease.array.view(npts, b, n_i).copy_(base)
            move_diagonal(points, start, mult * step[start:stop])
            if probed is not None and probed[0].shape == points.shape and torch.equal(probed[0], points):
                outs = probed[1]
            else:
                outs = run.evaluator.batched(i, points.view(npts * b, n_i), x.shape, complex_)
                lease.shared_with(outs)
        for pos, k in enumerate(run.out_idx):
            proj = autograd_rows.project(run, k, rows[k], outs[pos])  # (npts*b, r)
            if b == n_i:
                values[k] = proj.reshape(npts, b, -1)
            else:
                values[k][:, start : start + b] = proj.reshape(npts, b, -1)
    return values


def screen_stencil(run, inputs: Sequence[int], rows: dict[int, str]) -> dict[int, dict[int, torch.Tensor]]:
    """``f`` at ±h for every coordinate of ``inputs``: vectors and matrices together through one vmap
    where they are small (``limits.TUNING.together_elements``), the others (and all, where vmap cannot run fn so) one
    input at a time.

    Why only vectors and matrices: torch batches ``matmul``, ``linear`` and elementwise ops over batched
    matrices as cheaply as over one batched input, so one call saves the per-call cost of vmap, while a
    batched convolution weight beside a batched image turns into a grouped convolution, which is slower."""
    mults = run.stencil.multipliers[:2]
    together = [i for i in inputs if run.inputs[i].dim() <= 2]
    n_together = sum(n_coords(run.inputs[i]) for i in together)
    known = None
    if len(together) >= 2 and len(mults) * n_together * n_together <= limits.TUNING.together_elements:
        known = stencil_values_together(run, together, rows, mults)
    known = known or {}
    for i in inputs:
        if i not in known:
            known[i] = stencil_values(run, i, rows, mults)
    return known


def stencil_values_together(
    run, inputs: Sequence[int], rows: dict[int, str], mults: Sequence[float]
) -> dict[int, dict[int, torch.Tensor]] | None:
    """``stencil_values`` of several inputs through one vmap over all of them (each point moves one
    coordinate of one input; the others stay at x). ``None`` where vmap cannot run fn so."""
    xs = [run.evaluator.base_args[i] for i in inputs]
    bases = [coords(x) for x in xs]
    if any(b.dtype != bases[0].dtype or b.device != bases[0].device for b in bases):
        return None  # one dtype and device (``joint_screen_prepare``): input by input otherwise
    limits.TUNING.record("together", list(inputs))
    npts = len(mults)
    sizes = [b.numel() for b in bases]
    total = npts * sum(sizes)
    probed = run.probed_batch.pop(tuple(inputs), None)  # (batches, f there) of the vmap probe
    with workspace.points(total * sum(sizes), bases[0].dtype, bases[0].device) as lease:
        batches = together_points(run, inputs, mults, lease.array)
        if probed is not None and all(p.shape == b.shape and torch.equal(p, b) for p, b in zip(probed[0], batches)):
            outs = probed[1]
        else:
            outs = run.evaluator.batched_together(inputs, batches)
            if outs is not None:
                lease.shared_with(outs)
    if outs is None:
        return None
    values, start = {}, 0
    for i, n in zip(inputs, sizes):
        values[i] = {
            k: autograd_rows.project(run, k, rows[k], outs[pos][start : start + npts * n]).reshape(npts, n, -1)
            for pos, k in enumerate(run.out_idx)
        }
        start += npts * n
    return values


def together_points(run, inputs: Sequence[int], mults: Sequence[float], array: torch.Tensor) -> list[torch.Tensor]:
    """The points of ``stencil_values_together`` written into ``array`` (flat, at least ``points ·
    (sum n_i)²`` values): per input its batch ``(points · sum n_i, *shape)``, each point moving one
    coordinate of one input (the others at x)."""
    xs = [run.evaluator.base_args[i] for i in inputs]
    bases = [coords(x) for x in xs]
    npts = len(mults)
    sizes = [b.numel() for b in bases]
    total = npts * sum(sizes)
    batches, offset = [], 0  # offset: of input i's (total, n) points in the array
    for x, base, n in zip(xs, bases, sizes):
        points = array[offset : offset + total * n].view(total, n).copy_(base)
        batches.append(from_coords(points, x.shape, x.is_complex()))
        offset += total * n
    # every moved coordinate at once: x_j + m·h_j summed in float64, rounded once to the points' dtype
    shift = (multipliers(run, mults) * torch.cat([step_of(run, i) for i in inputs])).to(array.device)
    moved = (torch.cat(bases).to(array.device, torch.float64) + shift).to(array.dtype)
    where = moved_positions(tuple(sizes), npts).to(array.device)
    array.view(-1)[:offset].index_put_((where.view(-1),), moved.view(-1))
    return batches


@lru_cache(maxsize=64)
def moved_positions(sizes: tuple, npts: int) -> torch.Tensor:
    """Where ``together_points`` moves coordinates, as flat positions in its array: ``(npts, sum n_i)``,
    entry ``(m, offset_i + c)`` the point that moves coordinate ``c`` of input ``i`` by multiplier ``m``.
    Input ``i``'s points sit at ``array_offset_i`` as ``(total, n_i)`` rows; its own rows start at row
    ``start_i`` (the points of the inputs before it), ``m·n_i + c`` further on."""
    total = npts * sum(sizes)
    parts, start, array_offset = [], 0, 0
    m = torch.arange(npts).unsqueeze(1)
    for n in sizes:
        c = torch.arange(n).unsqueeze(0)
        parts.append(array_offset + (start + m * n + c) * n + c)
        start, array_offset = start + npts * n, array_offset + total * n
    return torch.cat(parts, dim=1)


def columns_at(run, cols: dict[int, torch.Tensor], mults: Sequence[float]) -> dict[int, dict[int, torch.Tensor]]:
    """``f`` at ``x + m·h_j·e_j`` for the coordinates ``cols[i]`` of each input ``i`` and each multiplier
    ``m``: per input, per output ``(len(mults), b_i, r_k)``. Several inputs go through one vmap where it can
    run fn so (the points of one input keep the others at x), else input by input."""
    mult = multipliers(run, mults)
    inputs = [i for i, c in cols.items() if c.numel()]
    xs = [run.evaluator.base_args[i] for i in inputs]
    sizes = [len(mults) * cols[i].numel() for i in inputs]
    together = len(inputs) > 1
    offsets = [sum(sizes[:p]) if together else 0 for p in range(len(inputs))]
    batches = []
    for p, (i, x) in enumerate(zip(inputs, xs)):
        base = coords(x).cpu()
        points = torch.empty((sum(sizes) if together else sizes[p], base.numel()), dtype=base.dtype).copy_(base)
        mine = points[offsets[p] : offsets[p] + sizes[p]].view(len(mults), cols[i].numel(), -1)
        moved = base[cols[i]].to(torch.float64) + mult * step_of(run, i)[cols[i]]  # (points, b), rounded once
        mine[:, torch.arange(cols[i].numel()), cols[i]] = moved.to(base.dtype)
        batches.append(points)
    outs = None
    if together:
        shaped = [from_coords(b, x.shape, x.is_complex()).to(x.device) for b, x in zip(batches, xs)]
        outs = run.evaluator.batched_together(inputs, shaped)
    values = {i: {} for i in cols}
    for p, (i, x) in enumerate(zip(inputs, xs)):
        start, stop = offsets[p], offsets[p] + sizes[p]
        if outs is None:
            mine = run.evaluator.batched(i, batches[p][start:stop], x.shape, x.is_complex())
        else:
            mine = [o[start:stop] for o in outs]
        for pos, k in enumerate(run.out_idx):
            projected = autograd_rows.project(run, k, run.full.rows[k], mine[pos])
            values[i][k] = projected.reshape(len(mults), cols[i].numel(), -1)
    return values


def multipliers(run, mults: Sequence[float]) -> torch.Tensor:
    """The stencil multipliers as a ``(points, 1)`` float64 tensor (cached)."""
    key = tuple(mults)
    if key not in run.mult_cache:
        run.mult_cache[key] = torch.tensor(key, dtype=torch.float64).unsqueeze(1)
    return run.mult_cache[key]


def step_of(run, i: int) -> torch.Tensor:
    if i not in run.steps:
        prepare_steps(run, [i])
    return run.steps[i]


def prepare_steps(run, inputs: Sequence[int]) -> None:
    """The finite-difference steps of several inputs in one pass (per coordinate, float64)."""
    todo = [i for i in inputs if i not in run.steps]
    if not todo:
        return
    # numpy: full mode's inputs are small, where a numpy call costs a fraction of a torch call
    parts = [coords64(run.evaluator.base_args[i]).numpy() for i in todo]
    x = parts[0] if len(parts) == 1 else np.concatenate(parts)
    x = np.where(np.isfinite(x), x, 0.0)  # a non-finite element (not used by fn) takes the unit step
    # scale_of: 2^round(log2(max(|x|, 1)))
    steps = np.exp2(np.round(np.log2(np.maximum(np.abs(x), 1.0)))) * run.stencil.h0
    if len(todo) == 1:
        run.steps[todo[0]] = torch.from_numpy(steps)
        return
    for i, s in zip(todo, torch.from_numpy(steps).split([p.size for p in parts])):
        run.steps[i] = s


def along(run, i: int, k: int, masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``f`` at ``x + offsets[m, d] * masks[d]`` (input ``i``) in output ``k``'s rows: ``(points, d, r)``."""
    x = run.evaluator.base_args[i]
    base = coords(x).cpu()
    points = (base.to(torch.float64) + offsets.unsqueeze(2) * masks.unsqueeze(0)).to(base.dtype)
    outs = run.evaluator.batched(i, points.view(-1, base.numel()), x.shape, x.is_complex())
    kind = run.full.rows[k]
    return autograd_rows.project(run, k, kind, outs[run.out_idx.index(k)]).reshape(offsets.shape[0], masks.shape[0], -1)


def coordinates(run, i: int, cols: torch.Tensor) -> torch.Tensor:
    """The values of coordinates ``cols`` of input ``i`` at the base point, float64 on the host."""
    return coords(run.evaluator.base_args[i]).cpu()[cols].to(torch.float64)


def stencil_along(run, i: int, k: int, cols: torch.Tensor, at: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``f`` with coordinate ``cols[c]`` of input ``i`` at ``at[c] + offsets[m, c]`` (the others at x), in
    output ``k``'s rows: ``(points, b, r)``. The points are built on the host; ``evaluator.batched`` moves
    them to the input's device."""
    x = run.evaluator.base_args[i]
    base = coords(x).cpu()
    b = cols.numel()
    points = base.expand(offsets.shape[0], b, base.numel()).clone()
    points[:, torch.arange(b), cols] = (at + offsets).to(points.dtype)
    # columns already evaluated at the same points (the tie check's h/8 is refine's first level)
    keys = [(id(x), i, int(cols[c]), points[:, c, cols[c]].numpy().tobytes()) for c in range(b)]
    todo = [c for c in range(b) if keys[c] not in run.along_cache]
    if todo:
        fresh = run.evaluator.batched(i, points[:, todo].reshape(-1, base.numel()), x.shape, x.is_complex())
        for n, c in enumerate(todo):
            run.along_cache[keys[c]] = [o.reshape(offsets.shape[0], len(todo), -1)[:, n] for o in fresh]
    cached = [run.along_cache[key] for key in keys]
    outs = [torch.stack([per[o] for per in cached], 1).flatten(0, 1) for o in range(len(cached[0]))]
    kind = run.full.rows[k]
    return autograd_rows.project(run, k, kind, outs[run.out_idx.index(k)]).reshape(offsets.shape[0], b, -1)


def entry_estimates(run, k, values, cols, step, j_sel, r_sel, at, unit_floor) -> Estimates:
    """Estimates for the entries ``(j_sel, r_sel)`` from stencil ``values`` ``(points + 1, b, r)`` along
    ``cols`` (steps ``step``, coordinates' values ``at``), with their noise."""
    where = torch.searchsorted(cols, j_sel)  # each entry's column in this batch
    vals = values[:, where, r_sel]
    fmag = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[1]
    sig = noise_sigma(vals, fmag[r_sel], run.stencil)
    return estimate_with_sigma(vals, step[where], sig, run.stencil, x_abs=at[where].abs(), unit_floor=unit_floor)


def runs_under_vmap(run, i: int, screened: Sequence[int] = ()) -> bool:
    """Whether full mode's batched evaluations of input ``i`` would run through vmap: one batch of one
    point (x itself) through vmap tells, as the first batch of a full check would (the evaluator remembers;
    no point-by-point call follows where it fails). ``screened``: the inputs whose ±h screen full mode
    would evaluate in one batch (``i`` alone, or several small ones together), so the batch is that
    screen's (``probe_screen``), kept for ``stencil_values`` or ``stencil_values_together``."""
    ev = run.evaluator
    if screened and ev.vmap_failed is None and ev.grad_inside is None and not ev.used_vmap:
        if probe_screen(run, list(screened)):
            return True
    if ev.vmap_failed is None and ev.grad_inside is None and not ev.used_vmap:
        x = ev.base_args[i]
        # a copy: x may be the caller's own tensor (a directional check borrows it), and fn may write into its inputs
        batch = from_coords(coords(x).unsqueeze(0).clone(), x.shape, x.is_complex()).to(x.device)
        ev.evaluations += 1
        checked, ev.vmap_checked = ev.vmap_checked, True  # one point cannot show a vmap rule mixing entries:
        try:  # the first batch of the check is compared with a plain call instead
            ev._vmapped([i], [batch], ev._fresh(ev.base_args, keep=(i,)))
            ev.used_vmap = True
        except Exception as exc:  # noqa: BLE001 - any failure of vmap means: the loop
            ev.vmap_failed = vmap_reason(exception_text(exc))
        finally:
            ev.vmap_checked = checked
    return ev.vmap_failed is None and ev.grad_inside is None


def probe_screen(run, inputs: list[int]) -> bool:
    """The ±h screen's batch of ``inputs`` (``stencil_values`` of one input at the first two multipliers in
    one batch, or ``stencil_values_together`` of several) through vmap as the probe of ``runs_under_vmap``:
    where it runs, its values are kept for the screen, which then makes no batch of its own where its
    points are the same (the probe costs nothing more than the check). Whether it ran (also where its first
    entry differed from a plain call: the evaluator then evaluates point by point, as after the screen's
    own batch); False where the batch is not the screen's (more than one batch, a deferred float64 probe,
    fresh copies per call) or vmap raised (the evaluator remembers why)."""
    ev = run.evaluator
    xs = [ev.base_args[i] for i in inputs]
    sizes = [n_coords(x) for x in xs]
    mults = tuple(run.stencil.multipliers[:2])
    total = len(mults) * sum(sizes)
    if run.reference_pending or EVALUATION_BATCH_ELEMENTS // ((sum(sizes) + run.n_out) * len(mults)) < sum(sizes):
        return False
    if len(inputs) > 1 and (ev.fresh_copies or any(x.dtype != xs[0].dtype or x.device != xs[0].device for x in xs)):
        return False
    if len(inputs) == 1:
        points = coords(xs[0]).expand(len(mults), sizes[0], sizes[0]).clone()
        move_diagonal(points, 0, multipliers(run, mults) * step_of(run, inputs[0]))
        batches = [from_coords(points.view(-1, sizes[0]), xs[0].shape, xs[0].is_complex()).to(xs[0].device)]
        kept, key = points, inputs[0]
    else:
        batches = together_points(run, inputs, mults, torch.empty(total * sum(sizes), dtype=coords(xs[0]).dtype))
        kept, key = batches, tuple(inputs)
    try:
        outs = ev._vmapped(inputs, batches, ev._fresh(ev.base_args, keep=tuple(inputs)))
    except VmapMismatch:  # vmap ran; the evaluator evaluates point by point from now on
        ev.evaluations += 1
        return True
    except Exception as exc:  # noqa: BLE001 - any failure of vmap means: the loop
        ev.evaluations += 1
        ev.vmap_failed = vmap_reason(exception_text(exc))
        return False
    ev.evaluations += total
    ev.used_vmap = True
    run.probed_batch[key] = (kept, outs)
    return True


@dataclass
class FullNumerics:
    """Raw stencil values of one (input, output) pair in full mode, ``(points, n_i, r)``, and what the
    estimates need besides: the noise of ``f``, each coordinate's step and |x|, and which entries are flat
    (every stencil value identical: f does not depend on that coordinate)."""

    values: torch.Tensor
    sigma: torch.Tensor
    step: torch.Tensor
    x_abs: torch.Tensor
    flat: torch.Tensor


def move_diagonal(points: torch.Tensor, offset: int, steps: torch.Tensor) -> None:
    """``points``: ``(npts, b, n)`` copies of x; moves coordinate ``offset + c`` of ``points[m, c]`` by
    ``steps[m, c]`` (the sum in float64, rounded once to the points' dtype)."""
    moved = points.diagonal(offset=offset, dim1=1, dim2=2)  # (npts, b)
    moved.copy_(moved.to(torch.float64) + steps.to(moved.device))
