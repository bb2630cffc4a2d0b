"""The calls of fn a failing check may make beyond those of its passing path, and the count of them.

The passing path of a check is what the same check of a right gradient of the same fn makes: the forward,
the ±h screen (or the whole stencil where the screen does not apply), the structural and forward-AD checks.
A failed comparison adds the failing path:

- the rest of the stencil on an input whose first comparison failed (``failed_first``: the screen left it
  and its whole stencil failed too; a passing input's whole stencil stays on the passing path);
- the second opinions (kinks, one-sided stencils, ties, a second noise sample, smaller steps, the staircase
  probe: ``spending``);
- the calls of a plan given up for another (``abandoned``: auto mode's directional check before the full
  check it stood in for, or narrowed down);
- where the cost plan's directions failed beyond doubt, the rest of their stencil (``failed_directions``)
  and the bisection that names a wrong element instead of the full check (``pinpoint``, second opinions).

Each costs evaluations of fn, and on an expensive fn that cannot run under vmap each one is a call.
The second opinions and the plan given up may make at most as many calls as the passing path less the
whole stencil of the failed inputs where fn is expensive (``expensive``), as the rest of the check where
it is cheap, and always ``SECOND_OPINION_FLOOR`` calls, or as many as take ``SECOND_OPINION_FLOOR_SECONDS``
where fn is cheaper (a cheap fn gets every second opinion: its calls cost time, not a bound). The floor
stays for an expensive fn: a right gradient at a tie, or of 1/x next to its pole, needs it to pass. Calls
of a second opinion that the check of a right gradient makes too (``twin``: refine's smaller steps on a
coordinate whose estimate moved off the one at h, where fn changes below h) are on the passing path. The
whole stencil of the failed inputs and the staircase probe are never cut: a failing check makes at most
its passing twin's calls, those, and the larger of the passing path's calls and the floor.
Calls, not points: under vmap a second opinion over many coordinates is one call.
Where fn's calls are expensive, a failure that none of them could clear (``decisive``) leaves out every
later one (``decided``; the staircase probe, kept back in ``reserve``, still runs).
The report's ``extra_evaluations`` is ``extra``: the failing path's calls; the second opinions' note gives
them with the passing path's calls (the bound).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator

from gradcheck_kit._engine.limits import SECOND_OPINION_FLOOR, SECOND_OPINION_FLOOR_SECONDS
from gradcheck_kit.report import Note, NoteCode


class Budget:
    """Evaluations spent on second opinions (``spent``) against those made without them."""

    #: the key of ``stencil`` for the whole stencil on the entries the screen left open
    OPEN = -1

    def __init__(self) -> None:
        self.spent = 0
        self.reserve = 0  # calls kept back for a later second opinion (the staircase probe after the stencil)
        self._start = 0  # the calls count where this phase began (a recheck in another precision restarts)
        self._spent_before = 0  # spent in earlier phases
        self._open_at: tuple | None = None  # the calls and twin counts when the running second opinion began
        self.cut = False  # a second opinion was cut short or left out for the budget
        self.covered: dict[int, set] = {}  # per input: columns the tie check evaluated at h/8 (free to reuse)
        self.decided = False  # a failure no second opinion can clear was seen (``decisive``): none is made
        self.abandoned = 0  # calls of a plan given up for another (auto mode's directional check, ``plan``)
        self._abandoned_phase = 0  # ... in this phase
        self._plan_at = 0  # the calls count where the plan began
        self.failing = 0  # calls of the whole stencil on inputs whose first comparison failed
        self._failing_phase = 0  # ... in this phase
        self._stencil: dict[int, int] = {}  # per input: calls of its whole stencil, until it is judged
        self._twin = 0  # calls inside second opinions that the check of a right gradient makes too (``twin``)

    def _total(self, run) -> int:
        return run.evaluator.calls + run.extra_evaluations

    @staticmethod
    def _batches(run) -> bool:
        """Whether the evaluations run through vmap (a second opinion is one call, whatever its size)."""
        return run.evaluator.vmap_failed is None and run.evaluator.grad_inside is None

    def point_by_point(self, run) -> bool:
        """Whether each point a second opinion evaluates is a call of fn (fn does not run under vmap)."""
        return not self._batches(run)

    def _spent_now(self, run) -> int:
        """Spent in this phase, the running second opinion included."""
        running = 0 if self._open_at is None else self._total(run) - self._open_at[0] - self._twin + self._open_at[1]
        return self.spent - self._spent_before + running

    def remaining(self, run) -> int:
        """Evaluations the second opinions may still spend (none after a decisive failure)."""
        if self.decided:
            return 0
        used = self._spent_now(run) + self._abandoned_phase
        rest = self._total(run) - self._start - used  # the passing path and the failed inputs' stencil
        if self.expensive(run):  # the passing path less that stencil
            rest -= 2 * self._failing_phase
        return max(rest - self.reserve, self._floor(run)) - used

    @staticmethod
    def _floor(run) -> int:
        """The calls second opinions may always make: as many as take ``SECOND_OPINION_FLOOR_SECONDS`` where
        that is at least ``SECOND_OPINION_FLOOR`` (fn is cheap), else ``SECOND_OPINION_FLOOR``."""
        per_call = Budget._per_call(run)
        cheap = int(SECOND_OPINION_FLOOR_SECONDS / per_call) if per_call > 0 else SECOND_OPINION_FLOOR
        return max(SECOND_OPINION_FLOOR, cheap)

    @staticmethod
    def expensive(run) -> bool:
        """Whether fn's calls are expensive: the floor of seconds pays for fewer than ``SECOND_OPINION_FLOOR``
        of them (a cheap fn gets every second opinion)."""
        return Budget._per_call(run) * SECOND_OPINION_FLOOR > SECOND_OPINION_FLOOR_SECONDS

    @staticmethod
    def _per_call(run) -> float:
        """Seconds one call of fn takes: the shortest of the forward and the check's plain calls (a call that the
        machine's load stretched does not make a cheap fn expensive)."""
        return min(run.evaluator.fastest_call, run.forward_seconds)

    def restart(self, run) -> None:
        """A new phase: the check runs again from its start (in fn's own precision), with a budget of its own."""
        self._start, self._spent_before, self.reserve = self._total(run), self.spent, 0
        self.decided = False
        self._abandoned_phase = self._failing_phase = 0
        self._stencil.clear()

    @contextmanager
    def stencil(self, run, i: int) -> Iterator[None]:
        """The whole stencil of input ``i`` made inside the block (``OPEN``: on the entries the ±h screen left
        open, of any input): on the failing path if its first comparison fails (``failed_first``)."""
        start = self._total(run)
        try:
            yield
        finally:
            self._stencil[i] = self._stencil.get(i, 0) + self._total(run) - start

    def failed_first(self, i: int) -> None:
        """Input ``i``'s first comparison on its whole stencil failed: that stencil is on the failing path, and
        so is the one on the open entries that could not settle it."""
        calls = self._stencil.pop(i, 0) + self._stencil.pop(self.OPEN, 0)
        self.failing += calls
        self._failing_phase += calls

    @contextmanager
    def twin(self, run, fraction: float) -> Iterator[None]:
        """``fraction`` of the calls made inside the block (within a second opinion) are on the passing path:
        the check of a right gradient makes them too (refine's smaller steps where fn changes below h).
        They are not spent, and count with the passing path."""
        start = self._total(run)
        try:
            yield
        finally:
            self._twin += int((self._total(run) - start) * fraction)

    def extra(self) -> int:
        """The failing path's calls: the whole stencil of failed inputs, second opinions, plans given up."""
        return self.spent + self.abandoned + self.failing

    def plan_begins(self, run) -> None:
        """A plan that may be given up begins (``abandon``)."""
        self._plan_at = self._total(run)

    def abandon(self, run) -> int:
        """The plan begun at ``plan_begins`` is given up for another: its calls count against the second
        opinions' budget (a failure's extra calls, together at most the passing check's) and in
        ``abandoned``. Returns them."""
        calls = self._total(run) - self._plan_at
        self.abandoned += calls
        self._abandoned_phase += calls
        return calls

    def unplanned(self, calls: int) -> None:
        """``calls`` made inside the plan were second opinions (``pinpoint``), counted as spent: not the
        plan's, should it be given up (``abandon``)."""
        self._plan_at += calls

    def failed_directions(self, calls: int) -> None:
        """The cost plan's directions failed their ±h screen and made the rest of their stencil (``calls``),
        which a passing check does not: on the failing path."""
        self.failing += calls
        self._failing_phase += calls

    def columns(self, run, points_per_column: int, most: int) -> int:
        """How many coordinates a second opinion of ``points_per_column`` evaluations each may take (at
        most ``most``); 0 where the budget is spent."""
        if self._batches(run):
            allowed = most if self.remaining(run) >= 1 else 0
        else:
            allowed = max(0, min(most, self.remaining(run) // max(points_per_column, 1)))
        self.cut |= allowed < most and not self.decided
        return allowed

    def affords(self, run, points: int, batches: int = 1) -> bool:
        """Whether the budget pays for ``points`` evaluations (``batches`` calls under vmap)."""
        return self.remaining(run) >= (batches if self._batches(run) else points)

    def levels(self, run, points_per_level: int, most: int) -> int:
        """How many levels (smaller steps) of ``points_per_level`` evaluations each the budget pays for."""
        per_level = 1 if self._batches(run) else max(points_per_level, 1)
        return max(0, min(most, self.remaining(run) // per_level))

    def first(self, run, cols, points_per_column: int, most: int):
        """The first of the coordinates ``cols`` (at most ``most``) that the budget pays for."""
        return cols[: self.columns(run, points_per_column, min(most, int(cols.numel())))]

    def affordable(self, run, i: int, cols, points: int, first_level: bool):
        """``cols`` (sorted coordinates of input ``i``) cut to those the budget pays for at ``points``
        evaluations each; at refine's first level the columns the tie check evaluated cost nothing."""
        free = self.covered.get(i, set()) if first_level else set()
        paid = [c for c in cols.tolist() if c not in free]
        allowed = set(paid[: self.columns(run, points, len(paid))]) if paid else set() | (free & set(cols.tolist()))
        keep = [n for n, c in enumerate(cols.tolist()) if c in allowed]
        return cols[keep]

    def note(self, run) -> Note:
        """What the second opinions and the failing path cost against the passing path's calls, and whether
        the budget cut them short."""
        extra = self.extra()
        passing = self._total(run) - extra
        text = (f"{self.spent} call(s) of fn were second opinions on failed or doubtful derivatives; the failing "
                f"path made {extra} call(s) beyond the {passing} of the passing path")
        if self.decided:
            text += (" (the others were left out: a derivative failed by far more than its allowance on a "
                     "smooth, kink-free, untied stretch of fn, which none of them could clear)")
        elif self.cut:
            text += " (cut short: the failing path may make at most as many calls as the passing path)"
        cut = self.cut and not self.decided
        return Note(text, NoteCode.SECOND_OPINIONS, (self.spent, cut, self.decided, extra, passing))

    @contextmanager
    def spending(self, run) -> Iterator[None]:
        """Count the evaluations made inside the block as spent on second opinions (nested blocks count
        once)."""
        if self._open_at is not None:
            yield
            return
        self._open_at = (self._total(run), self._twin)
        try:
            yield
        finally:
            self.spent += self._total(run) - self._open_at[0] - self._twin + self._open_at[1]
            self._open_at = None


def second_opinion(fn: Callable) -> Callable:
    """A second opinion of ``settle`` (its first argument the run): its evaluations count as spent."""

    @functools.wraps(fn)
    def counted(run, *args, **kwargs):
        with run.budget.spending(run):
            return fn(run, *args, **kwargs)

    return counted
