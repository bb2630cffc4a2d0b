"""Early stop of a directional stencil: decide from ``f(x ± h·u)`` alone when the full stencil could only agree.

A directional check compares autograd's ``a = vᵀJu`` with finite differences of ``φ(t) = v·f(x + t·u)``.
With float64 numerics the full stencil evaluates ``t = ±h, ±2h`` (``Stencil(levels=2)``) and gives

- the central value ``D4 = (4·D(h) − D(2h))/3`` (``D(s) = (φ(s) − φ(−s))/2s``) with the error estimate
  ``E = |D4 − D(h)| + 1.5·σ/h``, where ``σ`` is at least the round-off model ``σ₀`` of ``φ``
  (``finite_diff.noise_sigma`` / ``round_off_model``);
- one-sided values: ``right`` is one Richardson step over ``R(s) = (φ(s) − φ(0))/s``, so
  ``|right − R(h)|`` is its truncation estimate and its error is ``|right − R(h)| + 4·σ/h``; ``left`` alike
  over ``L(s) = (φ(0) − φ(−s))/s``.

``compare`` passes ``a`` when ``|a − D4| ≤ κ·E + allowance``, unless the one-sided values disagree
*sharply* (``|right − left| ≥ SHARPNESS·κ·(right_err + left_err)``) and ``a`` lies outside them.

The screen needs only ``φ(0)`` (already known) and ``φ(±h)``. Let ``σ₀`` be the round-off model computed
from those points (the model is monotone in the points: it can only grow with ``±2h``, so ``σ₀ ≤ σ``) and
take an allowance no larger than the full comparison's. If

    |a − D(h)| ≤ tol₀ = κ·1.5·σ₀/h + allowance₀

then the full stencil passes ``a`` too:

1. ``|a − D4| ≤ |a − D(h)| + |D4 − D(h)| ≤ κ·E + allowance`` (``κ ≥ 1``): its central comparison passes;
2. if it also sees a sharp kink, ``a`` lies between the one-sided values, so the kink rule does not fail
   it: ``right`` is within its truncation estimate of ``R(h)`` and its tolerance
   ``κ·(|right − R(h)| + 4σ/h) + allowance`` exceeds that by at least ``tol₀``, so the kink rule's interval
   ``[min(right, left) − tol, max(right, left) + tol]`` holds ``[min(R, L) − tol₀, max(R, L) + tol₀]``,
   which holds ``a`` because ``D(h) = (R(h) + L(h))/2`` lies between ``R(h)`` and ``L(h)``.

So a screened verdict (pass) is one the full stencil would reach; it never fails a derivative: when any
value misses the screen the full stencil runs and decides alone.

What the screen cannot tell from ``±h`` is *how* the full stencil would pass: a kink exactly at ``x`` along
``u`` (``abs`` at 0, ties in ``max``) where autograd takes the mean of the one-sided slopes passes both,
but the full stencil counts it as a kink. A smooth ``φ`` has ``R(h) − L(h) ≈ h·φ''``, a kink adds its jump,
and one step size cannot tell them apart; so the screen also requires the one-sided differences to agree
within ``KINK_FRACTION`` of ``|D(h)|`` (plus the noise bound below which the full stencil cannot call a
kink sharp, ``8·SHARPNESS·κ·σ₀/h``, halved as a margin for rounding) and otherwise runs the full stencil.
Smaller kinks may be passed without being counted as kinks (``GroupSummary.kinks``), and where ``φ`` jumps
between ``h`` and ``2h`` the full stencil would count the value as unchecked rather than compared.

Without ``φ(0)`` (a large float32 directional check evaluates ``f(x)`` in float64 only where it needs it,
``setup.choose_numeric_dtype``) the screen is the central test alone: argument 1 holds as it stands, and
argument 2 with any ``R(h)``, ``L(h)`` around ``D(h)``; what is lost is the kink count, which the report's
check detail says.

Where ``φ`` is finite at ``±h`` but not at ``±2h`` (a domain edge between ``h`` and ``2h`` along ``u``) the
full stencil falls back on one side's estimate and could reach another verdict; the screen decides on the
points it has.

Full mode has the same screen per Jacobian entry (``screen_prepare``/``screen_split``; several small
inputs share one, ``joint_screen_prepare``/``joint_screen_test``): the plain central difference ``D(h)``
from the first two stencil points, the full estimate being the Richardson value ``D4`` with error
``|D4 − D(h)| + 1.5·σ/h`` (+ ...), ``σ`` at least the round-off model. So ``|a − D(h)| ≤ κ·σ₀/h +
allowance`` implies the full comparison passes too, and the points at ``2h`` are not needed. Anything
else (a failure, a possible kink: one-sided slopes differing by ``KINK_SUSPECT`` of ``D(h)``, an entry f
does not move while autograd is nonzero, a non-finite value) is left open: where the open entries lie on
a few of the input's coordinates, the full stencil runs on those coordinates alone and decides them where
it can without the rest (``settle.judge_open``), else on the whole input.

In the full check that the cost plan's directions fell back on after failing within the approximate tier
(an iterative solver's derivative, ``tier_screens``), the screen also passes entries as approximate where
the whole stencil could only pass them, on its central value or within the tier (``within_tier``):
``|a − D(h)|`` within the screen's tolerance plus ``ρ·s₀``, where ``s₀`` (the largest of autograd's
magnitudes in the entry's coordinate and row: ``block_maxima``) is at most the tier's scale, so that
``|a − D4| ≤ κ·E + allowance + ρ·scale``; and no sharp kink can fail it: either the one-sided slopes at ±h
agree within the noise below which the full stencil cannot call a kink sharp, or ``a`` lies within the
screen's tolerance of their range (argument 2 above). Tied coordinates stay open, as full mode's ties
rule judges them. The entries the screen leaves open get the same tier on their whole stencil
(``open_within_tier``). What this cannot see is a second opinion at a smaller step moving an entry's
estimate (``settle.refine``, where fn changes below h): the full check would judge that estimate instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from gradcheck_kit._engine import allowance, autograd_rows, limits, stencil, ties, tolerances
from gradcheck_kit._engine import approximate as _approximate
from gradcheck_kit._engine.compare import SHARPNESS, Verdict
from gradcheck_kit._engine.finite_diff import host_array, round_off_model, weights_for
from gradcheck_kit._engine.limits import KINK_SUSPECT
from gradcheck_kit._engine.tolerances import Stencil
from gradcheck_kit._inputs import n_coords

__all__ = ["applies", "screen", "describe", "can_screen", "screen_prepare", "joint_screen_prepare",
           "joint_screen_test", "screen_candidates", "screen_split", "host_array", "Screen", "JointScreen"]

#: one-sided differences at +-h that disagree by more than this fraction of the central one: run the full
#: stencil, which tells a kink (reported as such) from curvature
KINK_FRACTION = 0.01
#: an input whose entries left open by the screen (``screen_split``) lie on more than this fraction of
#: its coordinates runs the whole stencil on all of them
OPEN_FRACTION = 0.25
#: rows of the screen's values: phi(0), phi(+h), phi(-h) (the first three points of every stencil)
POINTS = 3


def applies(stencil: Stencil) -> bool:
    """The argument above holds for the two-level stencil (float64 numerics): its one-sided values are one
    Richardson step over ``R(h)``, ``L(h)``. Deeper stencils (float32 numerics) always run in full."""
    return stencil.levels == 2


def screen(
    a: torch.Tensor,
    values: torch.Tensor,
    h: float,
    fmag: torch.Tensor,
    stencil: Stencil,
    allowance: torch.Tensor,
    kappa: float,
    center: bool = True,
    margin: torch.Tensor | None = None,
) -> Verdict | None:
    """A verdict (every derivative passed) when ``φ(0), φ(+h), φ(−h)`` decide, else ``None``.

    ``a``: autograd's values ``(*batch)``; ``values``: ``(3, *batch)``; ``fmag``: the magnitude of ``φ`` the
    full stencil's noise model uses; ``allowance``: at most what the full comparison allows autograd;
    ``center``: whether ``values[0]`` (``φ(0)``) is known (else the central test alone decides);
    ``margin``: at most the approximate tier the full comparison adds (``within_margin``), or None.
    """
    if not applies(stencil):
        return None
    central, noise, right, left, no_kink = terms(values, h, fmag, stencil, kappa, center)
    tol = noise + allowance
    diff = (a - central).abs()
    ok = torch.isfinite(a) & torch.isfinite(central) & torch.isfinite(tol) & (diff <= tol) & no_kink
    if not bool(ok.all()) and margin is not None and center:
        tol = tol + within_margin(a, diff, tol, right, left, margin) * margin
        ok = torch.isfinite(a) & torch.isfinite(central) & torch.isfinite(tol) & (diff <= tol) & no_kink
    if not bool(ok.all()):
        return None
    none = torch.zeros_like(ok)
    ratio = torch.where(tol > 0, diff / tol.clamp_min(1e-300), torch.zeros_like(diff))
    return Verdict(
        failed=none, kink=none, unchecked=none, numerical=central, allowed=tol, ratio=ratio,
        sharp_kink=none, left=left, right=right,
    )


def within_margin(a, diff, tol, right, left, margin) -> torch.Tensor:
    """Where ``screen`` may allow ``margin`` beyond its tolerance ``tol``: values that the full stencil, whose
    comparison adds at least ``margin`` as the approximate tier, passes on its central value or within that
    tier (``|a - D4| <= kappa·E + allowance + margin``, as for ``|a - D(h)| <= tol``), and that its kink rule
    cannot fail, ``a`` lying within ``tol`` of the one-sided slopes' range (argument 2 above)."""
    inside = (a >= torch.minimum(right, left) - tol) & (a <= torch.maximum(right, left) + tol)
    return (inside & (diff > tol) & torch.isfinite(margin)).to(diff.dtype)


