"""Whether fn run in float64 at a low-precision point is the same function as fn run in the inputs' dtype.

A float32 check evaluates its numerical derivatives in float64 at the float32 point. That is only sound
where the float64 run computes the same function: real code often changes with the dtype (a clamp of
``torch.finfo(x.dtype).eps``, parameters drawn or built in the input's dtype, a solver tolerance or an
iteration count chosen by dtype). The two forwards at x then differ by far more than the low-precision
run's rounding, and the float64 numerics would be the derivative of another function.

The rounding of a low-precision forward is a few eps of its intermediates. Two measures of that size,
each generous: ``FORWARD_EPS`` eps of the output's own size (the entry plus its output's rms) plus
``CAP_EPS`` eps of the inputs' size, and, where
that is exceeded, ``MOVED_FACTOR`` times how far the float64 output moves when the low-precision inputs
move by ``CAP_EPS`` roundings each (an ill-conditioned expression, ``sin(1e4·x)``, rounds its float32
output by that much however it is computed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.intermediates import UNIT_ROUNDINGS
from gradcheck_kit.report import Note

__all__ = ["ForwardGap", "FORWARD_EPS", "MOVED_FACTOR", "forward_gap", "moved_point", "gap_note"]

#: the low-precision forward may differ from the float64 one by this many eps of the output's size
FORWARD_EPS = 2.0**10
#: ... or by this many times the float64 output's move under CAP_EPS roundings of the inputs
MOVED_FACTOR = 4.0
NOTE_CODE = "reference_differs"


@dataclass(frozen=True)
class ForwardGap:
    """How far the float64 forward is from the low-precision one, relative to what rounding explains."""

    ratio: float  # worst |f64 - low| / bound over the outputs' entries (> 1: another function)
    relative: float  # worst |f64 - low| / (|f64| + rms of its output): the size the note gives (0 within 1)
    output: int  # position (among the differentiable outputs) of the worst entry
    rounding: tuple[float, ...] = ()  # per differentiable output: the largest |f64 - low| (its rounding)


def forward_gap(
    low: Sequence[torch.Tensor],
    ref: Sequence[torch.Tensor],
    e: float,
    x_scale: float,
    moved_outputs: Callable[[], Sequence[torch.Tensor] | None] | None = None,
) -> ForwardGap:
    """``low``, ``ref``: the differentiable outputs at x (float64 coordinates) of the low-precision run and of
    the float64 run; ``e``: the low precision's eps; ``x_scale``: the largest rms of the low-precision inputs
    (an absolute floor of ``CAP_EPS`` roundings of it: gelu's tail, ``x·(1 + erf(x/√2))``, is a difference of
    intermediates of the size of x, rounded to 0 in float32 where float64 keeps 1e-8), and ``UNIT_ROUNDINGS``
    eps (of unit size: softplus forms ``1 + e^g``); ``moved_outputs``: the float64 outputs at x moved by
    ``CAP_EPS`` roundings (called only where the first bound is exceeded; None where that fails)."""
    lows = [_host(t) for t in low]
    refs = [_host(t) for t in ref]
    floor = tolerances.CAP_EPS * e * x_scale + UNIT_ROUNDINGS * e + float(torch.finfo(torch.float32).tiny)
    with np.errstate(all="ignore"):
        gaps = [np.abs(re - lo) for lo, re in zip(lows, refs)]
        finite = [bool(np.isfinite(g).all()) for g in gaps]  # (a finite gap: finite outputs in both runs)
        rounding = tuple(
            (float(g.max()) if ok else float(np.where(np.isfinite(g), g, 0.0).max())) if g.size else 0.0
            for g, ok in zip(gaps, finite)
        )

        def ratios(moved) -> list[float]:
            out = []
            for pos, (gap, re, ok) in enumerate(zip(gaps, refs, finite)):
                if gap.size == 0:
                    out.append(0.0)
                    continue
                diff = gap if ok else np.where(np.isfinite(gap), gap, np.inf)
                re0 = re if ok else np.where(np.isfinite(re), re, 0.0)
                bound = FORWARD_EPS * e * (np.abs(re0) + np.sqrt(np.mean(np.square(re0)))) + floor
                if moved is not None:
                    shift = np.abs(moved[pos] - re)
                    shift = np.where(np.isfinite(shift), shift, 0.0)
                    bound = np.maximum(bound, MOVED_FACTOR * shift)
                out.append(float(np.max(diff / bound)))
            return out

        r = ratios(None)
        if max(r) > 1.0 and moved_outputs is not None:
            moved = moved_outputs()
            if moved is not None:
                r = ratios([_host(t) for t in moved])
        worst = max(range(len(r)), key=lambda p: r[p])
        rel = _relative(lows[worst], refs[worst]) if r[worst] > 1.0 else 0.0  # the note's size, where one is made
    return ForwardGap(r[worst], rel, worst, rounding)


def _relative(lo: np.ndarray, re: np.ndarray) -> float:
    """The worst ``|f64 - low| / (|f64| + rms of f64)`` of one output (0 for an empty one)."""
    if not lo.size:
        return 0.0
    size = np.abs(re) + np.sqrt(np.mean(np.square(re)))
    q = np.abs(re - lo) / np.maximum(size, np.finfo(np.float64).tiny)
    # NaN (an entry not finite in one run only) as infinitely far, inf as the largest finite value
    return math.inf if np.isnan(q).any() else float(np.minimum(q, np.finfo(np.float64).max).max())


def _host(t: torch.Tensor) -> np.ndarray:
    """``t`` flat as float64 on the host, in numpy (a check's outputs: one copy per check)."""
    return t.detach().to("cpu", torch.float64).reshape(-1).resolve_neg().numpy()


def moved_point(x: torch.Tensor, e: float) -> torch.Tensor:
    """``x`` (float64 copy of a low-precision input) with each real coordinate moved by ``CAP_EPS`` roundings
    of its own size (``e``: the low precision's eps), signs alternating."""
    c = torch.view_as_real(x).reshape(-1) if x.is_complex() else x.reshape(-1)
    signs = 1.0 - 2.0 * (torch.arange(c.numel(), device=c.device) % 2).to(c.dtype)
    moved = c + c.abs() * (tolerances.CAP_EPS * e) * signs
    if x.is_complex():
        return torch.view_as_complex(moved.reshape(*x.shape, 2))
    return moved.reshape(x.shape)


def gap_note(gap: ForwardGap, low_name: str, output: int) -> Note:
    """The note of a check whose float64 run was set aside."""
    return Note(
        f"fn computes another function in float64: its float64 outputs at the {low_name} point differ from its "
        f"{low_name} outputs by {gap.relative:.1e} of their size (output {output}), more than {low_name} "
        f"rounding explains; usual causes: clamps from torch.finfo(x.dtype), parameters drawn or modules built "
        f"in the input's dtype, solver tolerances or iteration counts chosen by dtype. Numerical derivatives "
        f"in {low_name}, so resolution is coarse",
        NOTE_CODE,
    )
