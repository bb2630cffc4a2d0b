"""Kinks at the point and ties: one-sided slopes along a coordinate or along a tied group, judged as a whole.

A derivative that disagrees with the central estimate may sit at a kink *at* the point: the left and right
slopes differ and any value between them is a valid (sub)gradient. In full mode the stencil's error
estimates can hide that: the noise of ``f`` is pooled over the coordinates, and where every coordinate sits
on a kink (a projection with ties) the pool is the kink's residual, ~``h`` times the jump, so the one-sided
estimates look as uncertain as the jump itself. ``sides`` measures the one-sided slopes again with the
round-off model alone as noise, at ``h`` and at ``h / STEP_FACTOR``; each side's error is the change between
the two steps plus the smaller step's own estimate, so a side that a kink near the point contaminates, or a
noisy ``f``, reads as uncertain and rescues nothing.

A kink *near* the point (closer than the smaller step's stencil reaches, a bend on a scale below it) spoils
the central estimate at both steps, while its error estimate, which assumes f smooth across the stencil,
stays small. That shows as a central value at ``h / STEP_FACTOR`` that moved from the one at ``h`` by more
than their error estimates. ``near_kink`` then lets the one-sided slopes stand for it: autograd must agree
with both sides, each side's estimate at ``h / STEP_FACTOR`` with its own error where the estimate at ``h`` or
at ``h / STEP_FACTOR**2`` (measured for these entries only) reproduces it, else with the change from ``h``
added; the sharper side's tolerance at most ``SIDE_ROUND_OFF`` times the one the entry failed against (the
round-off of a one-sided estimate at the smaller step against the central one's at h). A wrong slope
disagrees with the clean side and stays caught.

Ties need a group rule. At ``median([0.5, 0.5, 0.5, 1])`` moving one tied element alone changes nothing
(both one-sided slopes are 0), while autograd sends the gradient to one of them, a valid element of the
Clarke subdifferential. ``tie_groups`` finds the coordinates of an input that are equal up to what the
stencil can resolve (within its reach of each other); ``judge_groups`` checks each group as a whole:

- the point must be non-differentiable along the group (else ``f`` is differentiable there and the
  ordinary verdict stands): the group's slope differs from the sum of its members' slopes on some side,
  or a left and a right slope differ;
- the sum of autograd over the group lies within the group's one-sided slopes (moving every member
  together);
- each member's value lies within what the pieces allow: the closed range of its own one-sided slopes,
  widened by the excess of the group's slope over the sum of its members' slopes (the part that only moving
  them together reveals, which any member may carry). For selections such as sort, median, topk and max
  that is between 0 and the group's sum.

A wrong gradient at a tie stays caught: one outside those ranges, scaled so that the sum leaves the group's
slopes, or not finite. What no rule can tell apart is a gradient moved between members of one group.
"""

from __future__ import annotations

from dataclasses import dataclass, fields as dataclass_fields

import numpy as np
import torch

from gradcheck_kit._engine.compare import CONTAMINATION_RATIO, Verdict
from gradcheck_kit._engine.finite_diff import _weights, estimate_with_sigma, round_off_model
from gradcheck_kit._inputs import coord_index
from gradcheck_kit.report import Note, NoteCode, format_index
from gradcheck_kit._engine.tolerances import Stencil

__all__ = [
    "Sides", "sides", "join", "near_kink", "tie_groups", "kink_at_point", "judge_groups", "tie_note", "kink_note",
    "STEP_FACTOR", "SIDE_ROUND_OFF", "MAX_GROUPS", "MAX_MEMBERS", "tie_text", "ULPS", "Decision", "decide", "apply",
]

#: the second step of ``sides`` is h / STEP_FACTOR
STEP_FACTOR = 8.0
#: at most this many tie groups are judged per (input, output), each of at most MAX_MEMBERS coordinates
MAX_GROUPS = 32
MAX_MEMBERS = 256
#: directional mode ties coordinates whose values are within this many units of rounding of each other
ULPS = 4


