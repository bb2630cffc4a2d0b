"""Round-off of ``f`` through intermediates of the size of its inputs, which ``eps·|f|`` does not see.

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
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.tolerances import Stencil

__all__ = ["X_EPS", "sigma_floor", "input_rounding"]

#: f's rounding is at least this many float64 eps of the perturbed coordinate's magnitude
X_EPS = 1.0


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
