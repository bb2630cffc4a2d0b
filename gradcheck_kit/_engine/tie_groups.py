"""Ties in directional mode: found in inputs of any size, moved together, and judged by the group rule.

A direction that moves tied elements apart crosses the kink between them, so the directions move each tie
as one (``together``). A projection ``u·g`` then sees only the sum of autograd over a tie, not how it is
shared: a backward that sends a tie's gradient to an element outside it, or doubles it, where the sum of
the rows over the tie is 0 (sparsemax, a soft rank), would pass. ``judge`` checks the ties the way full
mode does (``ties.judge_groups``): for each projection ``v_k·out_k`` the one-sided slopes along each member
and along the whole tie, measured at ``h`` and ``h / STEP_FACTOR``; the sum of autograd over the tie within
the tie's one-sided slopes, each member within what the pieces allow (for selections: between 0 and the
sum). At most ``MAX_GROUPS`` ties of at most ``MAX_MEMBERS`` elements are judged (those with the largest
gradients), ``DIRECTIONS`` directions in all: ``(members + 1) · 2 · points`` evaluations each.

At an exact tie the pieces meet at x and the rule decides. At a near-tie a piece as narrow as the gap (at
sparsemax's support boundary, autograd's) lies between the slopes that steps far wider than the gap see:
a failure there is no verdict on its own, the caller settles it with a full check (``GroupVerdict.exact``).

``scan`` finds the ties as full mode does (``ties.tie_groups``: values within the stencil's reach of each
other), or where that chains more than ``ties.MAX_MEMBERS`` together, values within ``ULPS`` roundings:
one sort. The sort of a large input costs more than a forward of a cheap function, so inputs above
``EAGER_LIMIT`` elements are scanned only once a projection has failed (it may have crossed a tie's kink),
and checked again with their ties moved together where some values are equal (random values of that size
hold near-ties by chance, which would double the cost of every failed check). Near-ties are judged only in
inputs of up to ``NEAR_LIMIT`` elements, larger inputs' ties of equal values only, at a smaller budget
(random values of a few thousand elements hold near-ties, and in float32 some equal pairs, by chance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.ties import MAX_MEMBERS as CHAIN_LIMIT
from gradcheck_kit._engine.ties import STEP_FACTOR, ULPS, Sides, judge_groups, sides
from gradcheck_kit._engine.tolerances import Stencil

__all__ = [
    "Ties", "scan", "has_equal", "together", "pick", "judge", "GroupVerdict", "EAGER_LIMIT", "NEAR_LIMIT", "MAX_GROUPS",
    "MAX_MEMBERS", "DIRECTIONS", "LARGE_DIRECTIONS", "ALLOW_EPS",
]

#: inputs of up to this many elements are scanned before the first projection
EAGER_LIMIT = 4096
#: inputs of up to this many elements have their near-ties (within the stencil's reach, not equal up to
#: rounding) judged, and their ties judged where a projection failed already: random values of a few
#: thousand elements hold some such pairs, whose judging would cost more evaluations than the projections
NEAR_LIMIT = 64
#: ties judged per input, each of at most MAX_MEMBERS elements (larger ties: only moved together)
MAX_GROUPS = 8
MAX_MEMBERS = 16
#: ... and at most this many directions (members and ties) in all: 2 · points evaluations each; above
#: NEAR_LIMIT elements (random values of that size hold some equal pairs by chance, where judging costs a
#: multiple of the projections) LARGE_DIRECTIONS
DIRECTIONS = 24
LARGE_DIRECTIONS = 8
#: autograd's round-off allowance per member: this many eps of its dtype times the member's value plus the
#: rms of the row (a difference of intermediates of that size)
ALLOW_EPS = 64.0
#: direction points per evaluation batch (times the input's size: the memory of one batch)
BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Ties:
    """The ties of one input: ``order`` sorts its flat coordinates, ``start[p]`` is the first sorted position
    tied with sorted position ``p`` (``p`` itself where untied); ``equal`` the same for the ties of equal
    values only."""

    order: torch.Tensor
    start: torch.Tensor
    equal: torch.Tensor


def scan(x: torch.Tensor, step: torch.Tensor, reach: float) -> Ties | None:
    """The ties of a real input ``x`` (``step``: each coordinate's step): consecutive sorted values within
    ``reach`` steps (or ``ULPS`` roundings) of each other; where that chains more than the tie limit together,
    only those within ``ULPS`` roundings; None where there is no tie (or only ties too large to move as one).
    Computed in numpy on the host (a sort and a few passes, each a fraction of a torch call's overhead), the
    differences of neighbours in ``x``'s dtype (float32 for the half types numpy lacks)."""
    if x.is_complex() or x.numel() < 2 or not x.dtype.is_floating_point:
        return None
    flat = x.detach().reshape(-1).cpu()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.to(torch.float32)
    order = np.argsort(flat.numpy(), kind="stable")
    vals = flat.numpy()[order]
    eps = torch.finfo(x.dtype).eps
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(vals[1:] - vals[:-1]).astype(np.float64)
        close = gap <= ULPS * eps * np.maximum(np.abs(vals[1:]), np.abs(vals[:-1])).astype(np.float64)
        st = step.reshape(-1).to(torch.float64).cpu().numpy()[order]
        near = close | (gap <= reach * np.maximum(st[1:], st[:-1]))
    pos = np.arange(1, vals.size)
    starts = []
    for same in (near, close, gap == 0):
        same = np.isfinite(gap) & same
        starts.append(np.maximum.accumulate(np.concatenate([[0], np.where(same, 0, pos)])))
    for start in starts[:2]:
        if (start[1:] == start[:-1]).any() and np.bincount(start).max() <= CHAIN_LIMIT:
            return Ties(torch.from_numpy(order), torch.from_numpy(start), torch.from_numpy(starts[2]))
    return None


def has_equal(ties: Ties | None) -> bool:
    """Whether some values are equal (not only close): a kink exactly at x wherever fn selects among them."""
    return ties is not None and bool((ties.equal[1:] == ties.equal[:-1]).any())


def together(u: torch.Tensor, ties: Ties | None) -> torch.Tensor:
    """Directions ``u`` ``(d, n)`` made equal over each tie (the first member's sign for all)."""
    if ties is None:
        return u
    u = u.clone()
    u[:, ties.order] = u[:, ties.order[ties.start]]
    return u


def pick(ties: Ties | None, a: torch.Tensor) -> list[torch.Tensor]:
    """The ties to judge (each a long tensor of flat coordinates, ascending): those of at most
    ``MAX_MEMBERS`` elements with the largest autograd values (``a`` ``(n, r)``: a misplaced gradient shows
    where there is gradient) first, at most ``MAX_GROUPS`` and ``DIRECTIONS`` directions (members and ties).
    Above ``NEAR_LIMIT`` elements only ties of equal values, ``LARGE_DIRECTIONS`` directions in all."""
    if ties is None:
        return []
    small = ties.start.numel() <= NEAR_LIMIT
    start, budget = (ties.start, DIRECTIONS) if small else (ties.equal, LARGE_DIRECTIONS)
    n = start.numel()
    sizes = torch.bincount(start, minlength=n)
    weight = a.abs().nan_to_num(float("inf")).sum(1).to(torch.float64)[ties.order]
    weight = torch.zeros(n, dtype=torch.float64).index_add_(0, start, weight)
    firsts = ((sizes >= 2) & (sizes <= MAX_MEMBERS)).nonzero().reshape(-1)
    firsts = firsts[torch.argsort(weight[firsts], descending=True, stable=True)][:MAX_GROUPS]
    out, directions = [], 0
    for f, size in zip(firsts.tolist(), sizes[firsts].tolist()):
        if out and directions + size + 1 > budget:
            break
        out.append(torch.sort(ties.order[f:f + size]).values)
        directions += size + 1
    return out


@dataclass(frozen=True)
class GroupVerdict:
    """One judged tie in one row: whether the group rule passed, with the sum of autograd over the tie and
    the tie's one-sided slopes (for the report). ``exact``: the members' values are equal, so the pieces meet
    at x; at a near-tie a piece as narrow as the gap (autograd's, at sparsemax's support boundary) lies
    between the slopes measured, and a failed rule is no verdict on its own."""

    members: torch.Tensor
    row: int
    exact: bool
    split: bool  # fn is not differentiable along the tie (else ``ok`` is the ordinary check of each member)
    ok: bool
    total: float
    left: float
    right: float
    allowed: float


def _evaluate_sides(
    along: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], masks: torch.Tensor, dstep: torch.Tensor,
    center: torch.Tensor, fmag: torch.Tensor, stencil: Stencil,
) -> Sides:
    """One-sided slopes along the ``masks`` ``(m, n)`` directions at ``dstep`` ``(m,)`` and a step
    ``STEP_FACTOR`` times smaller, in batches of at most ``BATCH_ELEMENTS`` points' elements."""
    mults = torch.tensor(stencil.multipliers, dtype=torch.float64)
    p, (m, n) = mults.numel(), masks.shape
    chunk = max(1, BATCH_ELEMENTS // max(1, 2 * p * n))
    parts = []
    for lo in range(0, m, chunk):
        ds, mk = dstep[lo:lo + chunk], masks[lo:lo + chunk]
        offsets = torch.cat([mults.unsqueeze(1) * ds, mults.unsqueeze(1) * (ds / STEP_FACTOR)])
        parts.append(along(mk, offsets))  # (2p, chunk, r)
    values = torch.cat(parts, 1)
    lead = center.view(1, 1, -1).expand(1, m, -1)
    coarse, fine = torch.cat([lead, values[:p]]), torch.cat([lead, values[p:]])
    return sides(coarse, fine, dstep, fmag, stencil)


def judge(
    x: torch.Tensor, a: torch.Tensor, groups: list[torch.Tensor],
    along: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    center: torch.Tensor, fmag: torch.Tensor, step: torch.Tensor, stencil: Stencil, dtype: torch.dtype,
    kappa: float,
) -> list[GroupVerdict]:
    """The group rule for each tie of ``groups`` in each row of autograd's ``a`` ``(n, r)`` at the input's flat
    values ``x`` (``r`` projections of the outputs; ``dtype``: autograd's).

    ``along(masks, offsets)``: the ``r`` projections at ``x + offsets[p, m] · masks[m]`` (``masks``
    ``(m, n)`` float64, ``offsets`` ``(points, m)``), ``(points, m, r)``; ``center``, ``fmag``: the
    projections and their magnitude at x ``(r,)``; ``step``: each coordinate's step ``(n,)``.
    """
    if not groups:
        return []
    n = a.shape[0]
    singles = torch.unique(torch.cat(groups))
    masks = torch.zeros(singles.numel() + len(groups), n, dtype=torch.float64)
    masks[torch.arange(singles.numel()), singles] = 1.0
    for g, members in enumerate(groups):
        masks[singles.numel() + g, members] = 1.0
    step = step.reshape(-1).to(torch.float64).cpu()
    dstep = torch.cat([step[singles], torch.stack([step[g].max() for g in groups])])
    s = _evaluate_sides(along, masks, dstep, center, fmag, stencil)
    a = a.to(torch.float64)
    rms = a.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0).square().mean(0).sqrt()
    allowance = ALLOW_EPS * tolerances.eps(dtype) * (a.abs().nan_to_num(0.0) + rms)
    out = []

    def rows(pos: int) -> Sides:
        return Sides(*(getattr(s, f)[pos:pos + 1] for f in ("right", "right_err", "left", "left_err")))

    for g, members in enumerate(groups):
        where = torch.searchsorted(singles, members).tolist()
        whole = rows(singles.numel() + g)
        split, ok = judge_groups(a[members], whole, [rows(w) for w in where], allowance[members], kappa)
        total = a[members].sum(0)
        vals = x.reshape(-1)[members]
        exact = bool((vals == vals[0]).all())
        for r in range(a.shape[1]):
            out.append(GroupVerdict(
                members, r, exact, bool(split[r]), bool(ok[r]), float(total[r]), float(whole.left[0, r]),
                float(whole.right[0, r]),
                float(kappa * torch.maximum(whole.right_err[0, r], whole.left_err[0, r]) + allowance[members, r].sum()),
            ))
    return out
