"""An expected gradient that is a range at kinks: ``GradientRange``.

At a kink of an elementwise op (``gst.Op(..., kinks=[1.0])`` at 1) the derivative does not exist; the
one-sided derivatives bound what a backward may return (any value between them is a valid subgradient).
``Expression.gradient`` returns a ``GradientRange`` for an input whose gradient touches a kink: a tensor
(its values are the analytic formula's, as without kinks) that also carries ``low`` and ``high``, the
elementwise bounds from the one-sided derivatives. ``gk.assert_grad_equals`` accepts it as ``expected``
and passes where autograd lies within ``[low, high]`` (with the usual tolerances); anything else treats it
as the plain tensor it is.
"""

from __future__ import annotations

import torch

__all__ = ["GradientRange"]


class GradientRange(torch.Tensor):
    """A tensor of expected gradient values with elementwise bounds ``low <= high`` (same shape)."""

    low: torch.Tensor
    high: torch.Tensor

    # operations on it give plain tensors (the bounds would not follow them)
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> "GradientRange":
        out = torch.Tensor._make_subclass(cls, value.detach())
        out.low = torch.minimum(low, high).detach().to(value.dtype)
        out.high = torch.maximum(low, high).detach().to(value.dtype)
        return out

    def __repr__(self) -> str:  # the plain values, then the bounds
        return f"GradientRange({self.as_subclass(torch.Tensor)!r}, low={self.low!r}, high={self.high!r})"

    def __reduce_ex__(self, protocol):
        return (GradientRange, (self.as_subclass(torch.Tensor), self.low, self.high))
