"""Non-finite elements (NaN, inf) of the differentiated inputs.

A derivative with respect to a NaN element cannot be estimated (``x ± h`` is NaN again), but fn may not use
such an element at all (``torch.where(t.isnan(), 0, t)``): its outputs are finite, and every other element
can be checked. Those elements are never moved (zero step in a direction, no scale drawn from them) and are
listed as not checked. Where fn does use them its outputs are not finite, and the check stops with an error
that names them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gradcheck_kit._engine.limits import NUMPY_ELEMENTS
from gradcheck_kit._inputs import coord_index, coords

__all__ = ["nonfinite_elements", "describe", "finite_or_zero", "SHOWN"]

#: elements named in a message; the rest are counted
SHOWN = 5


#: dtypes and sizes whose finiteness numpy tests (``nonfinite_elements``)
_NUMPY = (torch.float32, torch.float64)


def nonfinite_elements(inputs: Sequence, wrt: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per differentiated input with non-finite elements: their flat (real-coordinate) positions."""
    out = {}
    for i in wrt:
        t = inputs[i]
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
            continue
        c = coords(t.detach())
        if c.device.type == "cpu" and c.dtype in _NUMPY and c.numel() <= NUMPY_ELEMENTS and not c.is_neg():
            if np.isfinite(c.numpy()).all():  # numpy: a small input's test costs a fraction of torch's
                continue
        finite = torch.isfinite(c.cpu())
        if not bool(finite.all()):
            out[i] = (~finite).nonzero().squeeze(1)
    return out


def describe(inputs: Sequence, names: Sequence[str], where: dict[int, torch.Tensor]) -> str:
    """``"t[3] is nan, t[7] is inf"`` (the first ``SHOWN`` elements, then a count of the others)."""
    parts, total = [], 0
    for i, positions in where.items():
        t = inputs[i]
        values = coords(t.detach()).cpu()
        for j in positions.tolist():
            total += 1
            if len(parts) < SHOWN:
                index, part = coord_index(j, t.shape, t.is_complex())
                label = ", ".join(str(n) for n in index)
                part = f" ({part})" if part else ""
                parts.append(f"{names[i]}[{label}]{part} is {float(values[j])}")
    more = f" and {total - len(parts)} more" if total > len(parts) else ""
    return ", ".join(parts) + more


def finite_or_zero(values: torch.Tensor) -> torch.Tensor:
    """``values`` with non-finite elements replaced by 0 (for scales and steps)."""
    return torch.where(torch.isfinite(values), values, torch.zeros_like(values))
