"""Memory for full mode's points, kept between batches and checks, one array per thread and dtype.

Full mode writes the perturbed inputs ``x + m·h_j·e_j`` of every coordinate into one array per batch: for
an input of n coordinates, 2n rows of n values at the ±h screen. Fresh memory that large comes from the
operating system page by page (glibc maps an allocation above its threshold afresh and unmaps it when it
is freed), and those page faults can cost as much as evaluating a cheap fn at every point. So the points
go into memory kept here (CPU only; a GPU's caching allocator keeps its own), up to ``KEPT_BYTES``.

A batch takes the array out while it uses it (a check run inside fn's own evaluation finds none and
allocates its own) and gives it back after, unless fn's outputs are views of the points: they would
change with the next batch, so the array is left to them.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from gradcheck_kit._engine.limits import WORKSPACE_BYTES

__all__ = ["Lease", "points"]

_LOCAL = threading.local()


class Lease:
    """An array lent by ``points`` (``array``: flat, uninitialised); ``keep`` false: not given back."""

    def __init__(self, array: torch.Tensor) -> None:
        self.array = array
        self.keep = True

    def shared_with(self, outputs: Sequence[torch.Tensor]) -> None:
        """Leave the array to ``outputs`` where any of them is a view of it."""
        mine = self.array.untyped_storage().data_ptr()
        if any(o.untyped_storage().data_ptr() == mine for o in outputs):
            self.keep = False


@contextmanager
def points(numel: int, dtype: torch.dtype, device: torch.device) -> Iterator[Lease]:
    """A flat array of ``numel`` elements of ``dtype`` on ``device``: on the CPU, the memory this thread kept
    from an earlier batch where it is large enough; given back after the block (``Lease.keep``)."""
    if torch.device(device).type != "cpu":
        yield Lease(torch.empty(numel, dtype=dtype, device=device))
        return
    kept = getattr(_LOCAL, "arrays", None)
    if kept is None:
        kept = _LOCAL.arrays = {}
    array = kept.get(dtype)
    if array is None or array.numel() < numel:
        array = torch.empty(numel, dtype=dtype)
    else:
        del kept[dtype]  # taken while in use
    lease = Lease(array[:numel])
    try:
        yield lease
    finally:
        if lease.keep and array.numel() * array.element_size() <= WORKSPACE_BYTES:
            other = kept.get(dtype)  # a smaller one, or one a check run inside fn gave back meanwhile
            if other is None or other.numel() < array.numel():
                kept[dtype] = array
