"""A float64 function that computes part of its value in lower precision (a custom Function returning
float32 values added to float64 terms): its values carry a staircase of that precision's roundings that the
stencil's noise sample misses (the stencil's points are far apart on that staircase's scale, or all on one
step). Sampled here: fn at ``POINTS`` tiny relative moves of its inputs, where a smooth function's third
differences are far below float64's rounding; their median is the staircase's size (noise), which a kink
among the points does not move."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit.report import Note

__all__ = ["Staircase", "PERTURBATION", "POINTS", "staircase", "note"]

#: relative move of the inputs per point: at least one float32 rounding (2^-24 to 2^-23 relative), so that
#: each point rounds on its own
PERTURBATION = 2.0**-22
POINTS = tuple(range(-6, 7))
#: a scatter above this many float64 eps of the outputs' size is no float64 rounding (float64's own, with
#: cancellation of intermediates 1e5 times the output, stays below; a float32 part of 1e-2 of it is above)
FLOAT64_NOISE_EPS = 2.0**20
#: ... nor one below this many float64 eps at unit size or the inputs' (float64 rounding an intermediate of
#: that size: ``cos(x) - 1`` at ``x = 1e-5`` forms ``cos(x)`` at 1), where autograd runs in float64 too: a
#: float32 autograd (``unit_floor=False``) rounds that intermediate at float32's eps (torch's float32 gelu
#: backward at -6.8: 0 for -2e-10), which the coarser precision's numerics allow for
FLOAT64_UNIT_EPS = 16.0
#: the finest precision whose this many eps of the outputs' size exceed the scatter explains it
EXPLAINS_EPS = 4.0


@dataclass(frozen=True)
class Staircase:
    dtype: torch.dtype  # the precision whose rounding the scatter is of
    relative: float  # the scatter's largest size relative to the output's (|f| + rms f)


def _moved(x: torch.Tensor, t: float) -> torch.Tensor:
    """x moved by ``t`` steps relative to each coordinate (a zero stays: no scale to move it by, and float32
    rounds no input there)."""
    return x + (t * PERTURBATION) * x.abs()


def staircase(
    evaluate: Callable[[dict[int, torch.Tensor]], Sequence[torch.Tensor]], bases: dict[int, torch.Tensor],
    evaluate_all: Callable[[list, list], Sequence[torch.Tensor] | None] | None = None,
    points: Sequence[int] = POINTS, unit_floor: bool = True,
) -> Staircase | None:
    """``evaluate(replacements)``: the differentiable outputs (float64 coordinates) at the base point with the
    real float64 inputs ``bases`` (position -> tensor) replaced; None where fn is smooth at float64's
    rounding there (or the inputs are not all real float64). ``evaluate_all(inputs, batches)``, where given:
    the outputs ``(points, n)`` at every point at once (one call of fn under vmap), None where it cannot.
    ``points``: the moves (consecutive steps; fewer points, fewer third differences to take the median of).
    ``unit_floor``: a scatter below ``FLOAT64_UNIT_EPS`` is float64's own (see there)."""
    if not bases or any(x.dtype != torch.float64 for x in bases.values()):
        return None
    moved = {i: torch.stack([_moved(x, float(t)) for t in points]) for i, x in bases.items()}
    together = None if evaluate_all is None else evaluate_all(list(moved), list(moved.values()))
    if together is not None:
        rows = [[out[p] for out in together] for p in range(len(points))]
    else:
        rows = [evaluate({i: m[p] for i, m in moved.items()}) for p in range(len(points))]
    worst = 0.0
    x_size = max([1.0] + [float(x.abs().max()) for x in bases.values() if x.numel()])
    unit = FLOAT64_UNIT_EPS * tolerances.eps(torch.float64) * x_size if unit_floor else 0.0
    for pos in range(len(rows[0])):
        values = torch.stack([r[pos] for r in rows])  # (points, n)
        if values.numel() == 0 or not bool(torch.isfinite(values).all()):
            continue
        # third differences: a smooth function's are about f'''·s^3, far below its rounding; noise of size
        # sigma gives about sqrt(20)·sigma. Their median per entry: a kink among the points spoils 3 of them
        third = torch.diff(values, n=3, dim=0).abs()
        sigma = third.median(dim=0).values / (0.6745 * 20**0.5)
        centre = values[len(points) // 2]
        size = centre.abs() + centre.square().mean().sqrt() + torch.finfo(torch.float64).tiny
        worst = max(worst, float((sigma.where(sigma > unit, torch.zeros_like(sigma)) / size).amax()))
    if worst <= FLOAT64_NOISE_EPS * tolerances.eps(torch.float64) or worst > EXPLAINS_EPS * tolerances.eps(torch.bfloat16):
        return None  # float64's own rounding, or more than any rounding: fn changes on a scale below the points
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # the finest that explains it
        if worst <= EXPLAINS_EPS * tolerances.eps(dtype):
            return Staircase(dtype, worst)
    return None


def note(stair: Staircase) -> Note:
    name = str(stair.dtype).replace("torch.", "")
    return Note(
        f"fn's values carry a {name}-sized staircase: at {len(POINTS)} points within {max(POINTS)}·2^-22 of x "
        f"(relative) they scatter by {stair.relative:.1e} of their size (it computes part of its value in "
        f"{name} inside); the float64 finite differences were checked again with {name}'s step and round-off "
        "model, so resolution is coarse",
        "staircase", (name,),
    )