def _side_round_off() -> float:
    """How many times the round-off of the central estimate at h a one-sided one at h / STEP_FACTOR carries
    (the larger over the float64 and lower-precision stencils)."""
    ratios = [np.abs(w.right).sum() / np.abs(w.central).sum() for w in map(_weights, (2, 3))]
    return STEP_FACTOR * float(max(ratios))


#: ``near_kink``'s tolerance may exceed the one an entry failed against by the round-off of its estimates
SIDE_ROUND_OFF = _side_round_off()


@dataclass
class Sides:
    """One-sided slopes along ``g`` directions in ``r`` rows, each ``(g, r)``, with their error estimates.

    ``sides`` adds what ``near_kink`` reads (None elsewhere): ``moved``, whether the central estimate at
    the smaller step differs from the one at ``h`` by more than the sum of their error estimates; and each
    side's own error where a neighbouring step reproduced its estimate, inf elsewhere (``right_own``,
    ``left_own``).
    """

    right: torch.Tensor
    right_err: torch.Tensor
    left: torch.Tensor
    left_err: torch.Tensor
    moved: torch.Tensor | None = None
    right_own: torch.Tensor | None = None
    left_own: torch.Tensor | None = None


#: ``Sides``' fields in order
SIDE_FIELDS = tuple(f.name for f in dataclass_fields(Sides))


def sides(
    coarse: torch.Tensor, fine: torch.Tensor, step: torch.Tensor, fmag: torch.Tensor, stencil: Stencil,
    finer: torch.Tensor | None = None,
) -> Sides:
    """One-sided slopes along ``g`` directions from the stencil's values ``(points + 1, g, r)`` (``f(x)``
    first) at the steps ``step`` ``(g,)`` (``coarse``) and ``step / STEP_FACTOR`` (``fine``); ``fmag``:
    ``|f(x)|`` in the rows ``(r,)`` (the round-off model's size). ``finer``: the values at the next smaller
    step, where measured: a side whose smaller step's estimate it reproduces has that estimate's own error."""
    levels = [(coarse, step), (fine, step / STEP_FACTOR)]
    if finer is not None:
        levels.append((finer, step / STEP_FACTOR**2))
    out = []
    for vals, h in levels:
        sigma = round_off_model(vals, fmag.view(1, -1).expand(vals.shape[1], -1), stencil)
        out.append(estimate_with_sigma(vals, h.unsqueeze(1), sigma, stencil, unit_floor=False))
    at_h, at_fine = out[:2]
    right_err = (at_h.right - at_fine.right).abs() + at_fine.right_err
    left_err = (at_h.left - at_fine.left).abs() + at_fine.left_err
    moved = (at_h.central - at_fine.central).abs() > at_h.central_err + at_fine.central_err
    right_own = _own(at_fine.right, at_fine.right_err, [e.right for e in out], [e.right_err for e in out])
    left_own = _own(at_fine.left, at_fine.left_err, [e.left for e in out], [e.left_err for e in out])
    return Sides(at_fine.right, right_err, at_fine.left, left_err, moved, right_own, left_own)


def _own(value, err, values, errs):
    """The error of a side's estimate at ``h / STEP_FACTOR`` (``value``, ``err``) where the estimate at a
    neighbouring step (``values[0]`` at h, ``values[2]`` at the next smaller step where measured) reproduces
    it within their errors; inf elsewhere."""
    same = torch.zeros_like(value, dtype=torch.bool)
    for other, other_err in zip(values[::2], errs[::2]):
        same |= (other - value).abs() <= other_err + err
    return torch.where(same, err, torch.full_like(err, float("inf")))


def join(first: Sides, second: Sides) -> Sides:
    """``first``'s directions, then ``second``'s."""
    parts = [(getattr(first, f), getattr(second, f)) for f in SIDE_FIELDS]
    return Sides(*(None if a is None or b is None else torch.cat([a, b]) for a, b in parts))


