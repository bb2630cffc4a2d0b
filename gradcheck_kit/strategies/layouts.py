"""The memory layout of a drawn tensor: contiguous, a contiguous view at a storage offset, or a real
strided view (permuted dimensions, stepped slices, leading offsets) of a larger buffer whose other
elements are NaN, so a kernel that reads memory it does not own shows it."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from gradcheck_kit.options import LAYOUTS

__all__ = ["LAYOUTS", "draw_kind", "laid_out"]


# layout kinds drawn under layout="any": the first (contiguous) is where shrinking goes; strided
# views fill three of the five entries
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


def _draw_strided(draw, values: torch.Tensor, device) -> torch.Tensor:
    ndim = values.dim()
    if ndim == 0:
        # a 0-d tensor can only be "strided" by living at an offset in a larger buffer
        return _offset_view(values, 1, device)
    perm = draw(st.permutations(range(ndim))) if ndim > 1 else [0]
    steps = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    offsets = draw(st.lists(st.integers(0, 2), min_size=ndim, max_size=ndim))
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


def draw_kind(draw, layout: str) -> int:
    """The kind of layout to give a tensor: drawn for "any" (shrinking towards contiguous), else fixed."""
    if layout == "any":
        return draw(_ANY_LAYOUT)
    return _KIND_CONTIGUOUS if layout == "contiguous" else _KIND_STRIDED


def laid_out(draw, values: torch.Tensor, kind: int, device) -> torch.Tensor:
    """``values`` on ``device`` in a layout of this kind (a strided view draws its strides)."""
    if kind == _KIND_CONTIGUOUS:
        return values.to(device)
    if kind == _KIND_OFFSET:
        return _offset_view(values, 1, device)
    return _draw_strided(draw, values, device)
