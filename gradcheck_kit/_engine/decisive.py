"""A failed comparison that no second opinion can clear: the check fails whatever they find.

The second opinions after a failed full-mode comparison (``settle``: ties and kinks at the point, a second
noise sample, smaller steps; the staircase probe) exist to clear false alarms, and each costs calls of fn.
One failed entry that none of them could clear fails the check, so where they are expensive (fn's calls
take longer than the budget's floor of seconds pays for: ``budget.Budget.expensive``) they are left out
once one is seen (``budget.Budget.decided``). An entry is such a failure where the stencil at h already
shows f smooth there and its estimate settled far from autograd. The staircase probe is not left out: a
function computing part of its value in lower precision can give stencil values on a staircase that look
smooth and settled (``staircase``); its recheck in that precision, if any, gets a budget of its own.

- autograd differs from the central estimate by ``DECISIVE_RATIO`` times what was allowed (the stencil's
  own error estimate, times kappa, plus autograd's round-off): a second noise sample forgives at most
  ``RESAMPLE_RATIO`` times;
- the central estimate has converged (its error estimate at most ``PRECISION`` of its value), as refine
  asks of an estimate it settles: f changing on a scale below h (a pole next to x) leaves it unsettled;
- the right and left one-sided estimates agree with each other and with the central one within their
  error estimates, and autograd is ``SIDE_RATIO`` times their tolerance from each: no kink within the
  stencil's reach, so no one-sided slope at a smaller step lies near autograd;
- f moved over the stencil (not every value identical: outputs rounded to a coarse precision can be flat);
- the coordinate ties with no other (``ties.tie_groups``): a tie's members can each show slopes of zero
  while autograd rightly gives one of them the gradient;
- the error is beyond the approximate tier (``approximate``), where that applies: an entry the tier passes
  fails nothing, and the second opinions would still be owed to the others.

The other side (``settled_approximate``): a failed entry within the approximate tier passes whatever the
second opinions find (they only clear failures), so where they cost a call per point (fn not under vmap)
it passes so at once, and the calls they would make on it (an iterative solver's every entry) are not
made. Only where its estimate is sound enough to be listed as the approximate value: both one-sided
estimates agree with the central one (no kink within the stencil's reach), the central one's error is
at most ``PRECISION`` of the tier's scale, and the coordinate ties with no other. A second noise sample
could have passed some of these exactly: they are counted as approximate instead.
"""

from __future__ import annotations

import torch

from gradcheck_kit._engine import approximate, ties
from gradcheck_kit._engine.finite_diff import Estimates
from gradcheck_kit._engine.compare import Verdict

__all__ = ["DECISIVE_RATIO", "decisive", "settled_approximate", "sides_agree", "sides_far"]

#: a failed entry whose error is this many times its allowance, on a smooth stretch of f, is decisive
DECISIVE_RATIO = 1e4
#: ... where its central estimate's error estimate is at most this fraction of its value
PRECISION = 1e-4
#: ... and autograd is this many times the one-sided estimates' tolerance from each of them
SIDE_RATIO = 100.0


def decisive(run, i: int, k: int, block: torch.Tensor, j_idx: torch.Tensor, r_idx: torch.Tensor, est: Estimates,
             allow: torch.Tensor, verdict: Verdict, kap: float, num) -> bool:
    """Whether a failed entry of ``verdict`` is a failure no second opinion can clear: the entries
    ``(j_idx, r_idx)`` of autograd's ``(n_i, r)`` ``block`` of input ``i`` and output ``k``, their estimates
    ``est``, autograd's round-off ``allow``, the compare's ``kap``, and the stencil's values ``num``
    (``stencil.FullNumerics``)."""
    if not run.budget.expensive(run):
        return False
    a = block[j_idx, r_idx]
    diff = (a - est.central).abs()
    sure = smooth_failed(est, verdict, num.flat[j_idx, r_idx], a, kap) & torch.isfinite(diff)
    sure = sure & (verdict.ratio >= DECISIVE_RATIO) & sides_far(a, est, allow, kap, SIDE_RATIO)
    if run.options["atol"] is None and run.options["rtol"] is None and bool(sure.any()):
        jacobian = run.full.rows[k] == "jacobian"
        scale = approximate.entry_scale(block, est.central, j_idx, r_idx, jacobian)
        sure = sure & (diff > verdict.allowed + approximate.accuracy(run.inputs[i].dtype) * scale)
    return bool(untied(run, i, j_idx, sure, num).any())


