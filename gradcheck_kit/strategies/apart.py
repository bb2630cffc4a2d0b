"""Values kept apart (``unique=True``, ``min_gap=``): drawn values moved as little as a greedy pass
can so that no two are equal, or any two of one slice differ by at least a gap."""

from __future__ import annotations

import numpy as np
import torch

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.elements import on_grid, step

__all__ = ["apart", "kept_apart"]


def _beyond(value: float, dtype: torch.dtype, gap: float, upward: bool) -> float:
    """The value of ``dtype`` nearest ``value ± gap`` whose difference from ``value`` is at least ``gap``
    (computed in float64, as a test would) and not 0."""
    moved = on_grid(value + gap if upward else value - gap, dtype, upward)
    while moved == value or abs(moved - value) < gap:
        moved = step(moved, dtype, upward)
    return moved


def apart(values: np.ndarray, gap: float, low: float, high: float, dtype: torch.dtype) -> np.ndarray | None:
    """``values`` (1-D, on ``dtype``'s grid, within [low, high]) moved as little as a greedy pass can so
    that any two differ by at least ``gap`` (``gap=0``: by anything). Values already far enough apart
    stay; of a cluster, the first in sorted order (the earliest position among equals) stays and the
    others move up, or down where the upper bound leaves no room. None when the bounds leave no room."""
    if values.size < 2:
        return values
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    diffs = np.diff(ranked)
    if (diffs >= gap).all() and (diffs > 0).all():
        return values
    ranked = [float(v) for v in ranked]
    for i in range(1, len(ranked)):
        need = _beyond(ranked[i - 1], dtype, gap, upward=True)
        if ranked[i] < need:
            ranked[i] = need
    if ranked[-1] > high:
        ranked[-1] = on_grid(high, dtype, upward=False)
    for i in range(len(ranked) - 2, -1, -1):
        limit = _beyond(ranked[i + 1], dtype, gap, upward=False)
        if ranked[i] > limit:
            ranked[i] = limit
    if ranked[0] < low:
        return None
    out = np.empty_like(values)
    out[order] = ranked
    return out


def _spread_slices(array: np.ndarray, gap: float, gap_dim: int | None, low: float, high: float,
                   dtype: torch.dtype, where: str) -> np.ndarray:
    """``array`` with any two elements of one slice along ``gap_dim`` (None: the whole array) at least
    ``gap`` apart."""
    if gap_dim is None:
        groups = array.reshape(1, -1)
    else:
        if not -array.ndim <= gap_dim < array.ndim:
            raise InvalidArgument(f"gap_dim{where}={gap_dim!r} is not a dimension of the drawn shape {array.shape}")
        groups = np.moveaxis(array, gap_dim, -1).reshape(-1, array.shape[gap_dim])
    room = gap * (groups.shape[1] - 1)
    if room > high - low:
        raise InvalidArgument(
            f"min_gap{where}={gap!r} leaves no room for {groups.shape[1]} values between "
            f"{low!r} and {high!r} (shape {array.shape}): they need {room:g}"
        )
    spread = [apart(row, gap, low, high, dtype) for row in groups]
    if any(row is None for row in spread):
        raise InvalidArgument(
            f"min_gap{where}={gap!r}: no room for the values of shape {array.shape} "
            f"between {low!r} and {high!r} on the {dtype} grid"
        )
    grouped = np.stack(spread)
    if gap_dim is None:
        return grouped.reshape(array.shape)
    moved_shape = np.moveaxis(array, gap_dim, -1).shape
    return np.moveaxis(grouped.reshape(moved_shape), -1, gap_dim)


def kept_apart(
    array: np.ndarray, dtype: torch.dtype, bounds: tuple[float, float], *, unique: bool, min_gap: float | None,
    gap_dim: int | None, where: str = "",
) -> np.ndarray:
    """``array`` with the ``min_gap`` rule (along ``gap_dim``) and then ``unique`` applied, within
    ``bounds`` (on ``dtype``'s grid). ``where`` names the input in messages, e.g. ``"[1]"``."""
    low, high = bounds
    if min_gap is not None and array.ndim > 0:
        array = _spread_slices(array, min_gap, gap_dim, low, high, dtype, where)
    if unique and array.size > 1:
        flat = apart(array.reshape(-1), 0.0, low, high, dtype)
        if flat is None:
            raise InvalidArgument(
                f"unique{where}=True: fewer than {array.size} {dtype} values lie between {low!r} and {high!r}"
            )
        array = flat.reshape(array.shape)
    return np.ascontiguousarray(array)
