"""Early stop of a directional stencil: decide from ``f(x ± h·u)`` alone when the full stencil could only agree.

A directional check compares autograd's ``a = vᵀJu`` with finite differences of ``φ(t) = v·f(x + t·u)``.
With float64 numerics the full stencil evaluates ``t = ±h, ±2h`` (``Stencil(levels=2)``) and gives

- the central value ``D4 = (4·D(h) − D(2h))/3`` (``D(s) = (φ(s) − φ(−s))/2s``) with the error estimate
  ``E = |D4 − D(h)| + 1.5·σ/h``, where ``σ`` is at least the round-off model ``σ₀`` of ``φ``
  (``_finite_diff.noise_sigma`` / ``round_off_model``);
- one-sided values: ``right`` is one Richardson step over ``R(s) = (φ(s) − φ(0))/s``, so
  ``|right − R(h)|`` is its truncation estimate and its error is ``|right − R(h)| + 4·σ/h``; ``left`` alike
  over ``L(s) = (φ(0) − φ(−s))/s``.

``_compare`` passes ``a`` when ``|a − D4| ≤ κ·E + allowance``, unless the one-sided values disagree
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
``_Check._choose_numeric_dtype``) the screen is the central test alone: argument 1 holds as it stands, and
argument 2 with any ``R(h)``, ``L(h)`` around ``D(h)``; what is lost is the kink count, which the report's
check detail says.

Where ``φ`` is finite at ``±h`` but not at ``±2h`` (a domain edge between ``h`` and ``2h`` along ``u``) the
full stencil falls back on one side's estimate and could reach another verdict; the screen decides on the
points it has.
"""

from __future__ import annotations

import numpy as np
import torch

from gradcheck_kit._compare import SHARPNESS, Verdict
from gradcheck_kit._finite_diff import round_off_model, weights_for
from gradcheck_kit.tolerances import Stencil

__all__ = ["applies", "screen", "describe"]

#: one-sided differences at +-h that disagree by more than this fraction of the central one: run the full
#: stencil, which tells a kink (reported as such) from curvature
KINK_FRACTION = 0.01
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
) -> Verdict | None:
    """A verdict (every derivative passed) when ``φ(0), φ(+h), φ(−h)`` decide, else ``None``.

    ``a``: autograd's values ``(*batch)``; ``values``: ``(3, *batch)``; ``fmag``: the magnitude of ``φ`` the
    full stencil's noise model uses; ``allowance``: at most what the full comparison allows autograd;
    ``center``: whether ``values[0]`` (``φ(0)``) is known (else the central test alone decides).
    """
    if not applies(stencil):
        return None
    w = weights_for(stencil)
    sigma = round_off_model(values[0 if center else 1 : POINTS], fmag, stencil)
    central = (values[1] - values[2]) / (2 * h)
    tol = kappa * (float(np.abs(w.central).sum()) * sigma / h) + allowance
    diff = (a - central).abs()
    if center:
        right = (values[1] - values[0]) / h
        left = (values[0] - values[2]) / h
        one_sided = float(np.abs(w.right).sum() + np.abs(w.left).sum())
        no_kink = (right - left).abs() <= KINK_FRACTION * central.abs() + 0.5 * SHARPNESS * kappa * one_sided * sigma / h
    else:
        right = left = central
        no_kink = torch.ones_like(diff, dtype=torch.bool)
    ok = torch.isfinite(a) & torch.isfinite(central) & torch.isfinite(tol) & (diff <= tol) & no_kink
    if not bool(ok.all()):
        return None
    none = torch.zeros_like(ok)
    ratio = torch.where(tol > 0, diff / tol.clamp_min(1e-300), torch.zeros_like(diff))
    return Verdict(
        failed=none, kink=none, unchecked=none, numerical=central, allowed=tol, ratio=ratio,
        sharp_kink=none, left=left, right=right,
    )


def describe(stencil: Stencil) -> str:
    """The method, for a report whose every directional verdict the screen decided."""
    return (
        f"central differences at ±h (stopped there: every value agreed within the round-off of the first "
        f"difference, so the Richardson step at 2h could not have changed a verdict), h = {stencil.h0:.2g}·max(|x|, 1), "
        f"evaluated in {str(stencil.dtype).replace('torch.', '')}"
    )