def smooth_failed(est: Estimates, verdict: Verdict, flat: torch.Tensor, a: torch.Tensor, kap: float) -> torch.Tensor:
    """Failed entries where the stencil at h shows f smooth: checked, no kink, f moved, autograd finite,
    the central estimate converged (``PRECISION``) and both one-sided estimates agreeing with it."""
    sure = verdict.failed & ~verdict.unchecked & ~verdict.kink & ~flat & torch.isfinite(a)
    sure = sure & (est.central_err <= PRECISION * est.central.abs())
    return sure & sides_agree(est, kap)


def sides_agree(est: Estimates, kap: float) -> torch.Tensor:
    """Where both one-sided estimates agree with the central one within ``kap`` times their errors: no kink
    or jump within the stencil's reach."""
    agree = (est.right - est.central).abs() <= kap * (est.right_err + est.central_err)
    return agree & ((est.left - est.central).abs() <= kap * (est.left_err + est.central_err))


def sides_far(a: torch.Tensor, est: Estimates, allow, kap: float, ratio: float) -> torch.Tensor:
    """Where autograd's ``a`` is ``ratio`` times their tolerance from both one-sided estimates (a one-sided
    slope near autograd would make the failure a kink's)."""
    far = (a - est.right).abs() > ratio * (kap * est.right_err + allow)
    return far & ((a - est.left).abs() > ratio * (kap * est.left_err + allow))


def untied(run, i: int, j_idx: torch.Tensor, sure: torch.Tensor, num) -> torch.Tensor:
    """``sure`` but for the entries whose coordinate ties with another (``ties.tie_groups``)."""
    if not bool(sure.any()):
        return sure
    x = run.evaluator.base_args[i]
    tied = ties.tie_groups(x, num.step.to(torch.float64), max(abs(m) for m in run.stencil.multipliers))
    return sure & ~torch.isin(j_idx, torch.cat(tied)) if tied else sure


def settled_approximate(run, i: int, k: int, block: torch.Tensor, j_idx: torch.Tensor, r_idx: torch.Tensor,
                        est: Estimates, verdict: Verdict, kap: float, num) -> torch.Tensor:
    """The failed entries of ``verdict`` (arguments as ``decisive``'s) that pass as approximate whatever the
    second opinions find, where fn is evaluated point by point: within the approximate tier, with an
    estimate whose error is at most ``PRECISION`` of the tier's scale, on a stretch of f where both
    one-sided estimates agree with the central one (no kink), untied. Empty where the tier does not apply
    (given tolerances, ``strict``)."""
    none = torch.zeros_like(verdict.failed)
    if run.options["atol"] is not None or run.options["rtol"] is not None or run.options["strict"]:
        return none
    if not run.budget.point_by_point(run):
        return none
    a = block[j_idx, r_idx]
    sure = verdict.failed & ~verdict.unchecked & ~verdict.kink & ~verdict.sharp_kink & ~num.flat[j_idx, r_idx]
    sure = sure & sides_agree(est, kap)
    if not bool(sure.any()):
        return none
    jacobian = run.full.rows[k] == "jacobian"
    scale = approximate.entry_scale(block, est.central, j_idx, r_idx, jacobian)
    sure = sure & torch.isfinite(a) & (est.central_err <= PRECISION * scale)
    sure = sure & ((a - est.central).abs() <= verdict.allowed + approximate.accuracy(run.inputs[i].dtype) * scale)
    return untied(run, i, j_idx, sure, num)
