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

import math
from dataclasses import dataclass

import numpy as np
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


def _usable(value, err):
    xp = np if isinstance(value, np.ndarray) else torch
    return xp.isfinite(value) & xp.isfinite(err)


def int8(t):
    """``t`` as int8, a torch tensor or a numpy array alike."""
    return t.astype(np.int8) if isinstance(t, np.ndarray) else t.to(torch.int8)


def compare(analytic, est: Estimates, allowance, kappa: float) -> Verdict:
    """The verdict per derivative; ``analytic``, ``est`` and ``allowance`` all torch tensors or all numpy
    arrays (a few derivatives on the host, where numpy's calls cost a fraction of torch's), the verdict's
    fields of the same kind."""
    if isinstance(analytic, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _compare(np, analytic, est, allowance, kappa)
    return _compare(torch, analytic, est, allowance, kappa)


def _compare(xp, a, est: Estimates, allowance, kappa: float) -> Verdict:
    finite_a = xp.isfinite(a)
    c_ok_num = _usable(est.central, est.central_err)
    r_ok_num = _usable(est.right, est.right_err)
    l_ok_num = _usable(est.left, est.left_err)

    tol_c = kappa * est.central_err + allowance
    tol_r = kappa * est.right_err + allowance
    tol_l = kappa * est.left_err + allowance
    diff_c = abs(a - est.central)
    diff_r = abs(a - est.right)
    diff_l = abs(a - est.left)

    pass_c = c_ok_num & finite_a & (diff_c <= tol_c)
    pass_r = r_ok_num & finite_a & (diff_r <= tol_r)
    pass_l = l_ok_num & finite_a & (diff_l <= tol_l)

    spread = abs(est.right - est.left)
    both = r_ok_num & l_ok_num
    disagree = both & (spread > tol_r + tol_l)
    sharp = disagree & (SHARPNESS * kappa * (est.right_err + est.left_err) <= spread)
    lo = xp.minimum(est.right, est.left) - xp.maximum(tol_r, tol_l)
    hi = xp.maximum(est.right, est.left) + xp.maximum(tol_r, tol_l)
    between = sharp & finite_a & (a >= lo) & (a <= hi)
    rescue_r = pass_r & (~l_ok_num | (est.left_err > CONTAMINATION_RATIO * est.right_err))
    rescue_l = pass_l & (~r_ok_num | (est.right_err > CONTAMINATION_RATIO * est.left_err))

    unchecked = ~(c_ok_num | r_ok_num | l_ok_num)
    if est.central_trunc is not None:
        # A jump of f inside the stencil (the first derivative of abs at 0, when checking second order)
        # makes every estimate grow like 1/h: each differs from its previous Richardson level by a large
        # fraction and dwarfs autograd's value. The derivative does not exist there: not checkable.
        def blows_up(value, trunc):
            return xp.isfinite(value) & (trunc > JUMP_FRACTION * abs(value))

        magnitude = xp.minimum(xp.minimum(abs(est.central), abs(est.right)), abs(est.left))
        jump = (
            blows_up(est.central, est.central_trunc) & blows_up(est.right, est.right_trunc)
            & blows_up(est.left, est.left_trunc) & (magnitude > JUMP_DOMINANCE * (abs(a) + allowance))
            & finite_a
        )
        unchecked = unchecked | jump
    else:
        jump = xp.zeros_like(unchecked)
    cause = int8(xp.where(~(c_ok_num | r_ok_num | l_ok_num), 1, xp.where(jump, 2, 0)))
    passed = pass_c | between | rescue_r | rescue_l | unchecked
    failed = ~passed
    # At a sharp kink only values between the one-sided slopes are valid, even where the central value
    # (their average) is near enough: relu's backward giving 2 at 0 is wrong, 0, 0.5 or 1 are right.
    passed = passed & ~(sharp & ~between)
    kink = passed & (sharp | ~pass_c) & ~unchecked

    # what to show: the central value where it exists, else a usable side
    side = xp.where(r_ok_num, est.right, est.left)
    side_tol = xp.where(r_ok_num, tol_r, tol_l)
    numerical = xp.where(c_ok_num, est.central, side)
    allowed = xp.where(c_ok_num, tol_c, side_tol)
    diff = abs(a - numerical)
    ratio = xp.where(allowed > 0, diff / allowed, xp.where(diff > 0, math.inf, 0.0))
    # a check rescued by a side is as close as that side says
    side_ratio = xp.where(rescue_r, diff_r / tol_r, xp.where(rescue_l, diff_l / tol_l, xp.zeros_like(ratio)))
    ratio = xp.where(kink, side_ratio, ratio)
    ratio = xp.where(unchecked, xp.zeros_like(ratio), ratio)
    # a derivative failed by the kink rule lies outside [left, right]: say by how much, never below 1
    side_tol = xp.maximum(tol_r, tol_l)
    outside = xp.maximum(lo - a, a - hi).clip(min=0.0)
    kink_ratio = 1.0 + xp.where(side_tol > 0, outside / side_tol, xp.zeros_like(outside))
    ratio = xp.where(failed & (ratio < 1.0), xp.maximum(ratio, kink_ratio), ratio)
    ratio = xp.where(failed & ~finite_a, xp.full_like(ratio, math.inf), ratio)
    return Verdict(
        failed, kink, unchecked, numerical, allowed, xp.nan_to_num(ratio, nan=math.inf), sharp, est.left, est.right,
        cause,
    )