def terms(values: torch.Tensor, h: float, fmag: torch.Tensor, stencil: Stencil, kappa: float, center: bool = True):
    """What the screen reads of ``φ(0), φ(+h), φ(−h)`` (``values`` ``(3, *batch)``; ``center`` as
    ``screen``'s): the central difference, its round-off bound ``κ·Σ|w|·σ/h``, the one-sided differences
    (the central one where ``φ(0)`` is not known) and where they agree within ``KINK_FRACTION`` of it plus
    the noise below which the full stencil cannot call a kink sharp (everywhere without ``φ(0)``)."""
    w = weights_for(stencil)
    sigma = round_off_model(values[0 if center else 1 : POINTS], fmag, stencil)
    central = (values[1] - values[2]) / (2 * h)
    noise = kappa * (float(np.abs(w.central).sum()) * sigma / h)
    if not center:
        return central, noise, central, central, torch.ones_like(central, dtype=torch.bool)
    right = (values[1] - values[0]) / h
    left = (values[0] - values[2]) / h
    one_sided = float(np.abs(w.right).sum() + np.abs(w.left).sum())
    no_kink = (right - left).abs() <= KINK_FRACTION * central.abs() + 0.5 * SHARPNESS * kappa * one_sided * sigma / h
    return central, noise, right, left, no_kink


