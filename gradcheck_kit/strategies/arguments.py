"""Argument checks shared by the strategies: every error is the kit's ``InvalidArgument``, naming
``arg=value``, raised when the strategy is built (Hypothesis strategies are lazy)."""

from __future__ import annotations

import math
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument as HypothesisInvalidArgument

from gradcheck_kit.errors import InvalidArgument

__all__ = [
    "DEFAULT_BOUND",
    "MAX_DIMS",
    "check_between",
    "check_bound",
    "check_dims_and_sides",
    "check_int",
    "check_order",
    "check_shape",
    "default_bounds",
    "validated",
]

#: the most dimensions a drawn shape may have (``hypothesis.extra.numpy``'s limit)
MAX_DIMS = 32
#: bound used where ``min_value`` / ``max_value`` is None: finite differences stay meaningful
DEFAULT_BOUND = 100.0


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if value < minimum:
        raise InvalidArgument(f"{name}={value!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{name}={value!r} must be <= {maximum}")


def check_between(name: str, value: Any, lo: int, hi: int) -> None:
    """An int in ``lo`` .. ``hi``, with one message for every way of missing it."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r} must be between {lo} and {hi}")


def check_order(low_name: str, low: Any, high_name: str, high: Any) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low!r} must be <= {high_name}={high!r}")


def check_dims_and_sides(min_dims: int, max_dims: int, min_side: int, max_side: int) -> None:
    check_int("min_dims", min_dims, 0, MAX_DIMS)
    check_int("max_dims", max_dims, 0, MAX_DIMS)
    check_order("min_dims", min_dims, "max_dims", max_dims)
    check_int("min_side", min_side, 1)
    check_int("max_side", max_side, 1)
    check_order("min_side", min_side, "max_side", max_side)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise InvalidArgument(f"{name}={shape!r} must be a tuple of ints >= 0")
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"{name}={tuple(shape)!r} has more than {MAX_DIMS} dimensions")
    return tuple(shape)


def validated(strategy: st.SearchStrategy, prefix: str = "") -> st.SearchStrategy:
    """Validate a Hypothesis strategy now (they are lazy), reporting errors as our InvalidArgument."""
    try:
        strategy.validate()
    except HypothesisInvalidArgument as err:
        raise InvalidArgument(f"{prefix}{err}") from None
    return strategy


def check_bound(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name}={value!r} must be a real number or None")
    if math.isnan(value):
        raise InvalidArgument(f"{name}={value!r} must not be NaN")
    return float(value)


def default_bounds(min_value: float | None, max_value: float | None) -> tuple[float, float]:
    """``None`` bounds become +-DEFAULT_BOUND, or 2 * DEFAULT_BOUND beyond the other bound."""
    if min_value is None:
        min_value = -DEFAULT_BOUND if max_value is None or max_value > -DEFAULT_BOUND else max_value - 2 * DEFAULT_BOUND
    if max_value is None:
        max_value = DEFAULT_BOUND if min_value < DEFAULT_BOUND else min_value + 2 * DEFAULT_BOUND
    return min_value, max_value
