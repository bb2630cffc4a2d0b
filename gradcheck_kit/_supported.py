"""Which tensors the checks can work with: strided tensors on a device that holds values.

Sparse (COO, CSR, CSC, BSR, BSC), nested and meta tensors are named here, so that an argument of
such a kind is refused up front with a message saying what is unsupported, instead of failing deep
inside torch.
"""

from __future__ import annotations

from typing import Any

import torch

from gradcheck_kit.errors import InvalidArgument

__all__ = ["unsupported_kind", "refuse_unsupported"]

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