def describe(stencil: Stencil) -> str:
    """The method, for a report whose every directional verdict the screen decided."""
    return (
        f"central differences at ±h (stopped there: every value agreed within the round-off of the first "
        f"difference, so the Richardson step at 2h could not have changed a verdict), h = {stencil.h0:.2g}·max(|x|, 1), "
        f"evaluated in {str(stencil.dtype).replace('torch.', '')}"
    )


# ---------------------------------------------------------------------------------------------------
# full mode
def can_screen(run) -> bool:
    return run.stencil.levels == 2 and run.options["rtol"] is None and limits.TUNING.full_screen


def screens_apart(run, inputs, rows, analytic, reference) -> dict:
    """Input by input screens."""
    return {i: screen_prepare(run, i, rows, analytic, reference) for i in inputs}


def screen_prepare(run, i, rows, analytic, reference) -> "Screen":
    """``f`` at ±h for every coordinate of input ``i`` and the entries that can differ from zero."""
    known = stencil.stencil_values(run, i, rows, run.stencil.multipliers[:2])
    found = Screen(known)
    run.tier_pending.pop(i, None)
    for pos, k in enumerate(run.out_idx):
        fp, fm = known[k][0], known[k][1]  # (n_i, r)
        f0 = autograd_rows.project(run, k, rows[k], run.f0[pos].unsqueeze(0))  # (1, r)
        a = analytic[(i, k)]
        moved = (fp != f0).logical_or_(fm != f0)
        j_idx, r_idx = moved.nonzero(as_tuple=True)
        a_c = a[j_idx, r_idx]
        # autograd nonzero only where f moves (else: the full stencil decides)
        complete = int(torch.count_nonzero(a)) == int(torch.count_nonzero(a_c))
        found.candidates[k] = (j_idx, r_idx, a_c)
        found.complete &= complete
        if complete and reference is None:  # every nonzero of the Jacobian is among the candidates
            finite = a_c.nan_to_num(0.0, posinf=0.0, neginf=0.0)
            found.sumsq[k] = float(finite.square().sum())
            rows_sq = torch.zeros(a.shape[1], dtype=torch.float64).index_add_(0, r_idx, finite.square())
            found.row_rms[k] = (rows_sq / max(a.shape[0], 1)).sqrt()
    return found


