"""Full mode's judgement of one (input, output) pair and the second opinions on its failed or doubtful entries:
kinks inside the stencil, one-sided stencils, ties, a second noise sample, smaller steps, the approximate tier."""

from __future__ import annotations

import numpy as np

import torch

from gradcheck_kit._engine import allowance, autograd_rows, finite_diff, screen, stencil, tolerances
from gradcheck_kit._engine.budget import second_opinion
from gradcheck_kit._engine import approximate as _approximate
from gradcheck_kit._engine import kinks as _kinks
from gradcheck_kit._engine import ties as _ties
from gradcheck_kit._engine import intermediates
from gradcheck_kit._engine.compare import compare, int8, Verdict
from gradcheck_kit._engine.decisive import decisive, settled_approximate, sides_agree
from gradcheck_kit._engine.finite_diff import estimate_with_sigma, Estimates, host_array, noise_sigma
from gradcheck_kit._engine.limits import (
    NUMPY_ELEMENTS, REFINE_COORDS, REFINE_FACTOR, REFINE_LEVELS, REFINE_PRECISION, RESAMPLE_RATIO, RESAMPLE_SHIFT,
)
from gradcheck_kit._engine.one_sided import one_sided
from gradcheck_kit._inputs import coords
from gradcheck_kit.report import Note, NoteCode


