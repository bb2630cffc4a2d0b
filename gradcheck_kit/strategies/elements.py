"""The values of one element: each dtype's grid of floats, rounding onto it from inside an interval,
and the strategy of finite floats in bounds with the values where gradients break upweighted."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from gradcheck_kit.errors import InvalidArgument

__all__ = ["element_strategy", "on_grid", "step"]

# numpy-representable width of each dtype's values (bfloat16 values are float32 values rounded)
WIDTH = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 32}
NP_FLOAT = {16: np.float16, 32: np.float32, 64: np.float64}


def _round_bf16(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(torch.bfloat16))


def _inward_bf16(value: float, upward: bool) -> float:
    """The bfloat16 value nearest ``value``, rounding into the interval."""
    rounded = torch.tensor(value, dtype=torch.float64).to(torch.bfloat16)
    if torch.isinf(rounded):
        rounded = torch.tensor(torch.finfo(torch.bfloat16).max * (1 if value > 0 else -1), dtype=torch.bfloat16)
    if (upward and float(rounded) < value) or (not upward and float(rounded) > value):
        target = torch.tensor(math.inf if upward else -math.inf, dtype=torch.bfloat16)
        rounded = torch.nextafter(rounded, target)
    return float(rounded)


def _inward(value: float, width: int, upward: bool) -> float:
    """The representable float of this width nearest ``value``, rounding into the interval."""
    np_type = NP_FLOAT[width]
    with np.errstate(over="ignore"):
        rounded = np_type(value)
    if np.isinf(rounded):
        rounded = np_type(np.finfo(np_type).max) * np.sign(rounded)
    if upward and float(rounded) < value:
        rounded = np.nextafter(rounded, np_type(np.inf))
    elif not upward and float(rounded) > value:
        rounded = np.nextafter(rounded, np_type(-np.inf))
    return float(rounded)


def element_strategy(dtype: torch.dtype, low: float, high: float) -> st.SearchStrategy:
    """Finite floats of ``dtype`` in [low, high]: ordinary floats first (they shrink to 0, 1 and
    small integers), then a branch of the special values where gradients break."""
    finfo = torch.finfo(dtype)
    low, high = max(low, float(-finfo.max)), min(high, float(finfo.max))
    width = WIDTH[dtype]
    low, high = _inward(low, width, upward=True), _inward(high, width, upward=False)
    if dtype == torch.bfloat16:
        low, high = _inward_bf16(low, upward=True), _inward_bf16(high, upward=False)
    if low > high:
        raise InvalidArgument(f"no {dtype} value lies between min_value={low!r} and max_value={high!r}")
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    if dtype == torch.bfloat16:
        floats = floats.map(_round_bf16).filter(lambda v: low <= v <= high)
    tiny = float(finfo.tiny)
    specials = sorted({v for v in (low, -1.0, -tiny, tiny, 1.0, high) if low <= v <= high})
    if not specials:
        return floats
    # One draw in four is snapped to the nearest special value: +-tiny, +-1 or a bound (0 is the
    # floats' own simplest value). The special branch draws the very same floats, so when the
    # shrinker moves a counterexample to the first branch the drawn float stays, and keeps failing
    # when the failure is about a region (``x > 2.5``): shrinking then reaches 3.0, not the bound.
    return st.one_of(floats, floats, floats, floats.map(_Snap(specials)))


class _Snap:
    """Maps a float to the nearest of the given sorted values."""

    def __init__(self, values: list[float]):
        self.values = values

    def __call__(self, value: float) -> float:
        return min(self.values, key=lambda v: abs(v - value))

    def __repr__(self) -> str:
        return f"snap_to({self.values!r})"



def on_grid(value: float, dtype: torch.dtype, upward: bool) -> float:
    """The value of ``dtype`` nearest ``value`` on the given side (``value`` itself when representable)."""
    if dtype == torch.bfloat16:
        return _inward_bf16(value, upward)
    return _inward(value, WIDTH[dtype], upward)


def step(value: float, dtype: torch.dtype, upward: bool) -> float:
    """The next value of ``dtype`` after ``value`` in the given direction."""
    if dtype == torch.bfloat16:
        t = torch.tensor(value, dtype=torch.bfloat16)
        return float(torch.nextafter(t, torch.tensor(math.inf if upward else -math.inf, dtype=torch.bfloat16)))
    np_type = NP_FLOAT[WIDTH[dtype]]
    return float(np.nextafter(np_type(value), np_type(np.inf if upward else -np.inf)))
