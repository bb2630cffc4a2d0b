"""What full mode will cost, estimated before it runs.

Full mode perturbs every input coordinate: ``coordinates × points`` evaluations of fn, each on a whole
copy of the inputs, so the check grows with the square of the input's size: a ``sum`` over 10^5 elements
takes minutes where its forward takes microseconds. The cost of one point:

- through ``vmap`` on the CPU, ``ELEMENT_SECONDS`` per input and output element (a count, not a timing: a
  small batch runs faster per point than the check's large ones, and a busy machine times anything
  slower). A fn that computes much more than its elements (a convolution) costs more: the estimate is
  a lower bound there;
- through ``vmap`` on another device, one batch as large as the check's, timed (the fastest of
  ``REPEATS`` runs);
- without vmap, a call of fn (the fastest of the forward that ran and one more) plus the cost of its
  elements.

Above ``limit_seconds()`` the check is not run: the report carries an error with the estimate, pointing
to ``mode="auto"``/``"directional"`` (a constant number of evaluations whatever the size). The limit is
an environment setting, so that a deliberate long full check can opt in without a new keyword. Above
``WARN_FRACTION`` of the limit it runs with a note saying what it was estimated to cost.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.report import Note, NoteCode

__all__ = ["FullCost", "estimate", "timed", "limit_seconds", "refusal", "warning", "ENV_LIMIT", "WARN_FRACTION"]

#: timed runs (the fastest counts; they count as evaluations)
REPEATS = 2
#: one element of one batched point (inputs + outputs) through vmap on a CPU: copied, computed and
#: projected (docs/numerics.md, "Full mode's cost")
ELEMENT_SECONDS = 2e-8
#: estimated seconds above which full mode is not run, unless ENV_LIMIT says otherwise
DEFAULT_LIMIT_SECONDS = 60.0
ENV_LIMIT = "GRADCHECK_KIT_FULL_SECONDS"
#: a full check estimated above this fraction of the limit (10 s of the default minute) runs with a note
WARN_FRACTION = 1 / 6
#: below this many coordinates full mode is never estimated (at most a few seconds)
SMALL_COORDS = 1 << 12


@dataclass(frozen=True)
class FullCost:
    seconds: float
    coordinates: int
    points: int  # evaluations per coordinate (the fewest the check can get by with)
    per_point: float  # seconds
    batched: bool  # through vmap (else one call of fn per point)


def estimate(coordinates: int, points: int, per_point: float, batched: bool) -> FullCost:
    """``per_point``: seconds of one evaluation (measured)."""
    return FullCost(coordinates * points * per_point, coordinates, points, per_point, batched)


def timed(run: Callable[[], object], points: int, repeats: int = REPEATS) -> float:
    """Seconds per point of ``run`` (which evaluates ``points`` points): the fastest of ``repeats`` runs."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / max(points, 1)


def limit_seconds() -> float:
    """The limit from ``ENV_LIMIT`` (seconds, ``inf`` for none), else ``DEFAULT_LIMIT_SECONDS``."""
    raw = os.environ.get(ENV_LIMIT, "").strip()
    if not raw:
        return DEFAULT_LIMIT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise InvalidArgument(f"{ENV_LIMIT}={raw!r} must be a non-negative number of seconds, or inf")
    return value


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.2g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _how(cost: FullCost) -> str:
    path = "batched through vmap" if cost.batched else "one call of fn each"
    return (
        f"{cost.coordinates:,} input coordinates × {cost.points} evaluations, about {cost.per_point * 1e3:.2g} ms "
        f"per evaluation ({path})"
    )


def refusal(cost: FullCost, limit: float) -> str:
    return (
        f"mode='full' not run: it would take about {_duration(cost.seconds)} ({_how(cost)}), above the limit of "
        f"{_duration(limit)}. Use mode='auto' or mode='directional' (a constant number of evaluations whatever the "
        f"size; auto narrows a failure down to the wrong elements), or set the environment variable "
        f"{ENV_LIMIT} to a larger number of seconds (or inf) to run it anyway"
    )


def warning(cost: FullCost) -> Note:
    return Note(
        f"mode='full' was estimated at about {_duration(cost.seconds)} ({_how(cost)}); mode='auto' or "
        "mode='directional' costs a constant number of evaluations whatever the size",
        NoteCode.FULL_COST, (cost.coordinates, cost.points),
    )