def tie_groups(x: torch.Tensor, step: torch.Tensor, reach: float) -> list[torch.Tensor]:
    """Groups (long tensors of flat coordinates, ascending) of a real input's coordinates that are equal up
    to what the stencil resolves: consecutive sorted values within ``reach`` steps of each other."""
    if x.is_complex() or x.numel() < 2:
        return []
    flat = x.detach().reshape(-1).to(torch.float64).cpu()
    order = torch.argsort(flat, stable=True)
    vals = flat[order]
    gap = vals[1:] - vals[:-1]
    link = torch.isfinite(gap) & (gap <= reach * torch.maximum(step[order[1:]], step[order[:-1]]))
    groups, start = [], 0
    for m, linked in enumerate(link.tolist() + [False]):
        if not linked:
            if m > start:
                groups.append(torch.sort(order[start:m + 1]).values)
            start = m + 1
    return groups


def kink_at_point(
    a: torch.Tensor, s: Sides, allowance: torch.Tensor, kappa: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For entries with autograd values ``a`` and their one-sided slopes (all flat, one per entry): whether
    the slopes differ beyond their estimates (a kink at the point), and whether ``a`` lies in their range."""
    err = kappa * (s.right_err + s.left_err) + 2 * allowance
    usable = torch.isfinite(s.right) & torch.isfinite(s.left) & torch.isfinite(err)
    kink = usable & ((s.right - s.left).abs() > err)
    tol = kappa * torch.maximum(s.right_err, s.left_err) + allowance
    lo = torch.minimum(s.right, s.left) - tol
    hi = torch.maximum(s.right, s.left) + tol
    return kink, kink & torch.isfinite(a) & (a >= lo) & (a <= hi)


def near_kink(a: torch.Tensor, s: Sides, allowance: torch.Tensor, kappa: float, allowed: torch.Tensor) -> Verdict:
    """For failed entries (all flat, one per entry; ``allowed``: the tolerance each failed against): which
    pass on their one-sided slopes because a kink near the point spoils the central estimate.

    The central estimate's error assumes f smooth across the stencil; where its value at ``h / STEP_FACTOR``
    differs from the one at ``h`` by more than their error estimates, it is not (``moved``: a kink near x,
    or a bend on a scale below h). The one-sided slopes at ``h / STEP_FACTOR`` then stand for it: autograd
    must agree with both (each within ``kappa`` times its error: its own where a neighbouring step reproduced
    it, else with the change from h added), and the sharper side's tolerance may be at most ``SIDE_ROUND_OFF``
    times the one the entry failed against. Returns a verdict over the entries: ``kink`` where they pass
    here, the sharper side shown."""
    err_r = torch.where(torch.isfinite(s.right_own), s.right_own, s.right_err)
    err_l = torch.where(torch.isfinite(s.left_own), s.left_own, s.left_err)
    tol_r, tol_l = kappa * err_r + allowance, kappa * err_l + allowance
    use_r = tol_r <= tol_l
    numerical = torch.where(use_r, s.right, s.left)
    tol = torch.where(use_r, tol_r, tol_l)
    usable = torch.isfinite(a) & torch.isfinite(tol_r) & torch.isfinite(tol_l) & s.moved
    agree = ((a - s.right).abs() <= tol_r) & ((a - s.left).abs() <= tol_l)
    ok = usable & agree & (tol <= SIDE_ROUND_OFF * allowed)
    ratio = (a - numerical).abs() / tol.clamp_min(1e-300)
    none = torch.zeros_like(ok)
    return Verdict(~ok, ok, none, numerical, tol, ratio, none, s.left, s.right)


def _clean(r, r_err, left, l_err):
    """A side whose error estimate is ``CONTAMINATION_RATIO`` times the other's looks contaminated (a kink
    near the point on that side, a near-tie 1 ulp away): the other side stands for it."""
    bad_r = r_err > CONTAMINATION_RATIO * l_err
    bad_l = l_err > CONTAMINATION_RATIO * r_err
    return (
        torch.where(bad_r, left, r), torch.where(bad_r, l_err, r_err),
        torch.where(bad_l, r, left), torch.where(bad_l, r_err, l_err),
    )


def judge_groups(
    a: torch.Tensor, group: Sides, members: list[Sides], allowance: torch.Tensor, kappa: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: whether the point is non-differentiable along the group, and whether the group rule passes.

    ``a`` ``(m, r)``: autograd over the group's ``m`` members; ``group``: the group's slopes ``(1, r)``;
    ``members``: its members' (each ``(1, r)``); ``allowance`` ``(m, r)``.
    """

    def stack(attr):
        return torch.cat([getattr(s, attr) for s in members])  # (m, r)

    mr, mre, ml, mle = _clean(stack("right"), stack("right_err"), stack("left"), stack("left_err"))
    sr, sre, sl, sle = _clean(group.right[0], group.right_err[0], group.left[0], group.left_err[0])
    allow = allowance.sum(0)
    # non-differentiable along the group: its slope is not the sum of its members', or a side differs
    sum_tol_r = kappa * (sre + mre.sum(0)) + allow
    sum_tol_l = kappa * (sle + mle.sum(0)) + allow
    split = ((sr - mr.sum(0)).abs() > sum_tol_r) | ((sl - ml.sum(0)).abs() > sum_tol_l)
    split = split | ((sr - sl).abs() > kappa * (sre + sle) + 2 * allow)
    split = split | ((mr - ml).abs() > kappa * (mre + mle) + 2 * allowance).any(0)
    # the sum of autograd within the group's one-sided slopes
    total = a.sum(0)
    tol = kappa * torch.maximum(sre, sle) + allow
    sum_ok = (total >= torch.minimum(sr, sl) - tol) & (total <= torch.maximum(sr, sl) + tol)
    # each member within its own one-sided slopes, widened by the excess of the group's slope over the sum
    # of its members' (the part only moving them together reveals; any member may take any share of it)
    excess_r, excess_l = sr - mr.sum(0), sl - ml.sum(0)
    zero = torch.zeros_like(excess_r)
    lo = torch.minimum(mr, ml) + torch.minimum(torch.minimum(excess_r, excess_l), zero)
    hi = torch.maximum(mr, ml) + torch.maximum(torch.maximum(excess_r, excess_l), zero)
    mtol = kappa * (torch.maximum(mre, mle) + torch.maximum(sum_tol_r, sum_tol_l) / kappa) + allowance
    member_ok = ((a >= lo - mtol) & (a <= hi + mtol)).all(0)
    finite = torch.isfinite(a).all(0) & torch.isfinite(sr) & torch.isfinite(sl) & torch.isfinite(mr).all(0)
    finite = finite & torch.isfinite(ml).all(0) & torch.isfinite(tol) & torch.isfinite(mtol).all(0)
    return split, finite & sum_ok & member_ok


