"""Autograd values + numerical estimates + allowances -> which derivatives are wrong.

Vectorised over any batch shape. A derivative passes when it matches the central estimate within
``kappa * error + allowance``. When it does not, the one-sided estimates decide:

- the point is a **kink** when the left and right slopes disagree and both are sharp: any value between
  them is a valid subgradient (relu at 0, abs at 0, ties in max);
- a kink *near* the point contaminates one side (and the central value): one side may rescue the check
  only when the other side's error estimate is more than 4x larger, i.e. it looks contaminated;
- a derivative that no estimate can be computed for (the function is not finite around the point) is
  counted as unchecked, never as passed silently.

A non-finite autograd value where a numerical value exists is always a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradcheck_kit._engine.finite_diff import Estimates

__all__ = ["Verdict", "compare", "UNCHECKED_CAUSES"]

CONTAMINATION_RATIO = 4.0
SHARPNESS = 4.0
JUMP_FRACTION = 0.1  # an estimate that moves this much between Richardson levels is not converging
JUMP_DOMINANCE = 100.0  # ... and is this many times autograd's value: f jumps inside the stencil  # |right - left| must exceed SHARPNESS * kappa * (their errors) to count as a kink


@dataclass
class Verdict:
    failed: torch.Tensor  # bool
    kink: torch.Tensor  # bool: passed because the point is (next to) a kink
    unchecked: torch.Tensor  # bool: no numerical value could be computed
    numerical: torch.Tensor  # the numerical value shown for the derivative
    allowed: torch.Tensor  # what was allowed against that value
    ratio: torch.Tensor  # |autograd - numerical| / allowed (0 where unchecked)
    sharp_kink: torch.Tensor  # bool: left and right slopes differ sharply (the point is not differentiable)
    left: torch.Tensor
    right: torch.Tensor
    #: why an unchecked entry is: one of ``UNCHECKED_CAUSES``' codes (int8; 0 where checked)
    cause: torch.Tensor | None = None
    #: |autograd - numerical| / scale where a derivative is within the approximate tier, 0 elsewhere
    #: (``approximate.apply``; None where the tier was not looked at)
    approximate: torch.Tensor | None = None


#: code of ``Verdict.cause`` -> its name (``Note.code`` is ``"unchecked_" + name``)
UNCHECKED_CAUSES = {1: "nonfinite", 2: "jump", 3: "underflow", 4: "flat"}


def _usable(value: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(value) & torch.isfinite(err)


def compare(analytic: torch.Tensor, est: Estimates, allowance: torch.Tensor, kappa: float) -> Verdict:
    a = analytic
    finite_a = torch.isfinite(a)
    c_ok_num = _usable(est.central, est.central_err)
    r_ok_num = _usable(est.right, est.right_err)
    l_ok_num = _usable(est.left, est.left_err)

    tol_c = kappa * est.central_err + allowance
    tol_r = kappa * est.right_err + allowance
    tol_l = kappa * est.left_err + allowance
    diff_c = (a - est.central).abs()
    diff_r = (a - est.right).abs()
    diff_l = (a - est.left).abs()

    pass_c = c_ok_num & finite_a & (diff_c <= tol_c)
    pass_r = r_ok_num & finite_a & (diff_r <= tol_r)
    pass_l = l_ok_num & finite_a & (diff_l <= tol_l)

    spread = (est.right - est.left).abs()
    both = r_ok_num & l_ok_num
    disagree = both & (spread > tol_r + tol_l)
    sharp = disagree & (SHARPNESS * kappa * (est.right_err + est.left_err) <= spread)
    lo = torch.minimum(est.right, est.left) - torch.maximum(tol_r, tol_l)
    hi = torch.maximum(est.right, est.left) + torch.maximum(tol_r, tol_l)
    between = sharp & finite_a & (a >= lo) & (a <= hi)
    rescue_r = pass_r & (~l_ok_num | (est.left_err > CONTAMINATION_RATIO * est.right_err))
    rescue_l = pass_l & (~r_ok_num | (est.right_err > CONTAMINATION_RATIO * est.left_err))

    unchecked = ~(c_ok_num | r_ok_num | l_ok_num)
    if est.central_trunc is not None:
        # A jump of f inside the stencil (the first derivative of abs at 0, when checking second order)
        # makes every estimate grow like 1/h: each differs from its previous Richardson level by a large
        # fraction and dwarfs autograd's value. The derivative does not exist there: not checkable.
        def blows_up(value, trunc):
            return torch.isfinite(value) & (trunc > JUMP_FRACTION * value.abs())

        magnitude = torch.minimum(torch.minimum(est.central.abs(), est.right.abs()), est.left.abs())
        jump = (
            blows_up(est.central, est.central_trunc) & blows_up(est.right, est.right_trunc)
            & blows_up(est.left, est.left_trunc) & (magnitude > JUMP_DOMINANCE * (a.abs() + allowance))
            & finite_a
        )
        unchecked = unchecked | jump
    else:
        jump = torch.zeros_like(unchecked)
    cause = torch.where(~(c_ok_num | r_ok_num | l_ok_num), 1, torch.where(jump, 2, 0)).to(torch.int8)
    passed = pass_c | between | rescue_r | rescue_l | unchecked
    failed = ~passed
    # At a sharp kink only values between the one-sided slopes are valid, even where the central value
    # (their average) is near enough: relu's backward giving 2 at 0 is wrong, 0, 0.5 or 1 are right.
    passed = passed & ~(sharp & ~between)
    kink = passed & (sharp | ~pass_c) & ~unchecked

    # what to show: the central value where it exists, else a usable side
    side = torch.where(r_ok_num, est.right, est.left)
    side_tol = torch.where(r_ok_num, tol_r, tol_l)
    numerical = torch.where(c_ok_num, est.central, side)
    allowed = torch.where(c_ok_num, tol_c, side_tol)
    diff = (a - numerical).abs()
    ratio = torch.where(allowed > 0, diff / allowed, torch.where(diff > 0, torch.inf, 0.0))
    # a check rescued by a side is as close as that side says
    side_ratio = torch.where(rescue_r, diff_r / tol_r, torch.where(rescue_l, diff_l / tol_l, torch.zeros_like(ratio)))
    ratio = torch.where(kink, side_ratio, ratio)
    ratio = torch.where(unchecked, torch.zeros_like(ratio), ratio)
    # a derivative failed by the kink rule lies outside [left, right]: say by how much, never below 1
    side_tol = torch.maximum(tol_r, tol_l)
    outside = torch.maximum(lo - a, a - hi).clamp_min(0.0)
    kink_ratio = 1.0 + torch.where(side_tol > 0, outside / side_tol, torch.zeros_like(outside))
    ratio = torch.where(failed & (ratio < 1.0), torch.maximum(ratio, kink_ratio), ratio)
    ratio = torch.where(failed & ~finite_a, torch.full_like(ratio, torch.inf), ratio)
    return Verdict(
        failed, kink, unchecked, numerical, allowed, torch.nan_to_num(ratio, nan=torch.inf), sharp, est.left, est.right,
        cause,
    )
