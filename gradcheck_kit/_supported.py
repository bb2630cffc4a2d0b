"""Which tensors the checks can work with: strided tensors on a device that holds values.

Sparse (COO, CSR, CSC, BSR, BSC), nested and meta tensors are named here, so that an argument of
such a kind is refused up front with a message saying what is unsupported, instead of failing deep
inside torch.
"""

from __future__ import annotations

from typing import Any

import torch

from gradcheck_kit.errors import InvalidArgument

__all__ = ["unsupported_kind", "refuse_unsupported", "check_grad_outputs"]

_LAYOUTS = {
    torch.sparse_coo: "a sparse COO tensor",
    torch.sparse_csr: "a sparse CSR tensor",
    torch.sparse_csc: "a sparse CSC tensor",
    torch.sparse_bsr: "a sparse BSR tensor",
    torch.sparse_bsc: "a sparse BSC tensor",
}


def unsupported_kind(value: Any) -> str | None:
    """What makes the tensor ``value`` unsupported ("a sparse COO tensor", "a meta tensor", ...), or None."""
    if not isinstance(value, torch.Tensor):
        return None
    if getattr(value, "is_nested", False):
        return "a nested tensor"
    if value.layout in _LAYOUTS:
        return _LAYOUTS[value.layout]
    if value.layout != torch.strided:
        return f"a tensor of layout {value.layout}"
    if value.device.type == "meta":
        return f"a meta tensor of shape {tuple(value.shape)}"
    return None


def _advice(kind: str) -> str:
    if kind.startswith("a meta"):
        return "it holds no values; create it on the CPU or a GPU"
    if kind.startswith("a sparse"):
        return "only strided (dense) tensors are supported (convert with .to_dense())"
    return "only strided (dense) tensors are supported"


def refuse_unsupported(value: Any, name: str) -> None:
    """Raise ``InvalidArgument`` naming ``name`` when ``value`` is (or holds, for a tuple or list) an
    unsupported tensor."""
    items = list(enumerate(value)) if isinstance(value, (tuple, list)) else [(None, value)]
    for i, item in items:
        kind = unsupported_kind(item)
        if kind is not None:
            where = name if i is None else f"{name}[{i}]"
            raise InvalidArgument(f"{where} is {kind}: {_advice(kind)}")


def check_grad_outputs(value: Any) -> None:
    """``grad_outputs`` is None, a tensor, or a tuple/list of tensors (None for an output without one),
    each a supported tensor; else ``InvalidArgument``."""
    if value is None:
        return
    if not isinstance(value, (torch.Tensor, tuple, list)):
        raise InvalidArgument(
            f"grad_outputs={value!r} must be a tensor or a tuple of tensors (one per output of fn)"
        )
    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            if item is not None and not isinstance(item, torch.Tensor):
                raise InvalidArgument(
                    f"grad_outputs[{i}]={item!r} must be a tensor (the vector for output {i} of fn)"
                )
    refuse_unsupported(value, "grad_outputs")