def tie_text(x: torch.Tensor, name: str, members: torch.Tensor) -> str:
    """``x[0, 1] == x[0, 2]`` (``~=`` where the values are only close)."""
    flat = x.detach().reshape(-1)
    vals = flat[members]
    sign = " == " if bool((vals == vals[0]).all()) else " ~= "
    return sign.join(f"{name}{format_index(coord_index(int(j), x.shape, False)[0])}" for j in members.tolist())


def tie_note(x: torch.Tensor, name: str, members: torch.Tensor) -> Note:
    return Note(f"{tie_text(x, name, members)}: a tie; the gradient may go to any of them", NoteCode.TIE,
                (name, tuple(members.tolist())))


def kink_note(what: str, count: int, fields: tuple = ()) -> Note:
    return Note(
        f"{count} {what} sit at a kink at the point (the one-sided slopes, measured again at h/{STEP_FACTOR:g}, "
        "differ beyond their error estimates): autograd's value lies between them",
        NoteCode.KINK_AT_POINT, (*fields, count),
    )


@dataclass
class Decision:
    """What the one-sided slopes decided for the entries of a verdict (bool tensors over its entries)."""

    rescued: torch.Tensor  # failed, at a kink at the point, autograd within the one-sided range
    near: Verdict  # failed, next to a kink: autograd agrees with both one-sided slopes (``near_kink``)
    tied: torch.Tensor  # passed by their tie group's rule
    wrong: torch.Tensor  # failed by their tie group's rule (a kink-passed member included)
    left: torch.Tensor  # each entry's one-sided slopes along its coordinate (where measured)
    right: torch.Tensor
    passed_groups: list  # the groups (long tensors of coordinates) that passed some entry
    failed_groups: list  # ... and those that failed some entry


