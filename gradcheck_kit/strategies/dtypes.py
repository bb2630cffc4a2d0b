"""The torch dtypes tensors are drawn in, and strategies of them."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from gradcheck_kit.errors import InvalidArgument

__all__ = ["COMPLEX_DTYPES", "FLOAT_DTYPES", "PART_DTYPE", "check_dtype", "complex_dtypes", "float_dtypes"]

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
COMPLEX_DTYPES = (torch.complex128, torch.complex64)
#: the dtype of the real and imaginary parts of each complex dtype
PART_DTYPE = {torch.complex128: torch.float64, torch.complex64: torch.float32}


def check_dtype(name: str, dtype: Any) -> None:
    if dtype not in FLOAT_DTYPES and dtype not in COMPLEX_DTYPES:
        raise InvalidArgument(
            f"{name}={dtype!r} is not a floating or complex dtype; expected one of "
            f"{', '.join(str(d) for d in FLOAT_DTYPES + COMPLEX_DTYPES)}"
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