def judge(run, i, k, a, ref, num: "stencil.FullNumerics", extra: float, kap: float):
    """Compare autograd's ``(n_i, r)`` values with the numerics, on the entries that can differ.

    An entry whose stencil values are all identical (f does not depend on that coordinate) and whose
    autograd value is exactly zero passes without arithmetic: most of a Jacobian, for most functions.
    """
    candidates = ~num.flat | (a != 0)
    j_idx, r_idx = candidates.nonzero(as_tuple=True)
    sigma = intermediates.sigma_floor(num.sigma[j_idx, r_idx], num.x_abs[j_idx], run.stencil)
    values = num.values[:, j_idx, r_idx]
    est, allow, a_g, verdict = first_verdict(
        run, i, k, a, ref, values, sigma, num.step[j_idx], num.x_abs[j_idx], (j_idx, r_idx), extra, kap
    )
    if bool(verdict.failed.any()):  # its whole stencil is on the failing path (``budget``)
        run.budget.failed_first(i)
    settle_kinks(run, i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
    if bool(verdict.unchecked.any()):
        settle_one_sided(run, i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
    if not run.budget.decided and bool(verdict.failed.any()):  # one such failure leaves out the second opinions
        run.budget.decided = decisive(run, i, k, a, j_idx, r_idx, est, allow, verdict, kap, num)
    if bool(verdict.failed.any()):  # entries the tier passes whatever the second opinions find: none is made
        approximate_at_once(run, i, k, a, a_g, j_idx, r_idx, est, verdict, kap, num)
    if bool(verdict.failed.any()) and tolerances.eps(run.inputs[i].dtype) <= 1e-15 and not run.budget.decided:
        settle_cancellation(run, i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
    if bool((verdict.failed | verdict.kink).any()):
        settle_ties(run, i, k, a, num, j_idx, r_idx, allow, verdict, kap)
    if bool(verdict.failed.any()):
        resample(run, i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
    if bool(verdict.failed.any()):
        settle_rounding(run, i, k, a_g, j_idx, r_idx, values, sigma, num.x_abs[j_idx], allow, verdict, kap, est)
    if bool(verdict.failed.any()):
        refine(run, i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
    if bool(verdict.failed.any()) and approximate_tier(run):
        jacobian = run.full.rows[k] == "jacobian"
        scale = _approximate.entry_scale(a, verdict.numerical, j_idx, r_idx, jacobian)
        rho = _approximate.accuracy(run.inputs[i].dtype)
        _approximate.apply(verdict, a_g, scale, rho, run.options["strict"])
    return verdict, j_idx, r_idx


def approximate_at_once(run, i, k, a, a_g, j_idx, r_idx, est: Estimates, verdict: Verdict, kap: float, num) -> None:
    """The failed entries that pass as approximate whatever the second opinions find
    (``decisive.settled_approximate``) pass so before any is made."""
    sure = settled_approximate(run, i, k, a, j_idx, r_idx, est, verdict, kap, num)
    if bool(sure.any()):
        scale = _approximate.entry_scale(a, verdict.numerical, j_idx, r_idx, run.full.rows[k] == "jacobian")
        _approximate.apply(verdict, a_g, scale, _approximate.accuracy(run.inputs[i].dtype), False, only=sure)


def judge_open(run, opened: dict, known: dict, analytic, reference, extra: dict, kap: float) -> dict:
    """Verdicts on the entries the ±h screen left open, from the whole stencil on their coordinates alone:
    ``opened[i][k]`` holds the entries ``(rows, columns)`` of (input ``i``, output ``k``), ``known[i][k]`` f at
    ±h of every coordinate ``(2, n_i, r)``. Returns per input it settles the verdict per output; an input
    left out needs ``judge`` on all of it to tell.

    ``judge`` raises each entry's noise to the median of its row's (``noise_sigma``'s pooling), which needs
    every coordinate's stencil; here each entry has its own noise alone, at most the pooled one. Every
    error estimate grows with the noise, and with it each central tolerance, while whether the one-sided
    values disagree sharply, and whether one side looks contaminated by a kink (``kinks.suspects``: its
    error a quarter of the others', weighing the noise 4 and 1.5 in the two-level stencil), can only turn
    false. So an entry that passes on its central value here, with no kink, sharp slopes or suspicion,
    passes so in ``judge``; an entry unchecked because f does not move at all (``unchecked_flat``) is so
    at any noise. An input with any other entry is left out.
    """
    cols = {i: torch.unique(torch.cat([j for j, _ in per_k.values()])) for i, per_k in opened.items()}
    outer = stencil.columns_at(run, cols, run.stencil.multipliers[2:])
    run.full.outer.update({i: (cols[i], outer[i]) for i in cols if cols[i].numel()})  # read again by full_numerics
    steps = {i: stencil.step_of(run, i) for i in opened}
    at = {i: stencil.coordinates(run, i, cols[i]).abs() for i in opened}
    tolerances_given = run.options["atol"] is not None or run.options["rtol"] is not None  # est read there
    # numpy for a few entries on the host, where its calls cost a fraction of torch's
    entries = sum(j.numel() for per_k in opened.values() for j, _ in per_k.values())
    host = not tolerances_given and entries <= NUMPY_ELEMENTS
    host &= all(known[i][k].device.type == "cpu" for i in opened for k in run.out_idx)
    join = (lambda ts: np.concatenate(ts, axis=-1)) if host else (lambda ts: torch.cat(ts, dim=-1))
    keys, sizes, parts = [], [], []
    for pos, k in enumerate(run.out_idx):  # per output one noise model over every input's entries
        f0, fmag, _ = autograd_rows.f0_rows(run, pos, k, run.full.rows[k])
        group = []
        for i, per_k in opened.items():
            j_idx, r_idx = per_k[k]
            where = torch.searchsorted(cols[i], j_idx)
            values = torch.cat([f0[r_idx].unsqueeze(0), known[i][k][:, j_idx, r_idx], outer[i][k][:, where, r_idx]])
            keys.append((i, k))
            sizes.append(j_idx.numel())
            group.append((values, steps[i][j_idx], at[i][where], r_idx))
        values, step, x_abs, r_idx = (torch.cat(t, dim=-1) for t in zip(*group))
        if host:
            values, step, x_abs, r_idx, fmag = (host_array(t) for t in (values, step, x_abs, r_idx, fmag))
        parts.append((values, noise_sigma(values, fmag[r_idx], run.stencil, whole=fmag), step, x_abs))
    values, sigma, step, x_abs = (join(t) for t in zip(*parts))
    sigma = intermediates.sigma_floor(sigma, x_abs, run.stencil)
    est = estimate_with_sigma(values, step, sigma, run.stencil, x_abs=x_abs)
    bounds = np.cumsum([0] + sizes).tolist()
    allow = torch.cat([
        allowance.allowance_full(
            run, i, k, analytic[(i, k)], reference[(i, k)] if reference is not None else None,
            _sliced(est, slice(lo, hi)) if tolerances_given else est, extra[(i, k)], opened[i][k],
        ).expand(hi - lo)
        for (i, k), lo, hi in zip(keys, bounds[:-1], bounds[1:])
    ])
    a_g = torch.cat([analytic[(i, k)][opened[i][k]] for i, k in keys])
    if host:
        a_g, allow = host_array(a_g), host_array(allow)
    verdict = compare(a_g, est, allow, kap)
    unchecked_flat(run, verdict, values, step, a_g)
    if screen.tier_screens(run):
        screen.open_within_tier(run, verdict, a_g, keys, opened)
    flat = verdict.unchecked & ((verdict.cause == 3) | (verdict.cause == 4))  # underflow, flat
    clean = ~verdict.failed & ~verdict.unchecked & ~verdict.kink & ~verdict.sharp_kink
    bad = ~(clean | flat) | _kinks.suspects(a_g, est, allow, kap, verdict)
    settled: dict = {}
    for (i, k), lo, hi in zip(keys, bounds[:-1], bounds[1:]):
        settled.setdefault(i, {})[k] = None if bool(bad[lo:hi].any()) else _sliced(verdict, slice(lo, hi))
    return {i: per_k for i, per_k in settled.items() if all(v is not None for v in per_k.values())}


def _sliced(result, part: slice):
    """An ``Estimates`` or ``Verdict`` of some of its entries (every tensor field sliced alike; numpy
    arrays become torch tensors)."""
    return type(result)(**{
        name: value[part] if isinstance(value, torch.Tensor)
        else torch.from_numpy(value[part]) if isinstance(value, np.ndarray) else value
        for name, value in vars(result).items()
    })


def first_verdict(run, i, k, a, ref, values, sigma, step, x_abs, idx: tuple, extra: float, kap: float):
    """The comparison of the entries ``idx`` (rows, columns) of autograd's ``(n_i, r)`` values ``a`` with
    their stencil ``values`` ``(points, m)`` and noise ``sigma``, before any second opinion: the
    estimates, the allowance, autograd's values there and the verdict."""
    est = estimate_with_sigma(values, step, sigma, run.stencil, x_abs=x_abs)
    allow = allowance.allowance_full(run, i, k, a, ref, est, extra, idx)
    a_g = a[idx]
    verdict = compare(a_g, est, allow, kap)
    unchecked_flat(run, verdict, values, step, a_g)
    return est, allow, a_g, verdict


def unchecked_flat(run, verdict: Verdict, values, step, a_g) -> None:
    """Entries that f does not move at any stencil point (``values`` ``(points, m)``) while autograd's
    value is too small to move it: counted as unchecked, never as mismatches. Torch tensors or numpy
    arrays alike (``compare``)."""
    xp = np if isinstance(values, np.ndarray) else torch
    # f exactly zero at every point while autograd's value is below sqrt(tiny): f underflows (x * x at
    # x = 1e-200), a finite difference cannot see the derivative: not checkable, never a mismatch
    tiny = torch.finfo(run.num_dtype).tiny ** 0.5
    flat = (values[1:] == values[0]).all(0)
    underflow = flat & (values[0] == 0) & (abs(a_g) < tiny)
    zero_f = underflow
    # f identical at every point while autograd's value would move it over the stencil by less than one
    # rounding at unit scale (|a|·reach < eps·max(|f|, 1)): f computed through intermediates of that
    # size (log(1 + e^g) with e^g ~ 1e-12 rounds 1 + e^g; cos(x^3) - 1 at x = 1e-12 is exactly 0) shows
    # no change at all: not checkable either. A derivative of a constant that a finite difference could
    # see (at float64's step, anything above ~3e-11·max(|f|, 1)) is still compared
    reach = step * max(abs(m) for m in run.stencil.multipliers)
    quantum = tolerances.eps(run.stencil.dtype) * abs(values[0]).clip(min=1.0)
    underflow = underflow | (flat & (abs(a_g) * reach < quantum))
    if bool(underflow.any()):
        verdict.failed = verdict.failed & ~underflow
        verdict.unchecked = verdict.unchecked | underflow
        if verdict.cause is not None:
            code = int8(xp.where(zero_f, 3, 4))
            verdict.cause = xp.where(underflow & (verdict.cause == 0), code, verdict.cause)
        verdict.ratio = xp.where(underflow, xp.zeros_like(verdict.ratio), verdict.ratio)


@second_opinion
def settle_one_sided(run, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """Entries no estimate of the central stencil could evaluate (f not finite on one side within it):
    one-sided stencils inside the domain at steps h, h/8, ... (``one_sided``), on at most
    ``REFINE_COORDS`` coordinates. Those still not evaluable are counted in ``not_evaluable``."""
    stuck = verdict.unchecked & ~(
        torch.isfinite(est.central_err) | torch.isfinite(est.right_err) | torch.isfinite(est.left_err)
    )
    idx = stuck.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    center = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[0][r_idx[idx]]
    x_j = coords(run.evaluator.base_args[i]).cpu()[j_idx[idx]].to(torch.float64)
    cols = run.budget.first(run, torch.unique(j_idx[idx]), 2 * len(run.stencil.multipliers), REFINE_COORDS)
    tried = idx[torch.isfinite(center) & torch.isfinite(x_j) & torch.isin(j_idx[idx], cols)]
    run.not_evaluable[i] = run.not_evaluable.get(i, 0) + idx.numel() - tried.numel()
    if tried.numel() == 0:
        return

    def evaluate(entries: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        js, rs = j_idx[tried[entries]], r_idx[tried[entries]]
        ucols, inverse = torch.unique(js, return_inverse=True)
        first = torch.zeros(ucols.numel(), dtype=torch.long).scatter_(0, inverse, torch.arange(js.numel()))
        values = stencil.stencil_along(run, i, k, ucols, stencil.coordinates(run, i, ucols), offsets[:, first])
        return values[:, inverse, rs]

    center = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[0][r_idx[tried]]
    res = one_sided(a[tried], allow[tried], kap, center, stencil.step_of(run, i)[j_idx[tried]], evaluate, run.stencil.dtype)
    run.not_evaluable[i] += int((~res.decided).sum())
    done = tried[res.decided]
    if done.numel() == 0:
        return
    verdict.unchecked[done] = False
    verdict.failed[done] = res.failed[res.decided]
    numerical = res.numerical[res.decided]
    relist(verdict, done, numerical, res.allowed[res.decided], (a[done] - numerical).abs())
    run.out.notes.append(Note(
        f"{done.numel()} derivative(s) of output {k} w.r.t. {run.names[i]} were compared with one-sided "
        "differences at smaller steps: fn is not finite on one side of the point within the stencil",
        NoteCode.ONE_SIDED, (run.names[i], k, done.numel()),
    ))


@second_opinion
def settle_cancellation(run, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """float64 failed entries within the float64 rounding probe's move of their derivative
    (``allowance.cancellation``): a sum whose terms cancel far below their size, rounded at the size of its
    terms by autograd and the finite differences alike. Not under given tolerances, nor at a sharp kink;
    where the budget pays for the probe's calls (not after a decisive failure of an expensive fn), and only
    for entries within ``allowance.rounding_reach`` of their numerical value."""
    idx = (verdict.failed & ~verdict.unchecked & ~verdict.sharp_kink).nonzero().squeeze(1)
    if idx.numel() == 0 or not approximate_tier(run):
        return
    # against the value and tolerance the verdict holds (an earlier second opinion may have replaced them)
    numerical = verdict.numerical[idx]
    diff = (a[idx] - numerical).abs()
    tol = verdict.allowed[idx]
    ok = torch.isfinite(diff) & torch.isfinite(tol) & (diff <= allowance.rounding_reach(run))
    if not bool(ok.any()):
        return
    calls = allowance.cancellation_calls(run, run.full.rounding_probe)
    if not run.budget.affords(run, calls, calls):
        run.budget.cut = True
        return

    def within(moved: dict) -> torch.Tensor:
        return ok & (diff <= tol + tolerances.MEASURED_FACTOR * moved[(i, k)][j_idx[idx], r_idx[idx]])

    moved = allowance.cancellation(run, lambda bound: (i, k) in bound and bool(within(bound).any()))
    if moved is None or (i, k) not in moved:
        return
    passed = within(moved)
    if not bool(passed.any()):
        return
    raise_ = tolerances.MEASURED_FACTOR * moved[(i, k)][j_idx[idx], r_idx[idx]]
    allow[idx] += raise_  # later second opinions of the entries still failed allow it too
    verdict.failed[idx[passed]] = False
    relist(verdict, idx[passed], numerical[passed], (tol + raise_)[passed], diff[passed])


def approximate_tier(run) -> bool:
    """Whether failed derivatives may pass as approximate (``approximate``): not under given tolerances."""
    return run.options["atol"] is None and run.options["rtol"] is None


@second_opinion
def resample(run, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """A second sample of f's rounding for failed entries within ``RESAMPLE_RATIO`` of passing.

    The error estimate's round-off part rests on one noise sample per derivative (the stencil's
    residual). A function computed through intermediates far larger than itself (``cos`` of an argument
    near 50 formed by a subtraction) rounds each evaluation by much more than ``eps·|f|``, and one sample
    can come out a tenth of that. The same stencil, at x moved by ``RESAMPLE_SHIFT`` of the step (a
    fresh rounding, the same truncation), gives a second estimate; the entry passes when autograd is
    within the tolerance of their mean with their spread added to the error. Only entries already
    within ``RESAMPLE_RATIO`` tolerances are looked at, so what this can forgive stays below
    ``RESAMPLE_RATIO`` times the first tolerance (~1e-8 relative in float64); 5 points per coordinate,
    at most ``REFINE_COORDS`` coordinates.
    """
    near = verdict.failed & ~verdict.sharp_kink & (verdict.ratio <= RESAMPLE_RATIO)
    idx = near.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    cols = run.budget.first(run, torch.unique(j_idx[idx]), len(run.stencil.multipliers) + 1, REFINE_COORDS)
    idx = idx[torch.isin(j_idx[idx], cols)]
    if idx.numel() == 0:
        return
    step = stencil.step_of(run, i)[cols]
    shifted = stencil.coordinates(run, i, cols) + RESAMPLE_SHIFT * step
    mults = stencil.multipliers(run, [0.0] + list(run.stencil.multipliers))  # the stencil's order: 0, +1, -1, ...
    values = stencil.stencil_along(run, i, k, cols, shifted, mults * step)  # (points + 1, b, r)
    again = stencil.entry_estimates(run, k, values, cols, step, j_idx[idx], r_idx[idx], shifted, unit_floor=True)
    first, second = est.central[idx], again.central
    mean = (first + second) / 2
    tol = kap * (torch.maximum(est.central_err[idx], again.central_err) + (first - second).abs()) + allow[idx]
    diff = (a[idx] - mean).abs()
    ok = torch.isfinite(mean) & torch.isfinite(tol) & torch.isfinite(a[idx]) & (diff <= tol)
    if not bool(ok.any()):
        return
    verdict.failed[idx[ok]] = False
    relist(verdict, idx[ok], mean[ok], tol[ok], diff[ok])
    run.out.notes.append(Note(
        f"{int(ok.sum())} derivative(s) of output {k} w.r.t. {run.names[i]} passed on a second sample of fn's "
        "rounding (the same stencil at x moved by 2^-10 of the step): one sample had understated it",
        NoteCode.SECOND_SAMPLE, (run.names[i], k, int(ok.sum())),
    ))


@second_opinion
def settle_rounding(run, i, k, a, j_idx, r_idx, values, sigma, x_abs, allow, verdict: Verdict, kap: float,
                    est: Estimates) -> None:
    """Failed entries whose stencil residual is beyond the model's rounding, compared again against f's
    rounding observed near x (``intermediates``: a probe of ``2·PROBE_POINTS`` points per coordinate, then
    the stencil at ``LARGER_STEPS`` where that rounding is far above the model's); at most
    ``REFINE_COORDS`` coordinates."""
    fmag = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[1][r_idx]
    model = finite_diff.round_off_model(values, fmag, run.stencil)
    coarse = finite_diff.lattice(values) > intermediates.TIE_MOVE * model  # whole ulps of a larger intermediate
    idx = (verdict.failed & (finite_diff.rough(values, fmag, run.stencil) | coarse)).nonzero().squeeze(1)
    points = 2 * intermediates.PROBE_POINTS
    idx = idx[torch.isin(j_idx[idx], run.budget.first(run, torch.unique(j_idx[idx]), points, REFINE_COORDS))]
    if idx.numel() == 0:
        return
    cols = torch.unique(j_idx[idx])
    where = torch.searchsorted(cols, j_idx[idx])
    step, at = stencil.step_of(run, i)[cols], stencil.coordinates(run, i, cols)
    offsets = torch.from_numpy(intermediates.probe_offsets()).unsqueeze(1) * step
    probe = stencil.stencil_along(run, i, k, cols, at, offsets)[:, where, r_idx[idx]]
    seen = intermediates.observed_rounding(
        values[0, idx], probe, values[:, idx], est.central[idx], step[where], model[idx]
    )
    raised = seen > intermediates.TIE_MOVE * sigma[idx]
    idx, where, sig = idx[raised], where[raised], torch.maximum(sigma[idx], seen)[raised]
    if idx.numel() == 0:
        return
    best = estimate_with_sigma(values[:, idx], step[where], sig, run.stencil, x_abs=x_abs[idx])
    best = larger_steps(run, i, k, j_idx[idx], r_idx[idx], sig, x_abs[idx], best, kap)
    tol = kap * best.central_err + allow[idx]
    diff = (a[idx] - best.central).abs()
    ok = torch.isfinite(best.central) & torch.isfinite(tol) & torch.isfinite(a[idx]) & (diff <= tol)
    verdict.failed[idx[ok]] = False
    relist(verdict, idx, best.central, tol, diff)
    if bool(ok.any()):
        run.out.notes.append(Note(
            f"{int(ok.sum())} derivative(s) of output {k} w.r.t. {run.names[i]} passed against fn's rounding "
            "observed near x, far above eps·|f| (it rounds intermediates larger than its value): "
            "resolution is coarse there",
            NoteCode.OBSERVED_ROUNDING, (run.names[i], k, int(ok.sum())),
        ))


def larger_steps(run, i, k, j_sel, r_sel, sigma, x_abs, best: Estimates, kap: float) -> Estimates:
    """``best`` (estimates of the entries ``(j_sel, r_sel)`` at h with f's rounding ``sigma``) replaced per
    entry by the stencil's at ``intermediates.LARGER_STEPS`` times h where its error is smaller there and
    its one-sided values agree with it (no kink within the larger reach)."""
    mults = stencil.multipliers(run, run.stencil.multipliers)
    factors = intermediates.LARGER_STEPS
    cols = torch.unique(j_sel)
    if not run.budget.affords(run, len(factors) * mults.shape[0] * cols.numel()):
        return best
    where = torch.searchsorted(cols, j_sel)
    step, at = stencil.step_of(run, i)[cols], stencil.coordinates(run, i, cols)
    offsets = torch.cat([mults * (f * step) for f in factors])
    both = stencil.stencil_along(run, i, k, cols, at, offsets)[:, where, r_sel]
    center = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[0][r_sel].unsqueeze(0)
    p = mults.shape[0]
    for n, f in enumerate(factors):
        vals = torch.cat([center, both[n * p:(n + 1) * p]])
        e = estimate_with_sigma(vals, f * step[where], sigma, run.stencil, x_abs=x_abs)
        better = torch.isfinite(e.central_err) & (e.central_err < best.central_err) & sides_agree(e, kap)
        best = Estimates(*(torch.where(better, new, old) for new, old in zip(
            (e.central, e.central_err, e.right, e.right_err, e.left, e.left_err),
            (best.central, best.central_err, best.right, best.right_err, best.left, best.left_err),
        )))
    return best


@second_opinion
def settle_kinks(run, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """Entries that passed on a central value spoiled by a kink inside the stencil (``kinks``), judged
    again at smaller steps on the kink's clean side; at most ``REFINE_COORDS`` coordinates."""
    idx = _kinks.suspects(a, est, allow, kap, verdict).nonzero().squeeze(1)
    per_level = len(run.stencil.multipliers)
    idx = idx[torch.isin(j_idx[idx], run.budget.first(run, torch.unique(j_idx[idx]), per_level, REFINE_COORDS))]
    if idx.numel() == 0:
        return
    mults = stencil.multipliers(run, run.stencil.multipliers)
    center = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[0]

    def estimates_at(level: int, open_: torch.Tensor) -> Estimates:
        sel = idx[open_]
        cols = torch.unique(j_idx[sel])
        step = stencil.step_of(run, i)[cols] / _kinks.STEP_FACTOR**level
        at = stencil.coordinates(run, i, cols)
        proj = stencil.stencil_along(run, i, k, cols, at, mults * step)
        values = torch.cat([center.view(1, 1, -1).expand(1, cols.numel(), -1), proj])
        return stencil.entry_estimates(run, k, values, cols, step, j_idx[sel], r_idx[sel], at, unit_floor=False)

    levels = run.budget.levels(run, per_level * int(torch.unique(j_idx[idx]).numel()), _kinks.LEVELS)
    decided, wrong, level = _kinks.apply(
        verdict, idx, _kinks.settle(a[idx], allow[idx], kap, estimates_at, levels), a[idx]
    )
    if decided:
        run.out.notes.append(
            _kinks.note(f"derivative(s) of output {k} w.r.t. {run.names[i]}", decided, wrong, level, (run.names[i], k))
        )


@second_opinion
def settle_ties(run, i, k, a, num: "stencil.FullNumerics", j_idx, r_idx, allow, verdict: Verdict, kap: float) -> None:
    """Failed entries at a kink at the point or at a tie (``ties``): one-sided slopes measured again along
    their coordinate and along their tie group; at most ``REFINE_COORDS`` coordinates."""
    failed = verdict.failed & ~verdict.unchecked
    points = len(run.stencil.multipliers)
    cols = run.budget.first(run, torch.unique(j_idx[failed]), points, REFINE_COORDS)
    x, step = run.evaluator.base_args[i], stencil.step_of(run, i).to(torch.float64)
    reach = max(abs(m) for m in run.stencil.multipliers)
    # a group is judged where a member failed or passed only as a kink (each member alone between its
    # one-sided slopes can still add up to too much: amax's tie with every member given 1)
    touched = torch.unique(j_idx[(failed | verdict.kink) & ~verdict.unchecked])
    groups = [
        g for g in _ties.tie_groups(x, step, reach)
        if g.numel() <= _ties.MAX_MEMBERS and bool(torch.isin(g, touched).any())
    ][: _ties.MAX_GROUPS]
    while groups and not run.budget.affords(run, points * (cols.numel() + sum(g.numel() for g in groups) + 2 * len(groups)), 2):
        groups.pop()
        run.budget.cut = True
    if cols.numel() == 0 and not groups:
        return
    singles = torch.unique(torch.cat([cols] + groups))
    center, fmag, _ = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])
    mults = stencil.multipliers(run, run.stencil.multipliers)
    # along one coordinate: the stencil at h is known, the one at h/8 is refine's first level
    offsets = mults * (step[singles] / _ties.STEP_FACTOR)
    fine = stencil.stencil_along(run, i, k, singles, stencil.coordinates(run, i, singles), offsets)
    run.budget.covered[i] = set(singles.tolist())  # refine's first level: the same points
    first = center.view(1, 1, -1)
    one_fine = torch.cat([first.expand(1, singles.numel(), -1), fine])
    s = _ties.sides(num.values[:, singles], one_fine, step[singles], fmag, run.stencil)
    near_kinks(run, i, k, num, singles, cols, one_fine, step, fmag, s)
    if groups:
        masks = torch.zeros(len(groups), coords(x).numel(), dtype=torch.float64)
        for g, members in enumerate(groups):
            masks[g, members] = 1.0
        g_step = torch.stack([step[m].max() for m in groups])
        both = stencil.along(run, i, k, masks, torch.cat([mults * g_step, mults * (g_step / _ties.STEP_FACTOR)]))
        p = mults.shape[0]
        lead = first.expand(1, len(groups), -1)
        sg = _ties.sides(torch.cat([lead, both[:p]]), torch.cat([lead, both[p:]]), g_step, fmag, run.stencil)
        s = _ties.join(s, sg)
    d = _ties.decide(a, j_idx, r_idx, verdict, allow, kap, cols, singles, groups, s)
    _ties.apply(verdict, d)
    for members in d.passed_groups:
        note = _ties.tie_note(run.inputs[i], run.names[i], members)
        if note not in run.out.notes:  # once, whichever outputs see the tie
            run.out.notes.append(note)
    for members in d.failed_groups:
        run.tie_failures.append((i, members.tolist(), _ties.tie_text(run.inputs[i], run.names[i], members)))
    if bool(d.rescued.any()):
        what = f"derivative(s) of output {k} w.r.t. {run.names[i]}"
        run.out.notes.append(_ties.kink_note(what, int(d.rescued.sum()), (run.names[i], k)))


def near_kinks(run, i, k, num: "stencil.FullNumerics", singles, cols, one_fine, step, fmag, s: "_ties.Sides") -> None:
    """Where the central estimate moved between h and h/8 (a kink near the point, ``ties.near_kink``), the
    one-sided slopes at h/64 too, along the failed coordinates: a side whose estimate at h/8 they reproduce
    has that estimate's own error (one more level of ``points`` evaluations per coordinate)."""
    pos = (torch.isin(singles, cols) & s.moved.any(1)).nonzero().squeeze(1)
    mults = stencil.multipliers(run, run.stencil.multipliers)
    if pos.numel() == 0 or not run.budget.affords(run, mults.shape[0] * pos.numel()):
        return
    sub = singles[pos]
    offsets = mults * (step[sub] / _ties.STEP_FACTOR**2)
    finer = stencil.stencil_along(run, i, k, sub, stencil.coordinates(run, i, sub), offsets)
    finer = torch.cat([one_fine[:1, pos], finer])
    s3 = _ties.sides(num.values[:, sub], one_fine[:, pos], step[sub], fmag, run.stencil, finer)
    s.right_own[pos], s.left_own[pos] = s3.right_own, s3.left_own


@second_opinion
def refine(run, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """A second opinion on failed entries from the same stencil at steps h/8, h/64, ...

    A smooth function that changes on a scale below h (1/x at x = 1e-10, tanh(1e7·x) at 0) has a
    Richardson estimate at h that is far off and an error estimate that cannot see it. An entry passes
    here only when, at some smaller step, (1) autograd agrees with the estimate there within its own
    tolerance, (2) that estimate has converged (``REFINE_PRECISION``) and (3) it differs from the one at
    h by more than κ times their combined error estimate: the estimate at h was wrong. A wrong gradient keeps failing:
    where the estimate at h had converged, the next step's estimate reproduces it, and refining that
    entry stops there (one level of evaluations, ``4 x min(coordinates, REFINE_COORDS)`` points).
    """
    failed = verdict.failed.nonzero().squeeze(1)
    open_ = failed[torch.isin(j_idx[failed], torch.unique(j_idx[failed])[:REFINE_COORDS])]  # being refined
    mults = stencil.multipliers(run, run.stencil.multipliers)  # (points, 1)
    center = autograd_rows.f0_rows(run, run.out_idx.index(k), k, run.full.rows[k])[0]  # (r,)
    resolved, level_used, reestimated, level_worse = 0, 0, set(), 0
    best_tol = torch.full_like(verdict.allowed, float("inf"))
    prev_c, prev_e = est.central[open_], est.central_err[open_]  # each open entry's last estimate, and
    shifted = torch.zeros_like(open_, dtype=torch.bool)  # whether it moved off the one at h (``refine_columns``)
    for level in range(1, REFINE_LEVELS + 1):
        cols, free = refine_columns(run, i, j_idx[open_], shifted, level) if open_.numel() else (open_, 0)
        if cols.numel() == 0:
            break
        if cols.numel() < torch.unique(j_idx[open_]).numel():
            keep_open = torch.isin(j_idx[open_], cols)
            open_, prev_c, prev_e, shifted = open_[keep_open], prev_c[keep_open], prev_e[keep_open], shifted[keep_open]
        step = stencil.step_of(run, i)[cols] / REFINE_FACTOR**level
        at = stencil.coordinates(run, i, cols)
        with run.budget.twin(run, free / cols.numel()):  # the passing path's share (``refine_columns``)
            proj = stencil.stencil_along(run, i, k, cols, at, mults * step)
        values = torch.cat([center.view(1, 1, -1).expand(1, cols.numel(), -1), proj])  # (points + 1, b, r)
        fine = stencil.entry_estimates(run, k, values, cols, step, j_idx[open_], r_idx[open_], at, unit_floor=False)
        a_o, allow_o = a[open_], allow[open_]
        tol = kap * fine.central_err + allow_o
        usable = torch.isfinite(fine.central) & torch.isfinite(fine.central_err)
        # converged: the error estimate a small fraction of the value
        precise = fine.central_err <= REFINE_PRECISION * fine.central.abs() + allow_o
        # the estimate at h was wrong: this one differs from it by more than their combined error
        moved = (fine.central - est.central[open_]).abs() > kap * torch.hypot(est.central_err[open_], fine.central_err)
        agrees = usable & precise & moved & torch.isfinite(a_o) & ((a_o - fine.central).abs() <= tol)
        diff = (a_o - fine.central).abs()
        if bool(agrees.any()):
            verdict.failed[open_[agrees]] = False
            relist(verdict, open_[agrees], fine.central[agrees], tol[agrees], diff[agrees])
            resolved += int(agrees.sum())
            level_used = level
        # the estimate at h was off and a converged one disagrees with autograd too: the listing shows
        # the tightest such estimate (the entry stays failed)
        better = usable & precise & moved & ~agrees & (tol < best_tol[open_])
        if bool(better.any()):
            worse = open_[better]
            best_tol[worse] = tol[better]
            relist(verdict, worse, fine.central[better], tol[better], diff[better])
            reestimated.update(worse.tolist())
            level_worse = level
        # a converged estimate that the next step reproduces settles an entry (a wrong gradient stops
        # here, usually after one level); the rest goes on to the next smaller step
        settled = (prev_e <= REFINE_PRECISION * prev_c.abs()) & (
            (fine.central - prev_c).abs() <= kap * (prev_e + fine.central_err)
        )
        keep = usable & ~agrees & ~settled
        shifted = shifted | moved
        open_, prev_c, prev_e, shifted = open_[keep], fine.central[keep], fine.central_err[keep], shifted[keep]
    reestimated = sum(1 for e in reestimated if verdict.failed[e])  # not resolved at a later level
    if reestimated:
        run.out.notes.append(Note(
            f"{reestimated} failing derivative(s) of output {k} w.r.t. {run.names[i]} are listed with the "
            f"estimate at a smaller step (h/{REFINE_FACTOR**level_worse:g}): the estimate at h was off because "
            "fn changes on a scale below h there",
            NoteCode.REESTIMATED, (run.names[i], k, reestimated, level_worse),
        ))
    if resolved:
        run.refined_resolved = True
        run.out.notes.append(Note(
            f"{resolved} derivative(s) of output {k} w.r.t. {run.names[i]} were resolved with a smaller step "
            f"(down to h/{REFINE_FACTOR**level_used:g}): the estimate at h was off because fn changes on a "
            "scale below h there",
            NoteCode.REFINED, (run.names[i], k, resolved, level_used),
        ))


def refine_columns(run, i: int, cols_of_open: torch.Tensor, shifted: torch.Tensor, level: int):
    """The coordinates refine evaluates at ``level`` (of the open entries' ``cols_of_open``) and how many of
    them are on the passing path: those with an entry whose estimate moved off the one at h at an earlier
    level (``shifted``: fn changes below h there, and the check of a right gradient refines them as far).
    The others are the failing path's and take what the budget pays for."""
    free = torch.unique(cols_of_open[shifted])
    paid = torch.unique(cols_of_open[~shifted])
    paid = paid[~torch.isin(paid, free)]
    paid = run.budget.affordable(run, i, paid, len(run.stencil.multipliers), level == 1)
    return torch.sort(torch.cat([free, paid])).values, free.numel()


def relist(verdict: Verdict, entries: torch.Tensor, numerical, tol, diff) -> None:
    """Entries of ``verdict`` judged again against a better numerical value (``resample``, ``refine``)."""
    verdict.numerical[entries] = numerical
    verdict.allowed[entries] = tol
    verdict.ratio[entries] = diff / tol.clamp_min(1e-300)