def decide(
    a: torch.Tensor, j_idx: torch.Tensor, r_idx: torch.Tensor, verdict: Verdict, allow: torch.Tensor,
    kappa: float, cols: torch.Tensor, singles: torch.Tensor, groups: list, s: Sides,
) -> Decision:
    """Judge the entries ``(j_idx, r_idx)`` of autograd's ``(n, r)`` matrix ``a`` again.

    ``s``: the slopes along each coordinate of ``singles`` (sorted), then along each group of ``groups``;
    ``cols``: the failed entries' coordinates looked at (a subset of ``singles``); ``allow``: each entry's
    allowance for autograd's round-off.
    """
    failed = verdict.failed & ~verdict.unchecked
    open_ = (verdict.failed | verdict.kink) & ~verdict.unchecked
    allow_full = torch.zeros_like(a, dtype=allow.dtype)
    allow_full[j_idx, r_idx] = allow
    at = torch.searchsorted(singles, j_idx).clamp_max(singles.numel() - 1)
    one = Sides(*(getattr(s, f)[at, r_idx] for f in SIDE_FIELDS))
    _, inside = kink_at_point(a[j_idx, r_idx], one, allow, kappa)
    looked = failed & torch.isin(j_idx, cols)
    rescued = looked & inside
    near = near_kink(a[j_idx, r_idx], one, allow, kappa, verdict.allowed)
    near.kink &= looked & ~rescued
    tied, wrong = torch.zeros_like(failed), torch.zeros_like(failed)
    passed_groups, failed_groups = [], []

    def rows(t, start, count=1):
        return t[start:start + count]

    for g, members in enumerate(groups):
        pos = singles.numel() + g
        whole = Sides(rows(s.right, pos), rows(s.right_err, pos), rows(s.left, pos), rows(s.left_err, pos))
        where = torch.searchsorted(singles, members)
        each = [
            Sides(s.right[w:w + 1], s.right_err[w:w + 1], s.left[w:w + 1], s.left_err[w:w + 1]) for w in where.tolist()
        ]
        split, ok_rows = judge_groups(a[members], whole, each, allow_full[members], kappa)
        mine = torch.isin(j_idx, members) & split[r_idx] & open_
        good, bad = mine & ok_rows[r_idx], mine & ~ok_rows[r_idx]
        tied |= good & ~rescued
        wrong |= bad
        if bool(good.any()):
            passed_groups.append(members)
        if bool(bad.any()):
            failed_groups.append(members)
    near.kink &= ~wrong & ~tied
    return Decision(rescued & ~wrong, near, tied & ~wrong, wrong, one.left, one.right, passed_groups, failed_groups)


def apply(verdict: Verdict, d: Decision) -> None:
    """Write a decision into the verdict: rescued and tied entries pass as kinks, wrong ones fail."""
    if bool(d.wrong.any()):
        verdict.failed[d.wrong] = True
        verdict.kink[d.wrong] = False
        verdict.ratio[d.wrong] = verdict.ratio[d.wrong].clamp_min(1.0)
    done = d.rescued | d.tied
    verdict.failed[done] = False
    verdict.kink[done] = True
    verdict.ratio[done] = 0.0
    verdict.sharp_kink[d.rescued] = True
    verdict.left[d.rescued], verdict.right[d.rescued] = d.left[d.rescued], d.right[d.rescued]
    near = d.near.kink
    if bool(near.any()):
        verdict.failed[near] = False
        verdict.kink[near] = True
        verdict.numerical[near], verdict.allowed[near] = d.near.numerical[near], d.near.allowed[near]
        verdict.ratio[near] = d.near.ratio[near]