def screen_split(run, i, found, rows, analytic, reference, extra, kap) -> tuple[dict, dict | None]:
    """The screen's verdict on input ``i`` entry by entry: per output the worst ratio of the entries it
    passed, and per output the entries it left open ``(rows, columns)``: those that missed it, and those
    where autograd is nonzero while f did not move at ±h. The open entries are ``None`` where they span
    more than ``OPEN_FRACTION`` of the input's coordinates (the whole stencil is as cheap then)."""
    worst, opened, cols = {}, {}, []
    for pos, k in enumerate(run.out_idx):
        j_idx, r_idx, _ = found.candidates[k]
        tested = candidate_ratios(run, i, found, pos, k, rows[k], analytic, reference, extra, kap)
        ok = tested[1] if tested is not None else torch.ones(0, dtype=torch.bool)
        every = bool(ok.all())  # the usual case: no masking
        passed = None if tested is None else tested[0] if every else tested[0][ok]
        worst[k] = float(passed.max()) if passed is not None and passed.numel() else 0.0
        if found.complete and every:  # every nonzero of autograd's is a candidate, and each passed
            opened[k] = (j_idx[:0], r_idx[:0])
        elif found.complete:  # the open ones are those that missed
            opened[k] = (j_idx[~ok], r_idx[~ok])
        else:
            missed = analytic[(i, k)] != 0
            missed[j_idx[ok], r_idx[ok]] = False
            opened[k] = missed.nonzero(as_tuple=True)
        cols.append(opened[k][0])
    n_open = sum(c.numel() for c in cols)
    if n_open and torch.unique(torch.cat(cols)).numel() > OPEN_FRACTION * n_coords(run.inputs[i]):
        return worst, None
    return worst, opened


def candidate_ratios(run, i, found, pos, k, kind, analytic, reference, extra, kap):
    """``|a - D(h)| / tolerance`` of the screen's candidate entries of (input ``i``, output ``k``) and
    whether each passed (``screen_ratios``), or ``None`` where there are none. Numpy on the host, where the
    stencil values and Jacobians are held."""
    j_idx, r_idx, a_c = found.candidates[k]
    if j_idx.numel() == 0:
        return None
    policy = tolerances.AnalyticAllowance(run.inputs[i].dtype, reference is not None)
    fp, fm, a, step, j, r, a_c = (
        host_array(t) for t in (found.known[k][0], found.known[k][1], analytic[(i, k)], stencil.step_of(run, i), j_idx, r_idx, a_c)
    )
    ref = host_array(reference[(i, k)]) if reference is not None else None
    with np.errstate(all="ignore"):
        if ref is None and k in found.row_rms:
            base_c, row_rms = a_c, host_array(found.row_rms[k])
        else:
            base = ref if ref is not None else a
            base_c = base[j, r]
            finite = np.where(np.isfinite(base), base, 0.0)
            row_rms = np.sqrt(np.sum(np.square(finite), axis=0)) / math.sqrt(max(base.shape[0], 1))
        scale = np.abs(base_c) + row_rms[r] + extra[(i, k)]
        measured = np.abs(a_c - ref[j, r]) if ref is not None else None
        allow = policy.allowance(scale, measured, floor_scale=allowance.floor_scale_of(run, scale, i, k, measured))
    flat = j * fp.shape[1] + r  # np.take by flat index: a few times faster than by pairs of indices
    tier = None
    if tier_screens(run):
        tier = (tier_scale(run, i, k, j, r), untied_coordinates(run, i)[j], _approximate.accuracy(run.inputs[i].dtype))
    ratio, ok, relative = screen_ratios(
        run, pos, k, kind, np.take(fp, flat), np.take(fm, flat), step[j], r, a_c, allow, kap, tier
    )
    if relative is not None:
        run.tier_pending.setdefault(i, []).append((k, kind, relative, j, r))
    return torch.from_numpy(ratio), torch.from_numpy(ok)


def tier_screens(run) -> bool:
    """Whether full mode's ±h screen passes entries within the approximate tier as approximate
    (``screen_ratios``' ``tier``): in the full check that the cost plan's directions fell back on after they
    failed within that tier (``plan.fall_back``: an iterative solver's derivative), where each point is a
    call of fn; not under given tolerances nor ``strict`` (which fail such entries)."""
    return (
        run.tier_screen and not run.options["strict"] and run.options["atol"] is None
        and run.options["rtol"] is None and run.budget.point_by_point(run)
    )


