"""A second opinion for derivatives the central stencil could not evaluate: one-sided stencils inside the domain.

Where ``f`` is not finite on one side of ``x`` within the stencil (``sqrt`` at ``x = 1e-12`` with ``h ~ 1e-5``,
``log`` next to 0), every estimate of the central stencil is non-finite and the derivative would go
unchecked. Here each side is tried on its own, at steps ``h, h/8, h/64, ...``: forward (backward)
differences at ``s, 2s, 4s, 8s`` with Richardson extrapolation (base 2), the previous Richardson level giving
the truncation estimate, and the residual of the cubic through the five points (with a round-off model of
``eps·|f|``) the round-off, as in ``finite_diff``. The first step where a side's estimate is finite and has
converged (its error at most ``PRECISION`` of its value) decides the entry: it passes where autograd is within
``kappa·error + allowance`` of a converged side, or between two converged sides that disagree (a kink at x).

Pure: the caller supplies ``evaluate`` (f along chosen coordinates) and gets data back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.finite_diff import _richardson

__all__ = ["OneSided", "one_sided", "nothing_compared", "POINTS", "LEVELS", "FACTOR", "PRECISION"]

#: offsets of a side's points, in units of the step
POINTS = (1.0, 2.0, 4.0, 8.0)
#: steps h, h/FACTOR, ..., h/FACTOR^(LEVELS-1): down to 8^-15 ~ 3e-14 of h
LEVELS = 16
FACTOR = 8.0
#: an estimate whose error is at most this fraction of its value has converged
PRECISION = 1e-2


@lru_cache(maxsize=None)
def _weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the points ``[0, 1, 2, 4, 8]`` (units of the step, divide by it): value, previous level, noise."""
    ts = [0.0, *POINTS]
    eye = np.eye(len(ts))
    value, prev = _richardson([(eye[ts.index(p)] - eye[0]) / p for p in POINTS], base=2)
    vander = np.vander(np.array(ts), len(ts) - 1, increasing=True)
    noise = np.linalg.svd(vander.T)[2][-1]
    return value, prev, noise / np.linalg.norm(noise)


@dataclass
class OneSided:
    """Per entry: ``decided`` (a side converged), ``failed`` (of the decided), the value shown, its tolerance."""

    decided: torch.Tensor
    failed: torch.Tensor
    numerical: torch.Tensor
    allowed: torch.Tensor


def _side(values: torch.Tensor, center: torch.Tensor, step: torch.Tensor, sign: float, e: float):
    """``values``: ``(4, n)`` f at ``x + sign·p·step``; returns value, error (NaN where not finite)."""
    value_w, prev_w, noise_w = _weights()
    pts = torch.cat([center.unsqueeze(0), values])  # (5, n)
    w = lambda v: torch.as_tensor(v, dtype=pts.dtype)  # noqa: E731
    value = sign * torch.tensordot(w(value_w), pts, dims=1) / step
    prev = sign * torch.tensordot(w(prev_w), pts, dims=1) / step
    sample = torch.tensordot(w(noise_w), pts, dims=1).abs()
    model = tolerances.NOISE_MODEL_EPS * e * (pts.abs().amax(dim=0) + torch.finfo(pts.dtype).tiny)
    sigma = torch.maximum(model, sample)
    err = (value - prev).abs() + float(np.abs(value_w).sum()) * sigma / step
    bad = ~(torch.isfinite(pts).all(dim=0) & torch.isfinite(err))
    return value.masked_fill(bad, float("nan")), err.masked_fill(bad, float("nan"))


def one_sided(
    analytic: torch.Tensor,
    allowance: torch.Tensor,
    kappa: float,
    center: torch.Tensor,
    step: torch.Tensor,
    evaluate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dtype: torch.dtype,
) -> OneSided:
    """``analytic``, ``allowance``, ``center`` (f at x) and ``step`` (h) per entry, ``(n,)`` float64;
    ``evaluate(entries, offsets)`` with ``offsets`` ``(points, len(entries))`` returns f at x moved by them
    along each of those entries' coordinate, ``(points, len(entries))``. ``dtype``: the numerics' (its eps is
    the round-off model's)."""
    n = analytic.shape[0]
    e = tolerances.eps(dtype)
    decided = torch.zeros(n, dtype=torch.bool)
    failed = torch.zeros(n, dtype=torch.bool)
    numerical = torch.full((n,), float("nan"), dtype=torch.float64)
    allowed = torch.full((n,), float("nan"), dtype=torch.float64)
    mults = torch.tensor(POINTS, dtype=torch.float64).unsqueeze(1)
    for level in range(LEVELS):
        open_ = (~decided).nonzero().squeeze(1)
        if open_.numel() == 0:
            break
        s = step[open_] / FACTOR**level
        offsets = mults * s
        values = evaluate(open_, torch.cat([offsets, -offsets]))  # (2·points, open)
        right, right_err = _side(values[: len(POINTS)], center[open_], s, 1.0, e)
        left, left_err = _side(values[len(POINTS):], center[open_], s, -1.0, e)
        r_ok = torch.isfinite(right) & (right_err <= PRECISION * right.abs())
        l_ok = torch.isfinite(left) & (left_err <= PRECISION * left.abs())
        a, allow = analytic[open_], allowance[open_]
        tol_r, tol_l = kappa * right_err + allow, kappa * left_err + allow
        pass_r = r_ok & ((a - right).abs() <= tol_r)
        pass_l = l_ok & ((a - left).abs() <= tol_l)
        lo, hi = torch.minimum(right, left), torch.maximum(right, left)
        between = r_ok & l_ok & (a >= lo - torch.maximum(tol_r, tol_l)) & (a <= hi + torch.maximum(tol_r, tol_l))
        now = r_ok | l_ok
        if not bool(now.any()):
            continue
        ok = pass_r | pass_l | between
        use_right = r_ok & (pass_r | ~l_ok | (~pass_l & ((a - right).abs() <= (a - left).abs())))
        shown = torch.where(use_right, right, left)
        tol = torch.where(use_right, tol_r, tol_l)
        idx = open_[now]
        decided[idx] = True
        failed[idx] = ~ok[now]
        numerical[idx] = shown[now]
        allowed[idx] = tol[now]
    return OneSided(decided, failed, numerical, allowed)


def nothing_compared(groups, wrt, names, not_evaluable: dict, directional: bool) -> list[str]:
    """Errors for a backward check that compared nothing for an input (a check that compared nothing is never
    a pass): in full mode, inputs whose every derivative went unchecked and some could not be evaluated at all
    (``not_evaluable``, per input); in directional mode, every directional derivative unchecked."""
    backward = [g for g in groups if g.check == "backward"]
    if directional:
        if backward and all(g.compared == 0 for g in backward) and any(g.unchecked for g in backward):
            return [
                "no directional derivative could be evaluated: fn is not finite (or jumps) at x ± h·u along every "
                "random direction u, so nothing was compared. An input on the edge of fn's domain (sqrt or log "
                "at 0) gives this: mode='full' checks it element by element, with one-sided differences at the edge"
            ]
        return []
    errors = []
    for i in wrt:
        mine = [g for g in backward if g.input_index == i]
        if mine and all(g.compared == 0 for g in mine) and not_evaluable.get(i):
            errors.append(
                f"no derivative with respect to input {i} ({names[i]}) could be evaluated: fn is not finite around "
                f"its elements on either side, at every step down to h/{FACTOR:g}^{LEVELS - 1}, so nothing was "
                "compared for it. Likely causes: the input sits on the edge of fn's domain (sqrt or log at 0) "
                "or holds non-finite values"
            )
    return errors
