"""The validated keywords of one tensor (everything but its shape), and how a tensor is drawn from them.

A tensor is drawn in four steps, each shrinking on its own:

1. its shape (a fixed tuple, or a draw from a shape strategy; drawn by the caller),
2. its dtype (fixed, or a draw),
3. its layout kind: contiguous, a contiguous view with a storage offset, or a real strided view,
4. its values: drawn element by element with ``hypothesis.extra.numpy.arrays`` (never filled from a
   drawn seed), finite floats within the bounds, with 0, +-1, +-tiny and the bounds upweighted and
   repeated values (ties) common through the arrays' fill value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.apart import kept_apart
from gradcheck_kit.strategies.arguments import DEFAULT_BOUND, check_bound, check_order, default_bounds
from gradcheck_kit.strategies.dtypes import COMPLEX_DTYPES, PART_DTYPE, check_dtype
from gradcheck_kit.strategies.elements import element_strategy, on_grid
from gradcheck_kit.strategies.layouts import LAYOUTS, draw_kind, laid_out

__all__ = ["TENSOR_KEYWORDS", "TensorSpec", "per_input_specs"]

# keywords of `tensors` that the multi-input strategies pass on (one value, or one per input)
TENSOR_KEYWORDS = (
    "dtype", "min_value", "max_value", "elements", "requires_grad", "layout", "device", "unique", "min_gap", "gap_dim",
    "allow_nan", "allow_infinity",
)


class TensorSpec:
    """Validated keywords of one tensor (everything but its shape); draws it given a shape."""

    def __init__(
        self, *, dtype, min_value, max_value, elements, requires_grad, layout, device, unique=False, min_gap=None,
        gap_dim=-1, allow_nan=False, allow_infinity=False, where="",
    ):
        self.where = where  # e.g. "[1]" for the second input of a multi-input strategy
        if isinstance(dtype, st.SearchStrategy):
            self.dtype_strategy, self.dtype = dtype, None
        else:
            check_dtype(f"dtype{where}", dtype)
            self.dtype_strategy, self.dtype = None, dtype
        self.min_value = check_bound(f"min_value{where}", min_value)
        self.max_value = check_bound(f"max_value{where}", max_value)
        if self.min_value is not None and self.max_value is not None:
            check_order(f"min_value{where}", self.min_value, f"max_value{where}", self.max_value)
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
        low, high = default_bounds(self.min_value, self.max_value)
        low, high = max(low, float(-finfo.max)), min(high, float(finfo.max))
        return on_grid(low, dtype, upward=True), on_grid(high, dtype, upward=False)

    def _kept_apart(self, array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        """``array`` with the ``min_gap`` rule (along ``gap_dim``) and then ``unique`` applied."""
        return kept_apart(
            array, dtype, self._bounds(dtype), unique=self.unique, min_gap=self.min_gap, gap_dim=self.gap_dim,
            where=self.where,
        )

    def draw_dtype(self, draw) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        dtype = draw(self.dtype_strategy)
        check_dtype(f"dtype{self.where} (drawn)", dtype)
        return dtype

    def _values(self, dtype: torch.dtype, shape: tuple[int, ...], bounds: tuple[float, float] | None = None):
        key = (dtype, shape, bounds)
        strategy = self._values_cache.get(key)
        if strategy is None:
            if self.elements is None:
                low, high = bounds if bounds is not None else default_bounds(self.min_value, self.max_value)
                elements = element_strategy(dtype, low, high)
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

    def _real_values(self, draw, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        array = draw(self._values(dtype, shape))
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

    def _complex_values(self, draw, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Real and imaginary parts drawn like real values, then moved radially into the modulus bounds."""
        part = PART_DTYPE[dtype]
        low, high = self._modulus_bounds(dtype)
        array = draw(self._values(part, (*shape, 2), (-high, high)))
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

    def draw(self, draw, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """A tensor of this shape, drawn with ``draw`` (a ``@composite`` function's first argument);
        ``dtype`` is given where the caller drew one shared by several inputs."""
        if dtype is None:
            dtype = self.draw_dtype(draw)
        kind = draw_kind(draw, self.layout)
        if dtype in COMPLEX_DTYPES:
            values = self._complex_values(draw, shape, dtype)
        else:
            values = self._real_values(draw, shape, dtype)
        tensor = laid_out(draw, values, kind, self.device)
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
        return f"TensorSpec({', '.join(parts)})"


def per_input_specs(count: int, keywords: dict[str, Any]) -> tuple[list[TensorSpec], Any]:
    """One spec per input: a keyword given as a list (or tuple) has one value per input."""
    unknown = sorted(set(keywords) - set(TENSOR_KEYWORDS))
    if unknown:
        raise InvalidArgument(
            f"unknown tensor keyword(s) {', '.join(f'{k}={keywords[k]!r}' for k in unknown)}; "
            f"known: {', '.join(TENSOR_KEYWORDS)}"
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
    specs = [TensorSpec(**kw, where=f"[{i}]" if count > 1 else "") for i, kw in enumerate(per_input)]
    # a single dtype strategy (not a per-input list) is drawn once and shared by every input
    shared = keywords.get("dtype")
    shared_dtype = shared if isinstance(shared, st.SearchStrategy) else None
    return specs, shared_dtype
