"""A failed float32 check whose float64 reference is another function at the failing elements only.

The float64 run is compared with the low-precision run once, over whole outputs (``reference``), before
it is trusted. A dtype-dependent clamp (``sqrt(t² + finfo(t.dtype).eps)``) changes only the elements where
the clamp matters, by far less than the whole output's size, so that comparison passes and the elements
near the clamp fail: their float64 derivative is the derivative of another function.

Where a full check with a float64 reference fails, the output elements of its failing entries are compared
again, each against its own rounding: ``ELEMENT_EPS`` eps of the element's size plus the size of the
input element of the entry (intermediates of that size round by that much), plus ``UNIT_ROUNDINGS`` eps
(an intermediate of unit size). Where an element differs by
more, the check runs again with the numerics in the inputs' own dtype, whose results replace the first.
A backward that is wrong only in low precision leaves its forward equal to the float64 one, so it stays
caught; a wrong gradient stays caught at the inputs' dtype's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.intermediates import UNIT_ROUNDINGS
from gradcheck_kit._inputs import coord_index, coords64
from gradcheck_kit.report import Note, format_index

__all__ = ["ELEMENT_EPS", "ElementGap", "element_gap", "note"]

#: the low-precision forward may differ from the float64 one at an element by this many eps of its size
ELEMENT_EPS = 64.0


@dataclass(frozen=True)
class ElementGap:
    """The output element whose float64 value differs most from the low-precision one, beyond rounding."""

    output: int
    element: tuple
    low: float
    ref: float
    ratio: float  # |ref - low| / bound (> 1)


def element_gap(outs: list, out_idx: list, f0: list, mismatches: list, eps: float) -> ElementGap | None:
    """``outs``: fn's low-precision outputs; ``out_idx``: the differentiable ones, in the order of ``f0``,
    the float64 run's outputs at x (float64 coordinates); ``mismatches``: the failing entries.
    The worst output element beyond its rounding, or None where every element is within it."""
    worst = None
    lows: dict[int, torch.Tensor] = {}  # each output's values once, whatever the number of its mismatches
    for m in mismatches:
        if m.output_index not in out_idx or m.all_inputs:
            continue
        out = outs[m.output_index]
        if out.is_complex():
            continue
        pos = out_idx.index(m.output_index)
        low = lows.setdefault(m.output_index, coords64(out))
        ref = f0[pos].reshape(-1)
        if ref.numel() != low.numel():
            continue
        if m.output_element is not None and len(m.output_element) == out.dim():
            sel = torch.tensor([int(np.ravel_multi_index(m.output_element, tuple(out.shape)))])
        else:
            sel = torch.arange(low.numel())
        size = ref[sel].abs() + abs(m.input_value or 0.0)
        bound = ELEMENT_EPS * eps * size + UNIT_ROUNDINGS * eps + torch.finfo(torch.float64).tiny
        ratio = ((ref[sel] - low[sel]).abs() / bound).nan_to_num(0.0, 0.0, 0.0)
        best = int(ratio.argmax())
        r = float(ratio[best])
        if r > 1.0 and (worst is None or r > worst.ratio):
            flat = int(sel[best])
            element, _ = coord_index(flat, tuple(out.shape), False)
            worst = ElementGap(m.output_index, element, float(low[flat]), float(ref[flat]), r)
    return worst



def note(gap: ElementGap, low_name: str, output_name: str) -> Note:
    """The note of a check run again with numerics in the inputs' dtype."""
    rel = abs(gap.ref - gap.low) / max(abs(gap.ref), abs(gap.low), torch.finfo(torch.float64).tiny)
    return Note(
        f"fn computes another function in float64 at {output_name}{format_index(gap.element)}: "
        f"{gap.ref:.6g} in float64 against {gap.low:.6g} in {low_name} ({rel:.1e} of its size, "
        f"{gap.ratio:.0f}x what {low_name} rounding explains there); usual causes: clamps from "
        f"torch.finfo(x.dtype), parameters drawn or built in the input's dtype. The check ran again with "
        f"numerical derivatives in {low_name}, so resolution is coarse",
        "reference_differs",
        fields=(gap.output, gap.element),
    )


def low_eps(run) -> float:
    """eps of the lowest precision among the differentiated inputs."""
    return max(tolerances.eps(run.inputs[i].dtype) for i in run.wrt)
