"""Numerical derivatives with error estimates. Pure: never raises a mismatch, never calls autograd.

Every estimate here is a linear combination of the function's values at the stencil points
``f(x + t·h)`` for ``t`` in ``0, +1, -1, +2, -2, ...`` (times each coordinate's step). The weights are
computed once per stencil, so each estimate and its error terms are one ``tensordot``:

- the central value (Richardson over central differences) and its truncation estimate,
- the right and left one-sided values (Richardson over forward / backward differences), used to tell a
  kink (left and right slopes differ) from a wrong gradient,
- an empirical noise sample of ``f`` (the residual of the highest-degree polynomial the points allow),
  which, with a round-off model, bounds the round-off part of each estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.limits import NUMPY_ELEMENTS
from gradcheck_kit._engine.tolerances import Stencil

__all__ = [
    "Weights", "weights_for", "Estimates", "estimate", "noise_sigma", "round_off_model", "rough", "lattice",
    "estimate_with_sigma", "host_array",
]


@dataclass(frozen=True)
class Weights:
    """Weights over the points ``[0, +1, -1, +2, -2, ...]`` (in units of h; divide by h to use)."""

    central: np.ndarray
    central_prev: np.ndarray  # the previous Richardson level: |central - prev| estimates truncation
    right: np.ndarray
    right_prev: np.ndarray
    left: np.ndarray
    left_prev: np.ndarray
    noise: np.ndarray  # unit-norm residual weights: kill polynomials of the highest degree the points allow


def _richardson(values: list[np.ndarray], base: int) -> tuple[np.ndarray, np.ndarray]:
    table = [list(values)]
    for k in range(1, len(values)):
        factor = float(base**k)
        prev = table[-1]
        table.append([(factor * prev[m] - prev[m + 1]) / (factor - 1) for m in range(len(prev) - 1)])
    best = table[-1][0]
    previous = table[-2][0] if len(table) > 1 else table[-1][0]
    return best, previous


@lru_cache(maxsize=None)
def _weights(levels: int) -> Weights:
    ts = [0.0]
    for m in range(levels):
        ts += [float(2**m), -float(2**m)]
    n = len(ts)
    eye = np.eye(n)
    f0 = eye[0]

    def at(t: float) -> np.ndarray:
        return eye[ts.index(t)]

    steps = [float(2**m) for m in range(levels)]
    central, central_prev = _richardson([(at(s) - at(-s)) / (2 * s) for s in steps], base=4)
    right, right_prev = _richardson([(at(s) - f0) / s for s in steps], base=2)
    left, left_prev = _richardson([(f0 - at(-s)) / s for s in steps], base=2)
    vander = np.vander(np.array(ts), n - 1, increasing=True)  # columns t^0 .. t^(n-2)
    _, _, vt = np.linalg.svd(vander.T)
    noise = vt[-1] / np.linalg.norm(vt[-1])
    return Weights(central, central_prev, right, right_prev, left, left_prev, noise)


def weights_for(stencil: Stencil) -> Weights:
    return _weights(stencil.levels)


@dataclass
class Estimates:
    """Numerical derivatives (value and error estimate) for a batch of derivatives of any shape."""

    central: torch.Tensor
    central_err: torch.Tensor
    right: torch.Tensor
    right_err: torch.Tensor
    left: torch.Tensor
    left_err: torch.Tensor
    #: the truncation parts of the errors (|value - previous Richardson level|), without round-off
    central_trunc: torch.Tensor | None = None
    right_trunc: torch.Tensor | None = None
    left_trunc: torch.Tensor | None = None


def _apply(w: np.ndarray, values):
    """``w`` ``(points,)`` or ``(m, points)`` over the first dimension of ``values`` ``(points, *batch)``
    (a torch tensor or a numpy array)."""
    lead = w.shape[:-1]
    wt = w if isinstance(values, np.ndarray) else _weight_tensor(w.tobytes(), w.shape, values.dtype, values.device)
    flat = values.reshape(values.shape[0], -1)
    return (wt.reshape(-1, w.shape[-1]) @ flat).reshape(*lead, *values.shape[1:])


def host_array(t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy array on the host (no copy where numpy can read it as it is)."""
    return t.detach().cpu().resolve_neg().resolve_conj().numpy()


@lru_cache(maxsize=64)
def _weight_tensor(data: bytes, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.float64).reshape(shape).copy()).to(device, dtype)



