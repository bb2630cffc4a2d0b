"""Round-off of ``f`` through intermediates larger than its value (of its inputs' size, of unit size, or as
observed near x), which ``eps·|f|`` does not see.

A function whose value is a difference of intermediates far larger than itself rounds them, not its value:
gelu's tail ``x·(1 + erf(x/√2))/2`` forms ``1 + erf`` with ``erf ≈ -1``, so float64's gelu at ``x = -8``
(``f ≈ -5e-16``) is ``x/2`` times a multiple of ``1.1e-16``: a staircase whose steps are ``eps·|x|/2``
high and ~0.01 wide. Inside one step ``f`` is exactly linear in ``x`` (slope ``0.5·1.1e-16`` at most), so
the stencil sees a smooth function, no noise, and a derivative of ~5e-17 where the true one is -5e-15 (and
float32's vectorised backward gives exactly 0). Such a derivative cannot be resolved at any step below the
staircase's width: its round-off is ``eps·|x|/h``.

The floor here: ``f``'s rounding is at least ``X_EPS`` eps of the perturbed coordinate's size ``|x_j|``
(the same size ``reference`` gives a low-precision forward's rounding). At ``|x| ~ 1`` and float64's step
it bounds a derivative's resolution at ~5e-13 absolute, far below a gradient bug of a function of unit
scale; in the inputs' own low precision (float32 numerics, steps of 0.03) it would cost a function of
small outputs its resolution, so it applies to float64 numerics only.

Where an intermediate rounds far above both (``log(x² + 1)`` at ``x = 2e-8`` rounds ``1 + x²`` at 1;
float32's softplus of -15 forms ``1 + 2e-7``), ``f`` moves in quanta far above ``eps·|f|`` and ``eps·|x|``:
the stencil's residual shows it, but a kink inside the stencil leaves one of that size too, so the noise
model caps it (``finite_diff.noise_sigma``). A failed entry whose residual is beyond that cap
(``finite_diff.rough``) is probed (``probe_offsets``: ``PROBE_POINTS`` points on each side of x within
``PROBE_REACH`` of the step, at spacings no lattice of roundings aliases with): the median residual of
cubics through 5 neighbouring points there is f's rounding (``observed_rounding``: a kink spoils at most 4
of the 9, a smooth function's residual over that reach is ``(h/10)^4`` small), and where the probe has
exact ties that a function moving at the stencil's slope could not have (a staircase wider than its
spacing) half the smallest step between f's values near x is. That rounding replaces the model's; the
stencil at ``LARGER_STEPS`` times h, whose round-off it shrinks, is looked at too, and the estimate with
the smallest error is compared.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.tolerances import Stencil

__all__ = [
    "X_EPS", "UNIT_ROUNDINGS", "sigma_floor", "input_rounding", "PROBE_POINTS", "PROBE_REACH", "LARGER_STEPS",
    "probe_offsets", "observed_rounding",
]

#: f's rounding is at least this many float64 eps of the perturbed coordinate's magnitude
X_EPS = 1.0
#: a low-precision forward's rounding is at least this many of its eps at unit size: the roundings of an
#: intermediate of unit size (float32's softplus at -15 forms ``1 + 2e-7``, 0.3 eps from float64's value)
UNIT_ROUNDINGS = 4.0


def sigma_floor(sigma: torch.Tensor, x_abs: torch.Tensor, stencil: Stencil) -> torch.Tensor:
    """``sigma`` (each derivative's noise of ``f``) raised to ``X_EPS`` eps of ``x_abs`` (the magnitude of
    each derivative's coordinate, broadcast to ``sigma``), for float64 numerics."""
    if stencil.dtype != torch.float64:
        return sigma
    if isinstance(sigma, np.ndarray):  # full mode's few open entries (``settle.judge_open``)
        return np.maximum(sigma, (X_EPS * tolerances.eps(torch.float64)) * x_abs)
    return torch.maximum(sigma, (X_EPS * tolerances.eps(torch.float64)) * x_abs.to(sigma.dtype))


def input_rounding(xs: Sequence[torch.Tensor], eps: float, roundings: float) -> float:
    """What ``roundings`` roundings ``eps`` of intermediates of the inputs' size (the largest finite ``|x|``
    of the real or complex tensors ``xs``) add to a comparison of two evaluations of the same function
    (vectorised and plain gelu differ by an ulp of ``1 + erf``, ``eps·|x|/2`` in the value)."""
    sizes = [
        float(x.detach().abs().nan_to_num(0.0, posinf=0.0, neginf=0.0).max())
        for x in xs if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()) and x.numel()
    ]
    return roundings * eps * max(sizes, default=0.0)


