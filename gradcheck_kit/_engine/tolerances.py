"""Step sizes and tolerances, derived from the dtype and from error estimates.

Nothing here is a fixed atol/rtol. A numerical derivative carries an error estimate ``E`` (truncation
from the Richardson table, plus round-off from an empirical noise estimate of ``f``); an autograd value
carries an allowance for its own round-off. A derivative passes when::

    |autograd - numerical| <= kappa(N) * E + allowance_autograd

with ``kappa(N) = max(4, sqrt(2 ln(N / alpha)))`` for ``N`` comparisons, so the chance of a false alarm
stays near ``alpha`` however many entries are compared (see ``docs/numerics.md``).
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "eps",
    "kappa",
    "Stencil",
    "stencil_for",
    "AnalyticAllowance",
    "ALPHA",
]

#: target false-alarm probability of one whole check
ALPHA = 1e-3

# autograd round-off allowances, in units of the dtype's eps times a scale of the derivative
FLOOR_EPS = 4.0  # always allowed: a few ulps of the derivative's scale
MEASURED_FACTOR = 4.0  # times |autograd(dtype) - autograd(float64)| where a float64 run exists
CAP_EPS = 64.0  # the measured part never exceeds this (an uncapped one would hide a float32-only bug)
NO_REFERENCE_EPS = 64.0  # low precision with no float64 run: a generous blanket allowance
#: round-off model of f: this many eps of |f| (the empirical estimate is used when larger)
NOISE_MODEL_EPS = 2.0
#: an entry's own noise sample counts up to this many times the model (beyond it: non-smoothness, a kink)
PLAUSIBLE_NOISE_EPS = 1e3


@functools.cache
def eps(dtype: torch.dtype) -> float:
    if dtype.is_complex:
        dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    return float(torch.finfo(dtype).eps)


#: lower precisions a function may compute in inside, coarsest significand first
LOWER_PRECISIONS = (torch.bfloat16, torch.float16, torch.float32)


def coarsest_precision(
    tensors, candidates=LOWER_PRECISIONS, finer_than: float = 0.0, finite_only: bool = True
) -> torch.dtype | None:
    """The coarsest of ``candidates`` (coarsest significand first) whose eps is above ``finer_than`` and whose
    values every element of ``tensors`` is (their finite elements where ``finite_only``; else a NaN is no
    value of any), or None: the precision a function computed these values in. Real tensors."""
    values = [t[torch.isfinite(t)] for t in tensors] if finite_only else list(tensors)
    for dtype in candidates:
        if eps(dtype) > finer_than and all(bool((v == v.to(dtype).to(v.dtype)).all()) for v in values):
            return dtype
    return None


def kappa(n_comparisons: int, alpha: float = ALPHA) -> float:
    """Multiplier of a (roughly one-sigma) error estimate for ``n`` simultaneous comparisons."""
    n = max(int(n_comparisons), 1)
    return max(4.0, math.sqrt(2.0 * math.log(n / alpha)))


@dataclass(frozen=True)
class Stencil:
    """Central differences at ``h, 2h, ..., 2^(levels-1) h`` (times each coordinate's scale).

    ``levels=2`` with ``h ~ eps^(1/3)`` (float64 numerics: value (4 D(h) - D(2h)) / 3), ``levels=3`` with
    ``h ~ eps^(1/5)`` (float32 numerics: value (64 D(h) - 20 D(2h) + D(4h)) / 45).
    """

    levels: int
    h0: float
    dtype: torch.dtype

    @property
    def multipliers(self) -> list[float]:
        """Offsets of the evaluation points in units of h: +1, -1, +2, -2, ..."""
        out: list[float] = []
        for m in range(self.levels):
            out += [float(2**m), -float(2**m)]
        return out

    @property
    def points(self) -> int:
        return 2 * self.levels

    def describe(self) -> str:
        order = 2 * self.levels
        return (
            f"central differences at h, {', '.join(f'{2**m}h' for m in range(1, self.levels))} with Richardson "
            f"extrapolation (order {order}), h = {self.h0:.2g}·max(|x|, 1), evaluated in {str(self.dtype).replace('torch.', '')}"
        )


def stencil_for(numeric_dtype: torch.dtype) -> Stencil:
    e = eps(numeric_dtype)
    if e <= 1e-15:  # float64 numerics: two levels at the central-difference optimum eps^(1/3)
        return Stencil(levels=2, h0=2.0 ** round(math.log2(e ** (1 / 3))), dtype=numeric_dtype)
    return Stencil(levels=3, h0=2.0 ** round(math.log2(e ** (1 / 5))), dtype=numeric_dtype)


@dataclass(frozen=True)
class AnalyticAllowance:
    """How much round-off the autograd side may carry, per dtype and per available reference."""

    dtype: torch.dtype
    has_reference: bool

    def allowance(
        self,
        analytic_scale: torch.Tensor,
        measured: torch.Tensor | None,
        conditioning: torch.Tensor | None = None,
        floor_scale: torch.Tensor | None = None,
        forward_rounding: float | None = None,
    ) -> torch.Tensor:
        """``analytic_scale``: a magnitude of the derivative (|entry| + the size of its row); torch tensors or
        numpy arrays alike.

        ``floor_scale``: the scale of the floor where a float64 run exists (default ``analytic_scale``). Callers
        leave the derivative's natural size |out| / |x| out of it: that size bounds the round-off of terms
        that cancel, which the measured part sees (and the cap still allows), while in the floor it grows
        with the output, e.g. with the length of a sum, and would hide an error of every entry of the
        gradient of a float32 ``sum`` of many elements.

        ``measured``: |autograd(dtype) - autograd(float64)| where a float64 run exists. ``conditioning``:
        how far the float64 derivative moves when the low-precision inputs move by ``CAP_EPS`` roundings at
        unit scale (``allowance.full_conditioning``); the measured part may reach ``MEASURED_FACTOR`` times it, above
        the cap: an ill-conditioned expression (sin of a large argument near a zero of sin) rounds its
        float32 derivative by that much however it is computed, while a float32-only bug (a backward
        through float16) stays above it.

        ``forward_rounding``: how far the low-precision forward is from the float64 one at x, over the input's
        unit scale (``allowance.forward_rounding``); the measured part may reach ``MEASURED_FACTOR`` times it,
        above the cap: gelu's float32 tail ``x·Φ(x)`` forms ``Φ = (1 + erf)/2`` with an absolute rounding of
        eps while its derivative is 1e-8, and its forward shows that rounding (times x) where the derivative's
        own size cannot.
        """
        e = eps(self.dtype)
        # autograd's values are never finer than the spacing of subnormal numbers (eps·tiny): a float32
        # gradient of 7e-42 is stored as 6.9995e-42 however it was computed
        subnormal = FLOOR_EPS * e * self._tiny()
        if e <= 1e-15:
            return (16 * e) * analytic_scale + subnormal
        if measured is None:
            return (NO_REFERENCE_EPS * e) * analytic_scale + subnormal
        cap = self._cap(analytic_scale)
        numpy = isinstance(cap, np.ndarray)  # numpy arrays (small matrices) answered in kind
        maximum, minimum = (np.maximum, np.minimum) if numpy else (torch.maximum, torch.minimum)
        if conditioning is not None:
            cap = maximum(cap, MEASURED_FACTOR * conditioning)
        if forward_rounding is not None:
            forward = MEASURED_FACTOR * forward_rounding
            cap = maximum(cap, forward if numpy else torch.as_tensor(forward, dtype=cap.dtype))
        floor = analytic_scale if floor_scale is None else floor_scale
        return (FLOOR_EPS * e) * floor + minimum(MEASURED_FACTOR * measured, cap) + subnormal

    def capped(self, analytic_scale: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
        """Where the measured part of the allowance was cut by the cap."""
        return MEASURED_FACTOR * measured > self._cap(analytic_scale)

    def _cap(self, analytic_scale: torch.Tensor) -> torch.Tensor:
        """The most the measured part may add: CAP_EPS eps of the scale, and never below CAP_EPS subnormal
        spacings (a derivative computed through a few subnormal intermediates, a grad_output of 1e-38 in
        float32, rounds each of them by a spacing)."""
        return (CAP_EPS * eps(self.dtype)) * (analytic_scale + self._tiny())

    def _tiny(self) -> float:
        real = self.dtype.to_real() if self.dtype.is_complex else self.dtype
        return torch.finfo(real).tiny


@dataclass
class Agreement:
    """``got`` against ``want`` element by element (both widened to float64/complex128 on the CPU):
    ``diff = |got - want|``, ``allowed`` and ``bad`` (beyond ``allowed``; NaN on both sides agrees)."""

    got: torch.Tensor
    want: torch.Tensor
    diff: torch.Tensor
    allowed: torch.Tensor
    bad: torch.Tensor


def within_roundings(got: torch.Tensor, want: torch.Tensor, eps: float, roundings: float, extra: float = 0.0) -> Agreement:
    """Two results of the same computation (compiled and eager, batched and one call at a time): they may
    differ by ``roundings`` roundings ``eps`` of ``|want| + max |want|`` (a reordered sum rounds at the
    size of the largest term), plus ``extra``."""
    wide = lambda t: t.detach().to("cpu", torch.complex128 if t.is_complex() else torch.float64)  # noqa: E731
    g, w = wide(got), wide(want)
    size = w.abs().nan_to_num(0.0, 0.0, 0.0)
    scale = size.max() if w.numel() else size.new_zeros(())
    allowed = roundings * eps * (w.abs() + scale) + extra
    diff = (g - w).abs()
    bad = ~(diff <= allowed) & ~(torch.isnan(g) & torch.isnan(w))
    return Agreement(g, w, diff, allowed, bad)

