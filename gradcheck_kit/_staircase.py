"""A float64 function that computes part of its value in lower precision (a custom Function returning
float32 values added to float64 terms): its values carry a staircase of that precision's roundings that the
stencil's noise sample misses (the stencil's points are far apart on that staircase's scale, or all on one
step). Sampled here: fn at ``POINTS`` tiny relative moves of its inputs, where any smooth function is a
straight line, and the residual of that line is the staircase's size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gradcheck_kit import tolerances
from gradcheck_kit._report import Note

__all__ = ["Staircase", "PERTURBATION", "POINTS", "staircase", "note"]

#: relative move of the inputs per point: a few float32 roundings (2^-23 relative) across the points
PERTURBATION = 2.0**-26
POINTS = tuple(range(-4, 5))
#: a residual above this many float64 eps of the outputs' size is no float64 rounding
FLOAT64_NOISE_EPS = 64.0
#: the coarsest precision whose this many eps of the outputs' size exceed the residual explains it
EXPLAINS_EPS = 4.0


@dataclass(frozen=True)
class Staircase:
    dtype: torch.dtype  # the precision whose rounding the residual is of
    relative: float  # the residual's largest size relative to the output's (|f| + rms f)


def _moved(x: torch.Tensor, t: float) -> torch.Tensor:
    base = torch.where(x != 0, x.abs(), torch.ones_like(x))
    return x + (t * PERTURBATION) * base


def staircase(
    evaluate: Callable[[dict[int, torch.Tensor]], Sequence[torch.Tensor]], bases: dict[int, torch.Tensor]
) -> Staircase | None:
    """``evaluate(replacements)``: the differentiable outputs (float64 coordinates) at the base point with the
    real float64 inputs ``bases`` (position -> tensor) replaced; None where fn is smooth at float64's
    rounding there (or the inputs are not all real float64)."""
    if not bases or any(x.dtype != torch.float64 for x in bases.values()):
        return None
    ts = torch.tensor(POINTS, dtype=torch.float64)
    rows = [evaluate({i: _moved(x, float(t)) for i, x in bases.items()}) for t in POINTS]
    design = torch.stack([torch.ones_like(ts), ts], dim=1)
    worst = 0.0
    for pos in range(len(rows[0])):
        values = torch.stack([r[pos] for r in rows])  # (points, n)
        if values.numel() == 0 or not bool(torch.isfinite(values).all()):
            continue
        fit = torch.linalg.lstsq(design, values).solution
        residual = (values - design @ fit).square().mean(dim=0).sqrt()
        centre = values[len(POINTS) // 2]
        size = centre.abs() + centre.square().mean().sqrt() + torch.finfo(torch.float64).tiny
        worst = max(worst, float((residual / size).amax()))
    if worst <= FLOAT64_NOISE_EPS * tolerances.eps(torch.float64):
        return None
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # the finest that explains it
        if worst <= EXPLAINS_EPS * tolerances.eps(dtype):
            return Staircase(dtype, worst)
    return Staircase(torch.bfloat16, worst)


def note(stair: Staircase) -> Note:
    name = str(stair.dtype).replace("torch.", "")
    return Note(
        f"fn's values carry a {name}-sized staircase: at {len(POINTS)} points within {max(POINTS)}·2^-26 of x "
        f"(relative) they stray from a straight line by {stair.relative:.1e} of their size (it computes part of "
        f"its value in {name} inside); the float64 finite differences were checked again with {name}'s step "
        "and round-off model, so resolution is coarse",
        "staircase",
    )