#: the probe's points on each side of x, and how far they reach in units of the step
PROBE_POINTS = 6
PROBE_REACH = 0.1
#: the stencil again at these multiples of the step, where f's observed rounding is far above the model's
LARGER_STEPS = (8.0, 64.0)
#: f's values at the probe are tied (not moved at all) where the stencil's slope moves them this many times
#: the model's rounding between neighbouring points
TIE_MOVE = 16.0
#: a move between neighbouring points of a staircase is within this of a whole number of its steps
LATTICE = 0.05
#: a window of the probe's points through which the residual of a cubic is taken
_WINDOW = 5


@lru_cache(maxsize=None)
def probe_offsets() -> np.ndarray:
    """The probe's offsets from x in units of the step, ascending ``(2·PROBE_POINTS,)``: ``m + frac(m·φ)/2``
    apart (φ the golden ratio), so that a lattice of roundings that a power-of-two spacing would sample
    periodically is sampled at unrelated phases."""
    golden = (1 + 5**0.5) / 2
    side = np.array([m + ((m * golden) % 1.0) / 2 for m in range(1, PROBE_POINTS + 1)])
    side *= PROBE_REACH / side[-1]
    return np.concatenate([-side[::-1], side])


@lru_cache(maxsize=None)
def _window_weights() -> np.ndarray:
    """Per window of ``_WINDOW`` neighbouring points of the probe with x (``(windows, points)``): unit-norm
    weights that kill cubics there, so each residual of noise ``s`` is about ``s``."""
    t = np.insert(probe_offsets(), PROBE_POINTS, 0.0)
    rows = []
    for start in range(t.size - _WINDOW + 1):
        ts = t[start:start + _WINDOW]
        _, _, vt = np.linalg.svd(np.vander(ts / np.ptp(ts), _WINDOW - 1, increasing=True).T)
        row = np.zeros(t.size)
        row[start:start + _WINDOW] = vt[-1] / np.linalg.norm(vt[-1])
        rows.append(row)
    return np.stack(rows)


def observed_rounding(
    center: torch.Tensor, probe: torch.Tensor, values: torch.Tensor, slope: torch.Tensor, step: torch.Tensor,
    model: torch.Tensor,
) -> torch.Tensor:
    """f's rounding near x per entry ``(m,)``, from its value at x ``center``, at the probe ``probe``
    (``(2·PROBE_POINTS, m)`` at ``probe_offsets()·step``) and at the stencil ``values`` ``(points, m)``;
    ``slope``: the stencil's estimate of the derivative, ``model``: the model's rounding. 0 where a value
    is not finite."""
    ys = torch.cat([probe[:PROBE_POINTS], center.unsqueeze(0), probe[PROBE_POINTS:]])  # ascending in x
    w = torch.as_tensor(_window_weights(), dtype=ys.dtype)
    spread = (w @ ys).abs().median(dim=0).values / 0.6745
    quantum = _tied_quantum(ys, values, slope.abs() * step, model)
    found = torch.maximum(spread, quantum)
    finite = torch.isfinite(ys).all(dim=0) & torch.isfinite(values).all(dim=0)
    return torch.where(finite & torch.isfinite(found), found, torch.zeros_like(found))


def _tied_quantum(ys: torch.Tensor, values: torch.Tensor, move: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
    """Half the smallest step between f's values near x (probe ``ys`` with x, stencil ``values``) where f is a
    staircase wider than the probe's spacing, else 0: tied values on both sides of x where the stencil's
    slope (``move``: times the step) moves f by ``TIE_MOVE`` times the model's rounding between them, and
    every other move between neighbouring points a whole number of such steps. A kink next to a flat side
    (relu's) ties one side only, and its sloped side moves by amounts that the probe's two spacings make
    no multiples of one step."""
    gaps = torch.diff(ys, dim=0)
    apart = torch.as_tensor(np.diff(np.insert(probe_offsets(), PROBE_POINTS, 0.0)), dtype=ys.dtype).unsqueeze(1)
    tie = (gaps == 0) & (move * apart > TIE_MOVE * model)
    tied = tie[:PROBE_POINTS].any(dim=0) & tie[PROBE_POINTS:].any(dim=0)
    every = torch.cat([ys, values]).sort(dim=0).values
    steps = torch.diff(every, dim=0)
    quantum = torch.where(steps > 0, steps, torch.inf).amin(dim=0)
    multiples = gaps.abs() / quantum
    whole = ((multiples - multiples.round()).abs() <= LATTICE).all(dim=0)
    return torch.where(tied & whole & torch.isfinite(quantum), quantum / 2, torch.zeros_like(quantum))