def block_maxima(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest finite magnitude of autograd's ``(n_i, r)`` values per coordinate (over the rows) and per
    row (over the coordinates): at most the approximate tier's scale of any entry there
    (``approximate.entry_scale`` takes the larger of these of the magnitudes it compares, numerical too)."""
    m = np.abs(np.where(np.isfinite(a), a, 0.0))
    return m.max(axis=1, initial=0.0), m.max(axis=0, initial=0.0)


def untied_coordinates(run, i: int) -> np.ndarray:
    """Per coordinate of input ``i``: whether it ties with no other (``ties.tie_groups``, as
    ``decisive.untied`` reads them)."""
    x = run.evaluator.base_args[i]
    mask = np.ones(n_coords(x), dtype=bool)
    reach = max(abs(m) for m in run.stencil.multipliers)
    tied = ties.tie_groups(x, stencil.step_of(run, i).to(torch.float64), reach)
    if tied:
        mask[torch.cat(tied).numpy()] = False
    return mask


def tally_settled(run, i: int) -> None:
    """The entries of input ``i`` that its ±h screen passed within the approximate tier (``screen_ratios``),
    counted in the check's approximate note once the screen settled the input (where it did not, the whole
    stencil judges them again and counts its own): per output their disagreement over the tier's scale
    (``relative > 0``) with their coordinates and rows."""
    x, name = run.inputs[i], run.names[i]
    for k, kind, relative, j_idx, r_idx in run.tier_pending.pop(i, []):
        label = lambda pos, k=k, kind=kind, j_idx=j_idx, r_idx=r_idx: _approximate.entry_label(  # noqa: E731
            run.outs[k], run.output_names[k], kind, x, name, int(j_idx[pos]), int(r_idx[pos]))
        run.approximate.add(torch.from_numpy(relative), _approximate.accuracy(x.dtype), x.dtype, label)


def open_within_tier(run, verdict: Verdict, a, keys: list, opened: dict) -> None:
    """The entries the ±h screen left open, judged on their whole stencil (``settle.judge_open``, whose
    ``verdict`` covers ``opened[i][k]`` for each ``(i, k)`` of ``keys`` in turn; numpy arrays or torch
    tensors): those that failed within the approximate tier of a scale at most the full check's
    (``tier_scale``), on untied coordinates, with no kink, pass as approximate (``verdict.approximate``).
    The full check judges them on the same stencil points with at least this noise, so it finds them
    within the tier too, and no sharp kink where this found none."""
    xp = np if isinstance(a, np.ndarray) else torch
    scale = np.concatenate([tier_scale(run, i, k, *opened[i][k]) for i, k in keys])
    untied = np.concatenate([untied_coordinates(run, i)[np.asarray(opened[i][k][0])] for i, k in keys])
    rho = np.concatenate([
        np.full(opened[i][k][0].numel(), _approximate.accuracy(run.inputs[i].dtype)) for i, k in keys
    ])
    if xp is torch:
        scale, untied, rho = torch.from_numpy(scale), torch.from_numpy(untied), torch.from_numpy(rho)
    diff = abs(a - verdict.numerical)
    tier = verdict.allowed + rho * scale
    within = verdict.failed & ~verdict.unchecked & ~verdict.sharp_kink & ~verdict.kink & untied & (scale > 0)
    within = within & xp.isfinite(a) & xp.isfinite(verdict.numerical) & (diff <= tier)
    if not bool(within.any()):
        return
    verdict.approximate = xp.where(within, (diff / xp.where(scale > 0, scale, 1.0)).clip(min=1e-307), 0.0 * diff)
    verdict.failed = verdict.failed & ~within
    verdict.allowed = xp.where(within, tier, verdict.allowed)
    verdict.ratio = xp.where(within, diff / tier, verdict.ratio)


def tier_scale(run, i: int, k: int, j_idx, r_idx) -> np.ndarray:
    """Per entry ``(j_idx, r_idx)`` of (input ``i``, output ``k``) a scale at most the approximate tier's
    (``block_maxima`` of autograd's block), numpy."""
    a = host_array(run.full.analytic[(i, k)])
    rows_max, cols_max = block_maxima(a)
    j, r = np.asarray(j_idx), np.asarray(r_idx)
    return rows_max[j] if run.full.rows[k] != "jacobian" else np.maximum(rows_max[j], cols_max[r])


def screen_ratios(run, pos, k, kind, fpc, fmc, h, r_idx, a_c, allow, kap, tier=None):
    """The screen's test of candidate entries (f at ±h, steps, rows, autograd's values, autograd's
    round-off allowance): ``|a - D(h)| / tolerance`` per entry, whether each passed (within the
    tolerance, and no sign of a kink), and where ``tier`` is given (``tier_screens``: per entry a scale at
    most the approximate tier's and whether its coordinate is untied, and the tier's accuracy) the
    disagreement over that scale of the entries passed within the tier (``within_tier``; else None).
    Numpy arrays."""
    e = tolerances.eps(run.stencil.dtype)
    f0, fmag, f_scale = autograd_rows.f0_rows(run, pos, k, kind)
    f0, fmag, f_scale = f0.numpy(), fmag.numpy(), float(f_scale)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (fpc - fmc) / (2 * h)
        sigma = (tolerances.NOISE_MODEL_EPS * e) * (np.maximum(np.maximum(fmag[r_idx], abs(fpc)), abs(fmc)) + f_scale)
        if run.options["nondet_tol"]:
            allow = allow + run.options["nondet_tol"]
        if run.options["atol"] is not None:
            allow = np.full_like(d, float(run.options["atol"]))
        tol = kap * sigma / h + allow
        diff = abs(a_c - d)
        kinkish = abs(fpc - 2 * f0[r_idx] + fmc) / h > KINK_SUSPECT * abs(d) + 4 * kap * sigma / h
        # NaN anywhere compares False, and an infinite tolerance (autograd's value infinite) passes nothing:
        # the full treatment
        ok = (diff <= tol) & np.isfinite(tol) & ~kinkish
        ratio = diff / tol
        if tier is None or bool(ok.all()):
            return ratio, ok, None
        right, left = (fpc - f0[r_idx]) / h, (f0[r_idx] - fmc) / h
        scale, untied, rho = tier
        w = weights_for(run.stencil)
        one_sided = float(np.abs(w.right).sum() + np.abs(w.left).sum())
        quiet = abs(right - left) <= 0.5 * SHARPNESS * kap * one_sided * sigma / h
        relative = within_tier(a_c, d, right, left, diff, tol, scale, rho, ~ok & ~kinkish & untied, quiet)
        passed = relative > 0
        return np.where(passed, diff / (tol + rho * scale), ratio), ok | passed, relative


def within_tier(a, d, right, left, diff, tol, scale, rho, candidate, quiet):
    """Entries the full stencil passes, on its central value or as approximate, from ``f`` at ±h alone
    (numpy arrays: autograd's values ``a``, the central difference ``d``, the one-sided ones, ``|a - d|``,
    the screen's tolerance ``tol``, at most the tier's ``scale``): ``|disagreement| / scale`` there, 0
    elsewhere. The full estimate ``D4`` is within its error estimate of ``d``, so ``|a - D4|`` is within
    ``kappa`` times that plus the tolerance plus ``rho * scale``: within the tier (``approximate.apply``)
    unless the full stencil sees a sharp kink, which it cannot where the one-sided slopes at ±h agree
    within the noise (``quiet``), and which does not fail ``a`` where it lies within ``tol`` of the range of
    those slopes (as the screen's own argument has it). Where a second opinion moves an entry's estimate
    (a smaller step where fn changes below h), the full stencil would judge that estimate instead."""
    inside = (a >= np.minimum(right, left) - tol) & (a <= np.maximum(right, left) + tol)
    ok = candidate & np.isfinite(d) & np.isfinite(a) & np.isfinite(tol) & (scale > 0)
    ok &= (diff <= tol + rho * scale) & (inside | quiet)
    return np.where(ok, np.maximum(diff / np.where(scale > 0, scale, 1.0), 1e-307), 0.0)


def joint_screen_prepare(run, inputs, rows, analytic, reference) -> "JointScreen | None":
    """The ±h screen of several small inputs of one dtype at once (no float64 reference run): ``f`` at ±h
    (``stencil.screen_stencil``), then the candidates (where f moved or autograd is nonzero), sums of
    squares and row sizes from the inputs' stacked ``(sum n_i, r)`` matrices. ``None`` where the inputs
    do not qualify."""
    if not inputs or reference is not None:
        return None
    dtype = run.inputs[inputs[0]].dtype
    if any(run.inputs[i].dtype != dtype for i in inputs):
        return None
    sizes = [n_coords(run.inputs[i]) for i in inputs]
    if sum(sizes) * sum(autograd_rows.row_count(run, k, rows[k]) for k in run.out_idx) > limits.TUNING.joint_screen_entries:
        return None
    stencil.prepare_steps(run, inputs)
    step = torch.cat([stencil.step_of(run, i) for i in inputs]).numpy()
    known = stencil.screen_stencil(run, inputs, rows)
    joint = JointScreen(known, list(inputs), dtype, sizes)
    for i in inputs:
        run.tier_pending.pop(i, None)
    seg = np.repeat(np.arange(len(sizes)), sizes)  # input position per row
    n_rows = np.maximum(np.array(sizes, dtype=np.float64), 1.0)[:, None]
    # numpy from here on: these matrices are small (limits.TUNING.joint_screen_entries), where a numpy call costs a
    # fraction of a torch call (a conv1d's or an MLP's check: about a fifth of its time was spent here)
    for pos, k in enumerate(run.out_idx):
        if len(inputs) == 1:  # nothing to stack
            fp, fm = known[inputs[0]][k].numpy()  # f at +h, -h: (n_i, r)
            a = analytic[(inputs[0], k)].numpy()
        else:
            fp, fm = torch.cat([known[i][k] for i in inputs], dim=1).numpy()  # f at +h, -h: (sum n_i, r)
            a = torch.cat([analytic[(i, k)] for i in inputs]).numpy()
        f0 = autograd_rows.f0_rows(run, pos, k, rows[k])[0].numpy()  # (r,)
        moved = (fp != f0) | (fm != f0)
        candidate = moved | (a != 0)  # every nonzero of autograd's: its sums are exact
        r = a.shape[1]
        flat = np.flatnonzero(candidate)  # by flat index: a few times faster than np.nonzero and masks
        j_idx = flat // r
        r_idx = flat - j_idx * r
        a_c = np.take(a, flat)
        s = seg[j_idx]
        sq = np.square(np.where(np.isfinite(a_c), a_c, 0.0))
        sums = np.bincount(s * r + r_idx, weights=sq, minlength=len(inputs) * r).reshape(len(inputs), r)
        joint.sumsq[k] = sums.sum(axis=1).tolist()
        joint.row_rms[k] = np.sqrt(sums / n_rows)  # (inputs, r)
        joint.parts[k] = (np.take(fp, flat), np.take(fm, flat), step[j_idx], a_c, s, r_idx, j_idx, np.take(moved, flat))
    return joint


def joint_screen_test(run, joint: "JointScreen", rows, extra, kap) -> dict:
    """``screen_split`` for every input of ``joint`` in one pass: per input the worst ratio per output of
    the entries the screen passed and per output the entries it left open ``(rows, columns)`` (torch),
    or ``None`` for the open entries where they span more than ``OPEN_FRACTION`` of its coordinates.
    Entries where autograd is nonzero while f did not move at ±h are left open."""
    policy = tolerances.AnalyticAllowance(joint.dtype, False)
    n = len(joint.inputs)
    offsets = [sum(joint.sizes[:p]) for p in range(n)]
    worst: dict[int, dict] = {i: {} for i in joint.inputs}
    opened: dict[int, dict] = {i: {} for i in joint.inputs}
    cols: list[set] = [set() for _ in joint.inputs]
    for pos, k in enumerate(run.out_idx):
        fpc, fmc, h, a_c, s, r_idx, j_idx, moved = joint.parts[k]  # numpy (joint_screen_prepare)
        ok = np.zeros(a_c.shape, dtype=bool)
        ratio = np.zeros(a_c.shape)
        if a_c.size:
            extra_c = np.array([extra[(i, k)] for i in joint.inputs])[s]
            row_rms = joint.row_rms[k]  # (inputs, r): its entry (s, r_idx) by flat index
            scale = np.abs(a_c) + row_rms.ravel()[s * row_rms.shape[1] + r_idx] + extra_c
            tier = joint_tier(run, joint, k, rows[k], a_c, s, j_idx, r_idx, row_rms.shape[1]) if tier_screens(run) else None
            ratio, ok, relative = screen_ratios(
                run, pos, k, rows[k], fpc, fmc, h, r_idx, a_c, policy.allowance(scale, None), kap, tier
            )
            ok = ok & moved
            if relative is not None:
                relative = np.where(moved, relative, 0.0)
                local = j_idx - np.array(offsets, dtype=j_idx.dtype)[s]
                for p, i in enumerate(joint.inputs):
                    mine = s == p
                    run.tier_pending.setdefault(i, []).append((k, rows[k], relative[mine], local[mine], r_idx[mine]))
        passed = np.where(ok, ratio, 0.0)
        bad = ~ok
        any_bad = bool(bad.any())
        none = torch.zeros(0, dtype=torch.long) if not any_bad else None
        ends = np.searchsorted(s, np.arange(n + 1)).tolist()  # the stacked rows are in input order
        for p, i in enumerate(joint.inputs):
            lo, hi = ends[p], ends[p + 1]
            worst[i][k] = float(passed[lo:hi].max()) if hi > lo else 0.0
            if not any_bad:
                opened[i][k] = (none, none)
                continue
            mine = lo + np.flatnonzero(bad[lo:hi])
            j_open = j_idx[mine] - offsets[p]
            opened[i][k] = (torch.from_numpy(j_open), torch.from_numpy(r_idx[mine]))
            cols[p].update(j_open.tolist())
    return {
        i: (worst[i], opened[i] if len(cols[p]) <= OPEN_FRACTION * joint.sizes[p] else None)
        for p, i in enumerate(joint.inputs)
    }


def joint_tier(run, joint: "JointScreen", k: int, kind: str, a_c, s, j_idx, r_idx, rows: int) -> tuple:
    """``screen_ratios``' ``tier`` for the candidates of output ``k`` of a joint screen: each entry's scale
    from its coordinate's and (Jacobian rows) its row's largest magnitude within its input's block (the
    candidates hold every nonzero of autograd's), whether its coordinate is untied, the tier's accuracy."""
    size = np.abs(np.where(np.isfinite(a_c), a_c, 0.0))
    per_coordinate = np.zeros(sum(joint.sizes))
    np.maximum.at(per_coordinate, j_idx, size)
    scale = per_coordinate[j_idx]
    if kind == "jacobian":
        per_row = np.zeros(len(joint.inputs) * rows)
        np.maximum.at(per_row, s * rows + r_idx, size)
        scale = np.maximum(scale, per_row[s * rows + r_idx])
    untied = np.concatenate([untied_coordinates(run, i) for i in joint.inputs])[j_idx]
    return scale, untied, _approximate.accuracy(joint.dtype)


def screen_candidates(run, inputs: list[int], sizes: list[int]) -> dict | None:
    """Per output, every nonzero entry of autograd's Jacobians of ``inputs`` stacked as one
    ``(sum n_i, r)`` matrix (rows, columns, values) and each input's row rms ``(inputs, r)``, as the
    ±h screen found them (numpy arrays); ``None`` unless the screen listed them all for every input."""
    state = run.full
    joint = state.joint
    if joint is not None and joint.inputs == list(inputs):
        return {k: (j, r, a, joint.row_rms[k]) for k, (_, _, _, a, _, r, j, _) in joint.parts.items()}
    prepared = state.prepared
    screens = [prepared.get(i) for i in inputs]
    if any(s is None or any(k not in s.row_rms for k in run.out_idx) for s in screens):
        return None
    offsets = np.cumsum([0] + list(sizes[:-1]))
    result = {}
    for k in run.out_idx:
        parts = [tuple(t.numpy() for t in s.candidates[k]) for s in screens]
        j_idx = np.concatenate([j + off for (j, _, _), off in zip(parts, offsets)])
        r_idx = np.concatenate([r for _, r, _ in parts])
        values = np.concatenate([a for _, _, a in parts])
        result[k] = (j_idx, r_idx, values, np.stack([s.row_rms[k].numpy() for s in screens]))
    return result


@dataclass
class Screen:
    """What the ±h screen of one input found: the stencil values, per output the entries where f moved
    (rows, columns, autograd's values there), and sums of squares of autograd's values."""

    known: dict
    candidates: dict = field(default_factory=dict)
    complete: bool = True  # autograd is zero wherever f did not move, for every output
    sumsq: dict = field(default_factory=dict)
    row_rms: dict = field(default_factory=dict)


@dataclass
class JointScreen:
    """The ±h screen of several small inputs together: per input its stencil values and size; per output
    the entries where f moved or autograd is nonzero, over the inputs' stacked matrices (``parts``: f(+h),
    f(-h), step, autograd, input position, column, stacked row, whether f moved), and per input the sums
    of squares and row rms of autograd's values (``parts`` and ``row_rms`` as numpy arrays)."""

    known: dict
    inputs: list
    dtype: torch.dtype
    sizes: list
    parts: dict = field(default_factory=dict)
    sumsq: dict = field(default_factory=dict)
    row_rms: dict = field(default_factory=dict)

    def screens(self) -> dict[int, "Screen"]:
        """Per input a ``Screen`` with its stencil values and sums of squares only (no candidates and no
        row rms: the forward-AD check reads those from the shared screen itself, ``screen_candidates``)."""
        out = {}
        for p, i in enumerate(self.inputs):
            found = Screen(self.known[i])
            found.sumsq = {k: v[p] for k, v in self.sumsq.items()}
            out[i] = found
        return out
