"""Kinks near, not at, the point: the stencil crosses them, and smaller steps stay on their clean side.

A kink between ``h`` and ``2h`` of the point (relu at ``x - 1.3h``) leaves the points at ``+-h`` and one side
of ``+-2h`` on one smooth piece and the last point on the other. The central Richardson value is then off by
a fraction of the jump in slope, and its truncation estimate grows with it: a wrong derivative within
``kappa`` times that estimate passes, even one wrong by a good fraction of the slope. The one-sided estimates tell:
the side whose points are all on one piece is sharp, the other side and the central value are not.

``suspects`` finds entries that passed on the central value while a side is sharp (its error estimate is
``CONTAMINATION_RATIO`` times below the central's and the other side's) and disagrees with autograd.
``settle`` judges them again at the smaller steps ``h / 8^level`` until the stencil lies on one piece
(the kink is then more than ``2 h / 8^level`` away): a verdict there that is not itself suspect decides. A
wrong slope fails with the clean estimate; the tolerance is never widened.

A smooth function can show the same pattern by coincidence (a one-sided truncation term that cancels, x³ at
``x = -h``); there the smaller step's estimates agree with autograd and the entry passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradcheck_kit._engine.compare import CONTAMINATION_RATIO, Verdict, compare
from gradcheck_kit._engine.finite_diff import Estimates
from gradcheck_kit.report import Note, NoteCode

__all__ = ["suspects", "settle", "Settled", "apply", "note", "STEP_FACTOR", "LEVELS", "PRECISION"]

#: the smaller steps are h / STEP_FACTOR^level, level = 1 .. LEVELS (down to ~1e-9 of h)
STEP_FACTOR = 8.0
LEVELS = 10
#: a failing estimate at a smaller step decides only where it has converged: its error at most this
#: fraction of its value (else the next level looks again)
PRECISION = 1e-2


def suspects(a: torch.Tensor, est: Estimates, allowance: torch.Tensor, kappa: float, verdict: Verdict) -> torch.Tensor:
    """Entries that passed on a central value a kink inside the stencil may have spoiled (bool); torch
    tensors or numpy arrays alike (``compare``)."""
    xp = np if isinstance(a, np.ndarray) else torch
    usable = xp.isfinite(est.right_err) & xp.isfinite(est.left_err) & xp.isfinite(est.central_err)
    r_sharp = (CONTAMINATION_RATIO * est.right_err < est.central_err) & (CONTAMINATION_RATIO * est.right_err < est.left_err)
    l_sharp = (CONTAMINATION_RATIO * est.left_err < est.central_err) & (CONTAMINATION_RATIO * est.left_err < est.right_err)
    off_r = abs(a - est.right) > kappa * est.right_err + allowance
    off_l = abs(a - est.left) > kappa * est.left_err + allowance
    passed = ~verdict.failed & ~verdict.unchecked & ~verdict.sharp_kink
    return passed & usable & xp.isfinite(a) & ((r_sharp & off_r) | (l_sharp & off_l))


@dataclass
class Settled:
    """What the smaller steps decided for the suspects (each tensor over the suspects, in their order)."""

    failed: torch.Tensor  # bool: a clean estimate disagrees with autograd
    decided: torch.Tensor  # bool: some level decided (else the verdict at h stands)
    numerical: torch.Tensor  # the deciding estimate (nan where undecided)
    allowed: torch.Tensor
    level: torch.Tensor  # the deciding level (0 where undecided)


def settle(
    a: torch.Tensor,
    allowance: torch.Tensor,
    kappa: float,
    estimates_at: Callable[[int, torch.Tensor], Estimates],
    levels: int = LEVELS,
) -> Settled:
    """Judge the suspects ``a`` (autograd's values, with their ``allowance``) at steps ``h / 8^level``.

    ``estimates_at(level, open_)``: the estimates at that level for the suspects whose positions are in
    ``open_`` (a long tensor, in order). At each level an entry is decided when its verdict there is a pass
    that is not itself suspect, or a failure with a converged central estimate (``PRECISION``).
    """
    n = a.numel()
    failed = torch.zeros(n, dtype=torch.bool)
    decided = torch.zeros(n, dtype=torch.bool)
    numerical = torch.full((n,), float("nan"), dtype=a.dtype)
    allowed = torch.full((n,), float("nan"), dtype=a.dtype)
    level_of = torch.zeros(n, dtype=torch.long)
    open_ = torch.arange(n)
    for level in range(1, levels + 1):
        if open_.numel() == 0:
            break
        est = estimates_at(level, open_)
        a_o, allow_o = a[open_], allowance[open_]
        verdict = compare(a_o, est, allow_o, kappa)
        again = suspects(a_o, est, allow_o, kappa, verdict)
        precise = torch.isfinite(est.central) & (est.central_err <= PRECISION * est.central.abs() + allow_o)
        passes = ~verdict.failed & ~verdict.unchecked & ~again
        fails = verdict.failed & precise
        done = passes | fails
        if bool(done.any()):
            at = open_[done]
            decided[at] = True
            failed[at] = fails[done]
            numerical[at] = verdict.numerical[done]
            allowed[at] = verdict.allowed[done]
            level_of[at] = level
        open_ = open_[~done]
    return Settled(failed, decided, numerical, allowed, level_of)


def apply(verdict: Verdict, idx: torch.Tensor, settled: Settled, a: torch.Tensor) -> tuple[int, int, int]:
    """Write what ``settle`` decided for the entries ``idx`` of a flat ``verdict`` (``a``: autograd's values
    there); returns how many were decided, how many of them failed, and the deepest level used."""
    decided = settled.decided
    done = idx[decided]
    if done.numel() == 0:
        return 0, 0, 0
    numerical, tol = settled.numerical[decided], settled.allowed[decided]
    verdict.failed[done] = settled.failed[decided]
    verdict.numerical[done] = numerical
    verdict.allowed[done] = tol
    verdict.ratio[done] = (a[decided] - numerical).abs() / tol.clamp_min(1e-300)
    return int(done.numel()), int(settled.failed.sum()), int(settled.level.max())


def note(what: str, decided: int, wrong: int, level: int, fields: tuple = ()) -> Note:
    """The report's note on ``decided`` derivatives (``what``: which; ``fields``: its input and output where
    it has them) judged again down to ``level``."""
    return Note(
        f"{decided} {what} passed at h only within an error estimate that a sharp one-sided estimate contradicts "
        "(a kink inside the stencil, or fn changes on a scale below h): judged again at a smaller step (down to "
        f"h/{STEP_FACTOR**level:g}), {wrong} of them wrong",
        NoteCode.KINK_IN_STENCIL, (*fields, decided, wrong, level),
    )