def _rms(t):
    """Root mean square, also of finite values whose squares overflow (above 1e154): scaled by max |t|.
    A torch tensor gives a 0-d tensor; a flat numpy array (full mode's small inputs, where a numpy call
    costs a fraction of a torch call) gives a float."""
    if isinstance(t, np.ndarray):
        if not t.size:
            return math.nan
        with np.errstate(over="ignore"):
            mean_square = float(np.dot(t, t)) / t.size
        if math.isfinite(mean_square) or not bool(np.isfinite(t).all()):
            return math.sqrt(mean_square)
        top = float(np.abs(t).max())
        return top * math.sqrt(float(np.dot(t / top, t / top)) / t.size)
    if t.dtype == torch.float64 and t.device.type == "cpu" and t.numel() <= NUMPY_ELEMENTS and not t.is_neg():
        return torch.tensor(_rms(t.detach().reshape(-1).numpy()), dtype=torch.float64)  # a few numpy calls, not five torch ops
    mean_square = t.square().mean()
    if bool(torch.isfinite(mean_square)) or not bool(torch.isfinite(t).all()):
        return mean_square.sqrt()
    top = t.abs().amax()
    return top * (t / top).square().mean().sqrt()


def round_off_model(
    values: torch.Tensor, fmag: torch.Tensor, stencil: Stencil, whole: torch.Tensor | None = None
) -> torch.Tensor:
    """The round-off model of ``f`` (a floor of :func:`noise_sigma`) from the points in ``values``.

    Monotone in the points: computed from some of a stencil's points it is at most the value from all of
    them (what lets a directional check stop after the first points, see ``screen``). ``whole``: the
    magnitudes of every row the derivatives belong to, whose rms scales the model (default ``fmag``: a
    few entries of a matrix are modelled as they are among all of it). Torch tensors or numpy arrays alike.
    """
    xp = np if isinstance(values, np.ndarray) else torch
    e = tolerances.eps(stencil.dtype)
    # round-off model: eps of |f| plus eps of the output's typical size. An entry far below its siblings is
    # often the difference of large intermediates (gelu's tail is x * (1 + erf) with erf ~ -1) whose
    # rounding is a staircase the stencil cannot see: it is flat, then jumps by an ulp of the intermediate.
    f_scale = _rms(fmag if whole is None else whole)
    # |f| at the stencil points too, not only at x: where the step dwarfs x (x = 1e-200), f(x) can be 0
    # while f(x +- h) ~ h^2, whose rounding swallows the difference a derivative needs
    if xp is np:  # np.where: np.nan_to_num is a Python wrapper of several numpy calls
        at_points = abs(values)
        at_points = np.where(np.isfinite(at_points), at_points, 0.0).max(axis=0)
    else:
        at_points = values.abs().nan_to_num(0.0, posinf=0.0).amax(dim=0)
    # and never below the spacing of subnormal numbers (eps·tiny), which eps·|f| underflows past: an f
    # of 1e-313 carries an absolute rounding of 5e-324, 3e-11 of itself
    tiny = torch.finfo(stencil.dtype).tiny
    return tolerances.NOISE_MODEL_EPS * e * (xp.maximum(fmag, at_points) + f_scale + tiny)


def rough(values: torch.Tensor, fmag: torch.Tensor, stencil: Stencil) -> torch.Tensor:
    """Where the stencil's residual of ``values`` ``(points, m)`` is beyond what the noise model allows as
    rounding (``noise_sigma`` caps it there): rounding above the model's, or a kink."""
    w = torch.as_tensor(weights_for(stencil).noise, dtype=values.dtype)
    sample = (w @ values.reshape(values.shape[0], -1)).abs().reshape(values.shape[1:])
    model = round_off_model(values, fmag, stencil)
    return sample.nan_to_num(0.0) > tolerances.PLAUSIBLE_NOISE_EPS * model


def lattice(values: torch.Tensor) -> torch.Tensor:
    """Per entry of ``values`` ``(points, m)``: the largest power of two of which every difference from the
    first point is a whole multiple (0 where f does not move). A smooth function's differences end in
    bits of the size of its own ulp; a value rounded through an intermediate far larger than itself
    (``1 - cos(a)`` rounds ``cos(a)`` at 1) moves in whole ulps of that intermediate."""
    d = (values[1:].to(torch.float64) - values[:1].to(torch.float64)).abs()
    mantissa, exponent = torch.frexp(d)
    whole = (mantissa * 2.0**53).to(torch.int64)
    low = (whole & -whole).to(torch.float64) * torch.pow(2.0, (exponent - 53).to(torch.float64))
    low = torch.where((d > 0) & torch.isfinite(d), low, torch.full_like(low, torch.inf))
    low = low.amin(dim=0)
    return torch.where(torch.isfinite(low), low, torch.zeros_like(low))


