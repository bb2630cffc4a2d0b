"""Hypothesis strategies for tensors and their shapes (implementation of ``gradcheck_kit.strategies``).

Everything here is built on ``hypothesis.extra.numpy`` so that counterexamples shrink the way
Hypothesis users expect: shapes to few dimensions and small sides, values to ``0``, ``1`` and small
integers, layouts to contiguous. Values are drawn element by element (``hnp.arrays``), never filled
from a drawn seed.

A tensor is drawn in four steps, each shrinking on its own:

1. its shape (a fixed tuple, or a draw from a shape strategy),
2. its dtype (fixed, or a draw),
3. its layout: contiguous, a contiguous view with a storage offset, or a real strided view
   (permuted dimensions, stepped slices, leading offsets) of a larger buffer,
4. its values: finite floats within the bounds, with 0, +-1, +-tiny and the bounds upweighted and
   repeated values (ties) common through ``hnp.arrays``' fill value.

Buffer elements outside a view are NaN, so a kernel that reads memory it does not own shows it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument as _HypothesisInvalidArgument
from hypothesis.extra import numpy as hnp

from gradcheck_kit.errors import InvalidArgument

__all__ = [
    "BroadcastableShapes",
    "broadcastable_shapes",
    "broadcastable_tensors",
    "complex_dtypes",
    "float_dtypes",
    "mutually_broadcastable_shapes",
    "shapes",
    "tensor_inputs",
    "tensors",
]

BroadcastableShapes = hnp.BroadcastableShapes

#: the most dimensions a drawn shape may have (``hypothesis.extra.numpy``'s limit)
MAX_DIMS = 32
#: bound used where ``min_value`` / ``max_value`` is None: finite differences stay meaningful
DEFAULT_BOUND = 100.0
LAYOUTS = ("any", "contiguous", "noncontiguous")
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
COMPLEX_DTYPES = (torch.complex128, torch.complex64)
#: the dtype of the real and imaginary parts of each complex dtype
_PART_DTYPE = {torch.complex128: torch.float64, torch.complex64: torch.float32}
# numpy-representable width of each dtype's values (bfloat16 values are float32 values rounded)
_WIDTH = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 32}
_NP_FLOAT = {16: np.float16, 32: np.float32, 64: np.float64}
# keywords of `tensors` that the multi-input strategies pass on (one value, or one per input)
_TENSOR_KEYWORDS = (
    "dtype", "min_value", "max_value", "elements", "requires_grad", "layout", "device", "unique", "min_gap", "gap_dim",
    "allow_nan", "allow_infinity",
)


# --------------------------------------------------------------------------------------------
# argument validation: every error is our InvalidArgument, naming `arg=value`, raised up front
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if value < minimum:
        raise InvalidArgument(f"{name}={value!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{name}={value!r} must be <= {maximum}")


def _check_order(low_name: str, low: Any, high_name: str, high: Any) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low!r} must be <= {high_name}={high!r}")


def _check_dims_and_sides(min_dims: int, max_dims: int, min_side: int, max_side: int) -> None:
    _check_int("min_dims", min_dims, 0, MAX_DIMS)
    _check_int("max_dims", max_dims, 0, MAX_DIMS)
    _check_order("min_dims", min_dims, "max_dims", max_dims)
    _check_int("min_side", min_side, 1)
    _check_int("max_side", max_side, 1)
    _check_order("min_side", min_side, "max_side", max_side)


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise InvalidArgument(f"{name}={shape!r} must be a tuple of ints >= 0")
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"{name}={tuple(shape)!r} has more than {MAX_DIMS} dimensions")
    return tuple(shape)


def _validated(strategy: st.SearchStrategy, prefix: str = "") -> st.SearchStrategy:
    """Validate a Hypothesis strategy now (they are lazy), reporting errors as our InvalidArgument."""
    try:
        strategy.validate()
    except _HypothesisInvalidArgument as err:
        raise InvalidArgument(f"{prefix}{err}") from None
    return strategy


def _check_dtype(name: str, dtype: Any) -> None:
    if dtype not in FLOAT_DTYPES and dtype not in COMPLEX_DTYPES:
        raise InvalidArgument(
            f"{name}={dtype!r} is not a floating or complex dtype; expected one of "
            f"{', '.join(str(d) for d in FLOAT_DTYPES + COMPLEX_DTYPES)}"
        )


def _check_bound(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name}={value!r} must be a real number or None")
    if math.isnan(value):
        raise InvalidArgument(f"{name}={value!r} must not be NaN")
    return float(value)


def _default_bounds(min_value: float | None, max_value: float | None) -> tuple[float, float]:
    """``None`` bounds become +-DEFAULT_BOUND, or 2 * DEFAULT_BOUND beyond the other bound."""
    if min_value is None:
        min_value = -DEFAULT_BOUND if max_value is None or max_value > -DEFAULT_BOUND else max_value - 2 * DEFAULT_BOUND
    if max_value is None:
        max_value = DEFAULT_BOUND if min_value < DEFAULT_BOUND else min_value + 2 * DEFAULT_BOUND
    return min_value, max_value


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------


def shapes(*, min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy:
    """Shapes (tuples of ints) with ``min_dims``..``max_dims`` dimensions of ``min_side``..``max_side``.

    Built on ``hypothesis.extra.numpy.array_shapes``; shrinks towards ``min_dims`` dimensions of
    ``min_side``. Sides start at 1: empty tensors have no gradient to check.

    >>> gst.shapes(max_dims=2, max_side=3)   # (), (3,), (2, 1), ...
    """
    _check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    shape: tuple[int, ...], *, min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 5
) -> st.SearchStrategy:
    """Shapes that broadcast with ``shape``, as ``hypothesis.extra.numpy.broadcastable_shapes``.

    ``min_dims`` .. ``max_dims`` dimensions; sides not aligned with ``shape`` lie in
    ``min_side`` .. ``max_side``. Shrinks towards ``min_dims`` dimensions and sides of 1.

    >>> gst.broadcastable_shapes((2, 3))     # (), (3,), (1, 3), (4, 2, 1), ...
    """
    shape = _check_shape("shape", shape)
    _check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    return _validated(
        hnp.broadcastable_shapes(shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)
    )


def mutually_broadcastable_shapes(
    num_shapes: int | None = None,
    *,
    signature: str | None = None,
    base_shape: tuple[int, ...] = (),
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 5,
) -> st.SearchStrategy:
    """``num_shapes`` shapes that broadcast together (and with ``base_shape``).

    Draws ``BroadcastableShapes(input_shapes, result_shape)``, as
    ``hypothesis.extra.numpy.mutually_broadcastable_shapes`` does, with the same ``signature=``
    alternative for generalised-ufunc shapes sharing named dimensions, e.g.
    ``signature="(m,n),(n)->(m)"``; then ``min_dims`` / ``max_dims`` count the broadcast (loop)
    dimensions added in front of the core ones.

    >>> gst.mutually_broadcastable_shapes(2)   # BroadcastableShapes(((3, 1), (4,)), (3, 4)), ...
    """
    if (num_shapes is None) == (signature is None):
        raise InvalidArgument(
            f"pass exactly one of num_shapes={num_shapes!r} and signature={signature!r}"
        )
    base_shape = _check_shape("base_shape", base_shape)
    _check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    if num_shapes is not None:
        _check_int("num_shapes", num_shapes, 1)
        how = {"num_shapes": num_shapes}
    else:
        if not isinstance(signature, str):
            raise InvalidArgument(f"signature={signature!r} must be a string such as '(m,n),(n)->(m)'")
        how = {"signature": signature.replace(" ", "")}
    return _validated(
        hnp.mutually_broadcastable_shapes(
            **how, base_shape=base_shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        ),
        prefix=f"signature={signature!r}: " if signature is not None else "",
    )


def float_dtypes(*, include_half: bool = False) -> st.SearchStrategy:
    """A strategy of floating torch dtypes: float64 and float32 (shrinks to float64); with
    ``include_half=True`` also float16 and bfloat16."""
    if not isinstance(include_half, bool):
        raise InvalidArgument(f"include_half={include_half!r} must be a bool")
    return st.sampled_from(FLOAT_DTYPES if include_half else FLOAT_DTYPES[:2])


def complex_dtypes() -> st.SearchStrategy:
    """A strategy of complex torch dtypes: complex128 and complex64 (shrinks to complex128)."""
    return st.sampled_from(COMPLEX_DTYPES)


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


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
    np_type = _NP_FLOAT[width]
    with np.errstate(over="ignore"):
        rounded = np_type(value)
    if np.isinf(rounded):
        rounded = np_type(np.finfo(np_type).max) * np.sign(rounded)
    if upward and float(rounded) < value:
        rounded = np.nextafter(rounded, np_type(np.inf))
    elif not upward and float(rounded) > value:
        rounded = np.nextafter(rounded, np_type(-np.inf))
    return float(rounded)


def _element_strategy(dtype: torch.dtype, low: float, high: float) -> st.SearchStrategy:
    """Finite floats of ``dtype`` in [low, high]: ordinary floats first (they shrink to 0, 1 and
    small integers), then a branch of the special values where gradients break."""
    finfo = torch.finfo(dtype)
    low, high = max(low, float(-finfo.max)), min(high, float(finfo.max))
    width = _WIDTH[dtype]
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


# --------------------------------------------------------------------------------------------
# values kept apart: unique=True, min_gap=
# --------------------------------------------------------------------------------------------


def _on_grid(value: float, dtype: torch.dtype, upward: bool) -> float:
    """The value of ``dtype`` nearest ``value`` on the given side (``value`` itself when representable)."""
    if dtype == torch.bfloat16:
        return _inward_bf16(value, upward)
    return _inward(value, _WIDTH[dtype], upward)


def _step(value: float, dtype: torch.dtype, upward: bool) -> float:
    """The next value of ``dtype`` after ``value`` in the given direction."""
    if dtype == torch.bfloat16:
        t = torch.tensor(value, dtype=torch.bfloat16)
        return float(torch.nextafter(t, torch.tensor(math.inf if upward else -math.inf, dtype=torch.bfloat16)))
    np_type = _NP_FLOAT[_WIDTH[dtype]]
    return float(np.nextafter(np_type(value), np_type(np.inf if upward else -np.inf)))


def _beyond(value: float, dtype: torch.dtype, gap: float, upward: bool) -> float:
    """The value of ``dtype`` nearest ``value ± gap`` whose difference from ``value`` is at least ``gap``
    (computed in float64, as a test would) and not 0."""
    moved = _on_grid(value + gap if upward else value - gap, dtype, upward)
    while moved == value or abs(moved - value) < gap:
        moved = _step(moved, dtype, upward)
    return moved


def _apart(values: np.ndarray, gap: float, low: float, high: float, dtype: torch.dtype) -> np.ndarray | None:
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
        ranked[-1] = _on_grid(high, dtype, upward=False)
    for i in range(len(ranked) - 2, -1, -1):
        limit = _beyond(ranked[i + 1], dtype, gap, upward=False)
        if ranked[i] > limit:
            ranked[i] = limit
    if ranked[0] < low:
        return None
    out = np.empty_like(values)
    out[order] = ranked
    return out


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------

# layout kinds drawn under layout="any": the first (contiguous) is where shrinking goes; strided
# views come up most (nominally 3 in 5: Hypothesis's bias to simple examples makes it about half)
_KIND_CONTIGUOUS, _KIND_OFFSET, _KIND_STRIDED = 0, 1, 2
_ANY_LAYOUT = st.sampled_from((_KIND_CONTIGUOUS, _KIND_OFFSET, _KIND_STRIDED, _KIND_STRIDED, _KIND_STRIDED))


def _strided_view(values: torch.Tensor, perm, steps, offsets, device) -> torch.Tensor:
    """A view of a larger NaN buffer with the given values: dimensions laid out in ``perm`` order,
    every dimension ``d`` stepped by ``steps[d]`` and starting at ``offsets[d]``."""
    shape = values.shape
    padded = [offsets[d] + shape[d] * steps[d] for d in range(len(shape))]
    buffer = torch.full([padded[p] for p in perm], math.nan, dtype=values.dtype, device=device)
    inverse = sorted(range(len(perm)), key=lambda i: perm[i])
    view = buffer.permute(*inverse) if len(perm) > 1 else buffer
    view = view[tuple(slice(offsets[d], offsets[d] + shape[d] * steps[d], steps[d]) for d in range(len(shape)))]
    view.copy_(values)
    return view


def _offset_view(values: torch.Tensor, offset: int, device) -> torch.Tensor:
    """A contiguous view starting ``offset`` elements into a NaN buffer."""
    buffer = torch.full((values.numel() + offset,), math.nan, dtype=values.dtype, device=device)
    view = buffer[offset:].view(values.shape)
    view.copy_(values)
    return view


def _draw_strided(data, values: torch.Tensor, device) -> torch.Tensor:
    ndim = values.dim()
    if ndim == 0:
        # a 0-d tensor can only be "strided" by living at an offset in a larger buffer
        return _offset_view(values, 1, device)
    perm = data.draw(st.permutations(range(ndim))) if ndim > 1 else [0]
    steps = data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    offsets = data.draw(st.lists(st.integers(0, 2), min_size=ndim, max_size=ndim))
    view = _strided_view(values, perm, steps, offsets, device)
    if view.is_contiguous() and values.numel() > 1:
        # the draws happened to give a contiguous layout: step the last dimension that has more
        # than one element (the simplest non-contiguous view, where shrinking ends up)
        last = max(d for d in range(ndim) if values.shape[d] > 1)
        steps = [2 if d == last else s for d, s in enumerate(steps)]
        view = _strided_view(values, perm, steps, offsets, device)
    elif values.numel() <= 1 and view.storage_offset() == 0:
        # one element is always "contiguous" to torch: at least put it at an offset
        view = _strided_view(values, perm, steps, [1] + list(offsets[1:]), device)
    return view


# --------------------------------------------------------------------------------------------
# tensors
# --------------------------------------------------------------------------------------------


class _TensorSpec:
    """Validated keywords of one tensor (everything but its shape); draws it given a shape."""

    def __init__(
        self, *, dtype, min_value, max_value, elements, requires_grad, layout, device, unique=False, min_gap=None,
        gap_dim=-1, allow_nan=False, allow_infinity=False, where="",
    ):
        self.where = where  # e.g. "[1]" for the second input of a multi-input strategy
        if isinstance(dtype, st.SearchStrategy):
            self.dtype_strategy, self.dtype = dtype, None
        else:
            _check_dtype(f"dtype{where}", dtype)
            self.dtype_strategy, self.dtype = None, dtype
        self.min_value = _check_bound(f"min_value{where}", min_value)
        self.max_value = _check_bound(f"max_value{where}", max_value)
        if self.min_value is not None and self.max_value is not None:
            _check_order(f"min_value{where}", self.min_value, f"max_value{where}", self.max_value)
        if elements is not None:
            if not isinstance(elements, st.SearchStrategy):
                raise InvalidArgument(f"elements{where}={elements!r} must be a Hypothesis strategy of floats")
            if min_value is not None or max_value is not None:
                raise InvalidArgument(
                    f"pass min_value{where}={min_value!r} / max_value{where}={max_value!r} or "
                    f"elements{where}={elements!r}, not both (bound the elements strategy itself)"
                )
        self.elements = elements
        if not isinstance(requires_grad, bool):
            raise InvalidArgument(f"requires_grad{where}={requires_grad!r} must be a bool")
        self.requires_grad = requires_grad
        if layout not in LAYOUTS:
            raise InvalidArgument(f"layout{where}={layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
        self.layout = layout
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise InvalidArgument(f"device{where}={device!r} is not a torch device") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidArgument(f"device{where}={device!r} is not available (torch.cuda.is_available() is False)")
        if not isinstance(unique, bool):
            raise InvalidArgument(f"unique{where}={unique!r} must be a bool")
        self.unique = unique
        if min_gap is not None and (
            isinstance(min_gap, bool) or not isinstance(min_gap, (int, float)) or not 0 < min_gap < math.inf
        ):
            raise InvalidArgument(f"min_gap{where}={min_gap!r} must be a positive finite number or None")
        self.min_gap = None if min_gap is None else float(min_gap)
        if gap_dim is not None and (isinstance(gap_dim, bool) or not isinstance(gap_dim, int)):
            raise InvalidArgument(f"gap_dim{where}={gap_dim!r} must be an int (a dimension) or None (the whole tensor)")
        self.gap_dim = gap_dim
        for name, flag in (("allow_nan", allow_nan), ("allow_infinity", allow_infinity)):
            if not isinstance(flag, bool):
                raise InvalidArgument(f"{name}{where}={flag!r} must be a bool")
        self.allow_nan, self.allow_infinity = allow_nan, allow_infinity
        if self.dtype in COMPLEX_DTYPES:
            self._modulus_bounds(self.dtype)
        self._values_cache: dict[tuple, st.SearchStrategy] = {}

    def _bounds(self, dtype: torch.dtype) -> tuple[float, float]:
        """The interval values are drawn from, on ``dtype``'s grid."""
        finfo = torch.finfo(dtype)
        if self.elements is not None:
            return float(-finfo.max), float(finfo.max)
        low, high = _default_bounds(self.min_value, self.max_value)
        low, high = max(low, float(-finfo.max)), min(high, float(finfo.max))
        return _on_grid(low, dtype, upward=True), _on_grid(high, dtype, upward=False)

    def _kept_apart(self, array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        """``array`` with the ``min_gap`` rule (along ``gap_dim``) and then ``unique`` applied."""
        low, high = self._bounds(dtype)
        if self.min_gap is not None and array.ndim > 0:
            if self.gap_dim is None:
                groups = array.reshape(1, -1)
            else:
                if not -array.ndim <= self.gap_dim < array.ndim:
                    raise InvalidArgument(
                        f"gap_dim{self.where}={self.gap_dim!r} is not a dimension of the drawn shape {array.shape}"
                    )
                groups = np.moveaxis(array, self.gap_dim, -1).reshape(-1, array.shape[self.gap_dim])
            room = self.min_gap * (groups.shape[1] - 1)
            if room > high - low:
                raise InvalidArgument(
                    f"min_gap{self.where}={self.min_gap!r} leaves no room for {groups.shape[1]} values between "
                    f"{low!r} and {high!r} (shape {array.shape}): they need {room:g}"
                )
            spread = [_apart(row, self.min_gap, low, high, dtype) for row in groups]
            if any(row is None for row in spread):
                raise InvalidArgument(
                    f"min_gap{self.where}={self.min_gap!r}: no room for the values of shape {array.shape} "
                    f"between {low!r} and {high!r} on the {dtype} grid"
                )
            grouped = np.stack(spread)
            if self.gap_dim is None:
                array = grouped.reshape(array.shape)
            else:
                moved_shape = np.moveaxis(array, self.gap_dim, -1).shape
                array = np.moveaxis(grouped.reshape(moved_shape), -1, self.gap_dim)
        if self.unique and array.size > 1:
            flat = _apart(array.reshape(-1), 0.0, low, high, dtype)
            if flat is None:
                raise InvalidArgument(
                    f"unique{self.where}=True: fewer than {array.size} {dtype} values lie between {low!r} and {high!r}"
                )
            array = flat.reshape(array.shape)
        return np.ascontiguousarray(array)

    def draw_dtype(self, data) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        dtype = data.draw(self.dtype_strategy)
        _check_dtype(f"dtype{self.where} (drawn)", dtype)
        return dtype

    def _values(self, dtype: torch.dtype, shape: tuple[int, ...], bounds: tuple[float, float] | None = None):
        key = (dtype, shape, bounds)
        strategy = self._values_cache.get(key)
        if strategy is None:
            if self.elements is None:
                low, high = bounds if bounds is not None else _default_bounds(self.min_value, self.max_value)
                elements = _element_strategy(dtype, low, high)
                nonfinite = [math.nan] * self.allow_nan + [math.inf, -math.inf] * self.allow_infinity
                if nonfinite:
                    elements = st.one_of(elements, elements, elements, st.sampled_from(nonfinite))
                strategy = hnp.arrays(np.float64, shape, elements=elements, fill=elements)
            else:
                strategy = hnp.arrays(np.float64, shape, elements=self.elements)
            self._values_cache[key] = strategy
        return strategy

    def _check_finite(self, array: np.ndarray) -> None:
        if self.elements is None or (self.allow_nan and self.allow_infinity):
            return
        bad = ~np.isfinite(array) & ~(np.isnan(array) if self.allow_nan else False) & ~(
            np.isinf(array) if self.allow_infinity else False
        )
        if bad.any():
            raise InvalidArgument(
                f"elements{self.where}={self.elements!r} drew {float(array[bad][0])!r}; values must be finite "
                "(or pass allow_nan=True / allow_infinity=True)"
            )

    def _real_values(self, data, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        array = data.draw(self._values(dtype, shape))
        self._check_finite(array)
        if self.unique or self.min_gap is not None:
            if self.elements is not None:
                array = torch.from_numpy(array).to(dtype).double().numpy()
            array = self._kept_apart(array, dtype)
        values = torch.from_numpy(array).to(dtype)
        if self.elements is not None and (torch.isinf(values) & torch.from_numpy(np.isfinite(array))).any():
            raise InvalidArgument(
                f"elements{self.where}={self.elements!r} drew a value that overflows {dtype}; values must be finite"
            )
        return values

    def _modulus_bounds(self, dtype: torch.dtype) -> tuple[float, float]:
        """``min_value`` / ``max_value`` of a complex tensor bound the modulus ``|z|``."""
        if self.unique or self.min_gap is not None:
            raise InvalidArgument(
                f"unique{self.where}=True / min_gap{self.where}= order real values; they do not apply to {dtype}"
            )
        low = 0.0 if self.min_value is None else self.min_value
        high = DEFAULT_BOUND if self.max_value is None else self.max_value
        if low < 0:
            raise InvalidArgument(
                f"min_value{self.where}={self.min_value!r}: for {dtype} the bounds are on the modulus |z|, "
                "so min_value must be >= 0"
            )
        if not low <= high:
            raise InvalidArgument(f"max_value{self.where}={self.max_value!r} is below min_value={self.min_value!r}")
        return low, high

    def _complex_values(self, data, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Real and imaginary parts drawn like real values, then moved radially into the modulus bounds."""
        part = _PART_DTYPE[dtype]
        low, high = self._modulus_bounds(dtype)
        array = data.draw(self._values(part, (*shape, 2), (-high, high)))
        self._check_finite(array)
        if self.elements is None:
            finite = np.isfinite(array).all(axis=-1)
            modulus = np.hypot(array[..., 0], array[..., 1])
            shrink = finite & (modulus > high)
            # direction first (a unit vector), then the radius: low / |z| of a subnormal |z| would overflow
            array[shrink] = array[shrink] / modulus[shrink][:, None] * (high * (1 - 2 * float(torch.finfo(part).eps)))
            grow = finite & (modulus < low)
            zero = grow & (modulus == 0)
            array[zero] = (low, 0.0)
            scale = grow & ~zero
            array[scale] = array[scale] / modulus[scale][:, None] * (low * (1 + 2 * float(torch.finfo(part).eps)))
        return torch.view_as_complex(torch.from_numpy(np.ascontiguousarray(array)).to(part))

    def draw(self, data, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        if dtype is None:
            dtype = self.draw_dtype(data)
        if self.layout == "any":
            kind = data.draw(_ANY_LAYOUT)
        else:
            kind = _KIND_CONTIGUOUS if self.layout == "contiguous" else _KIND_STRIDED
        if dtype in COMPLEX_DTYPES:
            values = self._complex_values(data, shape, dtype)
        else:
            values = self._real_values(data, shape, dtype)
        if kind == _KIND_CONTIGUOUS:
            tensor = values.to(self.device)
        elif kind == _KIND_OFFSET:
            tensor = _offset_view(values, 1, self.device)
        else:
            tensor = _draw_strided(data, values, self.device)
        if self.requires_grad:
            # detach() keeps the view's strides and storage offset: a leaf with the drawn layout
            tensor = tensor.detach().requires_grad_(True)
        return tensor

    def __repr__(self) -> str:
        parts = [f"dtype={self.dtype_strategy if self.dtype is None else self.dtype}"]
        for name in ("min_value", "max_value", "elements"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        if not self.requires_grad:
            parts.append("requires_grad=False")
        if self.layout != "any":
            parts.append(f"layout={self.layout!r}")
        if self.device.type != "cpu":
            parts.append(f"device={str(self.device)!r}")
        for flag in ("unique", "allow_nan", "allow_infinity"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.min_gap is not None:
            parts.append(f"min_gap={self.min_gap!r}")
            if self.gap_dim != -1:
                parts.append(f"gap_dim={self.gap_dim!r}")
        return ", ".join(parts)


class _TensorStrategy(st.SearchStrategy):
    def __init__(self, shape, spec: _TensorSpec):
        super().__init__()
        self.shape = shape  # a tuple, or a strategy of tuples
        self.spec = spec

    def do_draw(self, data) -> torch.Tensor:
        shape = self.shape if isinstance(self.shape, tuple) else data.draw(self.shape)
        if not isinstance(self.shape, tuple):
            shape = _check_shape("shape (drawn)", shape)
        return self.spec.draw(data, shape)

    def __repr__(self) -> str:
        return f"tensors(shape={self.shape!r}, {self.spec!r})"


def tensors(
    *,
    shape=None,
    dtype=torch.float64,
    min_value: float | None = None,
    max_value: float | None = None,
    elements: st.SearchStrategy | None = None,
    requires_grad: bool = True,
    layout: str = "any",
    device="cpu",
    unique: bool = False,
    min_gap: float | None = None,
    gap_dim: int | None = -1,
    allow_nan: bool = False,
    allow_infinity: bool = False,
) -> st.SearchStrategy:
    """Leaf tensors for gradient checks, shrinking to few dimensions, small sides and simple values.

    * ``shape``: a tuple, or a strategy of tuples (default ``shapes()``).
    * ``dtype``: a floating or complex torch dtype, or a strategy of them (e.g. ``float_dtypes()``,
      ``complex_dtypes()``). For complex dtypes ``min_value`` / ``max_value`` bound the modulus
      ``|z|`` (default at most 100): the real and imaginary parts are drawn like real values (0, ±1,
      ±tiny, ±0 often) and a point outside the bounds is moved radially onto them.
    * Values are finite and lie in [``min_value``, ``max_value``]; a bound left ``None`` is
      ``-100`` / ``100`` (or 200 beyond the other bound when that one lies outside them), so that
      finite differences stay meaningful. Pass ``-math.inf`` / ``math.inf`` for the whole finite
      range of the dtype. 0, +-1, +-``finfo.tiny`` and the bounds are drawn often, and so are
      repeated values (ties).
    * ``elements``: a strategy of floats to use instead (values rounded to ``dtype``; they must be
      finite); not combined with the bounds.
    * ``requires_grad=True`` gives a leaf that requires grad, with the drawn layout.
    * ``layout="any"`` draws contiguous tensors, contiguous views at a storage offset, and (half of
      the time) non-contiguous strided views of a larger buffer: dimensions permuted (transposed),
      stepped slices, leading offsets. ``"contiguous"`` forces a fresh contiguous tensor;
      ``"noncontiguous"`` forces a strided view, with ``is_contiguous()`` False whenever the tensor
      has two or more elements (torch counts a one-element tensor as contiguous: it is then a view at
      a storage offset). Shrinking goes towards contiguous, and within strided views towards a
      stepped slice of the last dimension. Buffer elements outside the view are NaN.
    * ``device``: where the tensor lives.
    * ``allow_nan=True`` / ``allow_infinity=True``: some elements (for complex dtypes, either part) are
      NaN / ±inf, for functions that must handle them.
    * ``unique=True``: no two elements are equal (ties are drawn often otherwise). Values that would
      repeat move to the next values of the dtype, so near-ties (equal up to rounding) remain possible.
    * ``min_gap=g``: any two elements of one slice along ``gap_dim`` (default the last dimension;
      ``None``: the whole tensor) differ by at least ``g``, so one-sided slopes of sort-like functions
      stay apart. Values are drawn as usual, then a cluster is spread: its first element (in sorted
      order) stays and the others move up by ``g`` steps (down where ``max_value`` leaves no room). Both
      rules are a fixed function of the drawn values, so shrinking works as usual: a shrunk
      counterexample has values 0, g, 2g, ... where the draw shrank to equal values.
      ``InvalidArgument`` when the bounds leave no room (``(side - 1)·g > max_value − min_value``).

    >>> gst.tensors(shape=(3, 4), min_value=-5, max_value=5, layout="noncontiguous")
    >>> gst.tensors(shape=(8, 64), unique=True)        # no ties
    >>> gst.tensors(shape=(2, 5), min_gap=1e-2)         # each row's values at least 0.01 apart
    """
    if shape is None:
        shape = shapes()
    elif not isinstance(shape, st.SearchStrategy):
        shape = _check_shape("shape", shape)
    spec = _TensorSpec(
        dtype=dtype,
        min_value=min_value,
        max_value=max_value,
        elements=elements,
        requires_grad=requires_grad,
        layout=layout,
        device=device,
        unique=unique,
        min_gap=min_gap,
        gap_dim=gap_dim,
        allow_nan=allow_nan,
        allow_infinity=allow_infinity,
    )
    return _TensorStrategy(shape, spec)


# --------------------------------------------------------------------------------------------
# several related tensors
# --------------------------------------------------------------------------------------------


def _per_input_specs(count: int, keywords: dict[str, Any]) -> tuple[list[_TensorSpec], Any]:
    """One spec per input: a keyword given as a list (or tuple) has one value per input."""
    unknown = sorted(set(keywords) - set(_TENSOR_KEYWORDS))
    if unknown:
        raise InvalidArgument(
            f"unknown tensor keyword(s) {', '.join(f'{k}={keywords[k]!r}' for k in unknown)}; "
            f"known: {', '.join(_TENSOR_KEYWORDS)}"
        )
    options = {"dtype": torch.float64, "min_value": None, "max_value": None, "elements": None,
               "requires_grad": True, "layout": "any", "device": "cpu", "unique": False, "min_gap": None,
               "gap_dim": -1, "allow_nan": False, "allow_infinity": False}
    per_input = [dict(options) for _ in range(count)]
    for name, value in keywords.items():
        if isinstance(value, (list, tuple)):
            if len(value) != count:
                raise InvalidArgument(f"{name}={value!r} has {len(value)} entries, expected one per input ({count})")
            for i in range(count):
                per_input[i][name] = value[i]
        else:
            for i in range(count):
                per_input[i][name] = value
    specs = [_TensorSpec(**kw, where=f"[{i}]" if count > 1 else "") for i, kw in enumerate(per_input)]
    # a single dtype strategy (not a per-input list) is drawn once and shared by every input
    shared = keywords.get("dtype")
    shared_dtype = shared if isinstance(shared, st.SearchStrategy) else None
    return specs, shared_dtype


class _TensorTupleStrategy(st.SearchStrategy):
    def __init__(self, shapes_strategy, specs: list[_TensorSpec], shared_dtype, description: str):
        super().__init__()
        self.shapes_strategy = shapes_strategy
        self.specs = specs
        self.shared_dtype = shared_dtype
        self.description = description

    def do_draw(self, data) -> tuple[torch.Tensor, ...]:
        input_shapes = data.draw(self.shapes_strategy).input_shapes
        dtype = None
        if self.shared_dtype is not None:
            dtype = data.draw(self.shared_dtype)
            _check_dtype("dtype (drawn)", dtype)
        return tuple(spec.draw(data, shape, dtype) for spec, shape in zip(self.specs, input_shapes))

    def __repr__(self) -> str:
        return self.description


def broadcastable_tensors(
    num_tensors: int,
    *,
    base_shape: tuple[int, ...] = (),
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 5,
    **tensor_keywords: Any,
) -> st.SearchStrategy:
    """Tuples of ``num_tensors`` tensors whose shapes broadcast together (and with ``base_shape``).

    Shapes come from ``mutually_broadcastable_shapes(num_tensors, ...)`` with the same ``base_shape``,
    ``min_dims``, ``max_dims``, ``min_side`` and ``max_side``. ``tensor_keywords`` are those of
    :func:`tensors` (``dtype``, ``min_value``, ``max_value``, ``elements``, ``requires_grad``,
    ``layout``, ``device``): a value applies to every tensor, a list gives one value per tensor. A
    dtype strategy (not in a list) is drawn once and shared by all the tensors.

    >>> gst.broadcastable_tensors(2, max_value=[None, -1.0])   # (x, y) with x + y valid, y <= -1
    """
    _check_int("num_tensors", num_tensors, 1)
    shapes_strategy = mutually_broadcastable_shapes(
        num_tensors, base_shape=base_shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )
    specs, shared_dtype = _per_input_specs(num_tensors, tensor_keywords)
    description = f"broadcastable_tensors({num_tensors}, base_shape={tuple(base_shape)!r}, ...)"
    return _TensorTupleStrategy(shapes_strategy, specs, shared_dtype, description)


def tensor_inputs(
    signature: str,
    *,
    min_dims: int = 0,
    max_dims: int = 0,
    min_side: int = 1,
    max_side: int = 5,
    **tensor_keywords: Any,
) -> st.SearchStrategy:
    """Tuples of tensors whose shapes share named dimensions, written as a signature.

    ``"(m,n),(n)"`` draws a matrix and a vector of matching size; ``"(m,n),(n,p)"`` two matrices
    that multiply; ``"(3),(3)"`` fixes a size; ``"(m?,n),(n,p?)"`` may drop the optional dimensions
    (as ``matmul`` accepts). The generalised-ufunc syntax of
    ``hypothesis.extra.numpy.mutually_broadcastable_shapes(signature=...)`` is used; an output part
    (``"->(m)"``) may be given and is ignored. Named sizes lie in ``min_side`` .. ``max_side``.
    ``min_dims`` / ``max_dims`` (default 0) add that many broadcast batch dimensions in front.
    ``tensor_keywords`` as for :func:`broadcastable_tensors` (one value, or a list with one per
    input; a dtype strategy is drawn once and shared).

    >>> gst.tensor_inputs("(m,n),(n)", requires_grad=[True, False])   # (A, v) for A @ v
    """
    if not isinstance(signature, str):
        raise InvalidArgument(f"signature={signature!r} must be a string such as '(m,n),(n)'")
    compact = signature.replace(" ", "")
    full = compact if "->" in compact else compact + "->()"
    _check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    try:
        shapes_strategy = mutually_broadcastable_shapes(
            signature=full, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        )
    except InvalidArgument:
        raise InvalidArgument(
            f"signature={signature!r} is not a valid signature: write one parenthesised shape per input, "
            "with named or numeric sizes, e.g. '(m,n),(n)' or '(3),(3)'"
        ) from None
    count = compact.split("->")[0].count("(")
    specs, shared_dtype = _per_input_specs(count, tensor_keywords)
    return _TensorTupleStrategy(shapes_strategy, specs, shared_dtype, f"tensor_inputs({signature!r}, ...)")