def noise_sigma(
    values: torch.Tensor, fmag: torch.Tensor, stencil: Stencil, pool_dim: int | None = None,
    whole: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round-off level of ``f`` for each derivative of ``values`` (shape ``(points, *batch)``); ``whole``
    as in ``round_off_model``. Without ``pool_dim`` it is at most the pooled value of the same entries.
    Torch tensors or numpy arrays alike (numpy: without ``pool_dim``)."""
    w = weights_for(stencil)
    sample = abs(_apply(w.noise, values))
    model = round_off_model(values, fmag, stencil, whole)
    top = fmag.max() if whole is None else whole.max()
    # The residual of one derivative is noise (round-off of f, which can be far above eps|f| where terms
    # cancel) or non-smoothness (a kink inside the stencil leaves a residual ~ h x the jump). Round-off of
    # that size is implausible, so the entry's own sample counts up to a cap far below h; the pooled median
    # of the row's derivatives (x 1.48: the median of |N(0, s)| is 0.674 s) stands for noise shared by the row.
    plausible = tolerances.PLAUSIBLE_NOISE_EPS * model + 1e-6 * stencil.h0 * (fmag + top)
    xp = np if isinstance(values, np.ndarray) else torch
    sigma = xp.maximum(model, xp.minimum(sample, plausible))
    if pool_dim is not None and sample.shape[pool_dim] > 1:
        # pool over the derivatives where f moved: a coordinate f does not depend on has an exactly zero
        # residual that says nothing about noise (in a sparse Jacobian it would pull the median to 0)
        moved = ~(values[1:] == values[0]).all(dim=0)
        pool = torch.where(moved, sample.nan_to_num(nan=torch.inf), torch.nan)
        pooled = (1.4826 * pool.nanmedian(dim=pool_dim, keepdim=True).values).nan_to_num(0.0)
        # a median of fewer than 3 samples is no protection against the one kink among them
        pooled = torch.where(moved.sum(dim=pool_dim, keepdim=True) >= 3, pooled, torch.zeros_like(pooled))
        sigma = torch.maximum(sigma, pooled)
    return sigma


def estimate_with_sigma(
    values: torch.Tensor,
    h: torch.Tensor,
    sigma: torch.Tensor,
    stencil: Stencil,
    *,
    x_abs: torch.Tensor | None = None,
    unit_floor: bool = True,
) -> Estimates:
    """Estimates from ``values`` of shape ``(points, *batch)`` and the noise ``sigma`` of ``f``.

    ``h``: the absolute step of each derivative (broadcasts to ``batch``); ``x_abs``: |x| of the perturbed
    coordinate (the point ``x + h`` is rounded, an error of about ``eps |x| / h`` relative).

    ``unit_floor``: that relative error is taken for ``|x|`` at least 1, the scale below which steps stop
    shrinking (``scale_of``): a function computed through intermediates of that size (``log(1 + x/10)``
    near 0 forms ``1 + x/10``) rounds them by ``eps`` however small x and f are, which no ``eps |f|``
    model sees. A relative floor of about ``eps / h0`` (1e-10 with float64 numerics), far below any
    gradient bug. Off for the second opinion at smaller steps (``settle.refine``), where it would grow
    with ``1/h`` past what steep functions computed at the scale of x (``1/x`` at 1e-12) need.

    Torch tensors or numpy arrays alike (the estimates of the same kind).
    """
    xp = np if isinstance(values, np.ndarray) else torch
    e = tolerances.eps(stencil.dtype)
    if unit_floor:
        scale = (np.ones(()) if xp is np else torch.ones((), dtype=values.dtype)) if x_abs is None else x_abs.clip(min=1.0)
    else:
        scale = x_abs

    # the three values and their previous Richardson levels in one product: (6, *batch)
    combined = _apply(_stacked(stencil.levels), values) / h
    value, previous = combined[0::2], combined[1::2]
    truncation = abs(value - previous)
    sums = _weight_sums(stencil.levels)
    if xp is torch:
        sums = _weight_tensor(sums.tobytes(), (3,), values.dtype, values.device)
    err = truncation + sums.reshape(3, *([1] * (value.ndim - 1))) * (sigma / h)
    if scale is not None:
        size = abs(value)
        size = np.where(np.isfinite(size), size, 0.0) if xp is np else size.nan_to_num(0.0, posinf=0.0)
        err = err + e * (scale / h) * size
    return Estimates(value[0], err[0], value[1], err[1], value[2], err[2], truncation[0], truncation[1], truncation[2])


@lru_cache(maxsize=None)
def _stacked(levels: int) -> np.ndarray:
    """The central, right and left weights, each followed by its previous Richardson level: ``(6, points)``."""
    w = _weights(levels)
    return np.stack([w.central, w.central_prev, w.right, w.right_prev, w.left, w.left_prev])


@lru_cache(maxsize=None)
def _weight_sums(levels: int) -> np.ndarray:
    """``sum |w|`` of the central, right and left weights: how much of f's noise each value carries."""
    w = _weights(levels)
    return np.array([np.abs(v).sum() for v in (w.central, w.right, w.left)], dtype=np.float64)


def estimate(
    values: torch.Tensor,
    h: torch.Tensor,
    fmag: torch.Tensor,
    stencil: Stencil,
    *,
    x_abs: torch.Tensor | None = None,
    pool_dim: int | None = None,
) -> Estimates:
    """Noise and estimates in one go (``fmag``: a magnitude of the projected function value;
    ``pool_dim``: a batch dimension over which the noise of ``f`` is pooled)."""
    sigma = noise_sigma(values, fmag, stencil, pool_dim)
    return estimate_with_sigma(values, h, sigma, stencil, x_abs=x_abs)
