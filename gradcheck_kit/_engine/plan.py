"""Auto mode's plan by cost: a function that cannot run under vmap is checked along directions where that
takes clearly fewer calls of fn than a full check, and by the full check where the directional one fails.

Full mode evaluates fn at every input coordinate's stencil (at least f at ±h), one call each where fn cannot
run under vmap (a custom Function without a vmap rule, a numpy-backed layer, a solver). A directional check
takes a constant number of calls whatever the size: two directions of two calls each where the ±h screen
decides and a forward-AD pass each, plus the one-sided evaluations that judge the ties of the inputs
(``directional_ties``). Where
that is at most ``Tuning.auto_plan_fraction`` of the full check's calls, auto mode checks along directions;
a directional check that fails (its backward, or forward AD's projections) is followed by the full check
it stood in for (``fall_back``), whose verdict is the check's: a pass costs a few calls, and the verdicts are
full mode's wherever the directions see something wrong. The directions' calls count against the second
opinions' budget (``budget.Budget.abandon``): together they make at most as many calls as the rest of the
check, and the report counts the directions' calls among its ``extra_evaluations``. Where the directions'
disagreement is beyond the approximate tier, fn's precision inside is looked for first
(``precision_first``): a staircase is then checked along directions in its precision (``recheck``). The counts need
no call of fn; whether fn runs under vmap is told by one evaluation through vmap, made only where the
counts favour the directions and the calls saved would take longer than ``Tuning.auto_plan_probe_seconds``
(timed by the forward at the inputs): a cheap fn's check is not slowed down by finding out. Where full mode
would screen the inputs at ±h in one batch (one input, or several small ones together: ``screen_batch``),
that batch is the probe, and the screen uses its values (``stencil.probe_screen``)."""

from __future__ import annotations

import torch

from gradcheck_kit._engine import context, directional, directional_ties, graph, limits, stencil
from gradcheck_kit._engine import screen as _screen
from gradcheck_kit._engine.evaluate import EvaluationFailed
from gradcheck_kit._engine.limits import DEFAULT_DIRECTIONS, FORWARD_DIRECTIONS
from gradcheck_kit._engine.one_sided import nothing_compared
from gradcheck_kit._inputs import n_coords
from gradcheck_kit.report import Note, NoteCode


#: the forward's time is checked by a second call where the calls saved would take less than this many times
#: ``Tuning.auto_plan_probe_seconds``
RETIME_MARGIN = 8.0


def full_calls(run, forward: bool) -> int:
    """The fewest calls of fn a full check makes one point at a time: f at ±h per coordinate where the ±h
    screen applies, else the whole stencil; and forward AD's passes where ``forward`` (each at least a call)."""
    per_coordinate = 2 if _screen.can_screen(run) else run.stencil.points
    return per_coordinate * run.n_in + (FORWARD_DIRECTIONS if forward else 0)


def directional_calls(run, forward: bool) -> int:
    """The calls of fn a passing directional check's directions make one point at a time: ±h where the screen
    decides, else the whole stencil, and a forward-AD pass each where ``forward`` (the judging of the
    inputs' ties comes on top: ``by_cost``)."""
    per_direction = _screen.POINTS - 1 if _screen.applies(run.stencil) and limits.TUNING.directional_screen \
        else run.stencil.points
    return (run.options["directions"] or DEFAULT_DIRECTIONS) * (per_direction + (1 if forward else 0))


def forward_passes(run) -> bool:
    """Whether forward AD's passes are likely to run fn: not where it is off, nor where the graph holds a
    custom Function without a forward-mode rule (its pass stops there; a guess that only sways the plan)."""
    if run.forward_ad is False:
        return False
    return not any(map(graph.lacks_jvp, run.graph.classes))


def by_cost(run, mode: str) -> str:
    """``mode`` as ``choose_mode`` chose it, or ``directional`` where auto mode's full check of a fn that
    cannot run under vmap would take more than ``1 / Tuning.auto_plan_fraction`` times the calls of a
    directional one (a note names the plan)."""
    if run.options["mode"] != "auto" or mode != "full":
        return mode
    fraction = limits.TUNING.auto_plan_fraction
    if directional_calls(run, False) > fraction * full_calls(run, True):  # (before the graph is walked)
        return mode
    forward = forward_passes(run)
    full, along = full_calls(run, forward), directional_calls(run, forward)
    if along > fraction * full or not saves_time(run, full - along):
        return mode  # (a fn this cheap: the calls saved would not pay for finding out whether it vmaps)
    along += directional_ties.judging_calls(run)
    if along > fraction * full or runs_under_vmap(run):
        return mode
    run.mode = "directional"
    run.cost_plan = True
    run.budget.plan_begins(run)
    run.out.notes.append(Note(
        f"auto mode checked along directions, about {along} calls of fn where a full check needs at least "
        f"{full}: fn cannot run under vmap ({run.evaluator.path}); a failed directional check is followed by the "
        "full check, whose verdict counts; mode='full' checks every element anyway",
        NoteCode.COST_PLAN, ("directional", along, full),
    ))
    return "directional"


def saves_time(run, calls: int) -> bool:
    """Whether ``calls`` calls of fn take longer than ``Tuning.auto_plan_probe_seconds``, timed by the forward at
    the inputs; where they would by less than ``RETIME_MARGIN`` times, by the shorter of it and one more plain
    call (f at x): a first call's set-up or a busy machine does not make a cheap fn take the directions."""
    probe = limits.TUNING.auto_plan_probe_seconds
    if calls * run.forward_seconds < probe:
        return False
    if calls * run.forward_seconds < RETIME_MARGIN * probe:
        try:
            run.evaluator.outputs_at({})
        except EvaluationFailed:
            return True  # (the check finds out, as it would have)
        return calls * min(run.forward_seconds, run.evaluator.fastest_call) >= probe
    return True


def runs_under_vmap(run) -> bool:
    """Whether fn's evaluations run through vmap: one batch of one point of the largest input tells (a
    custom Function without a vmap rule in the graph is no proof: fn may route around it without grad)."""
    largest = max(run.wrt, key=lambda i: n_coords(run.inputs[i]))
    return stencil.runs_under_vmap(run, largest, screened=screen_batch(run))


def screen_batch(run) -> list[int]:
    """The inputs whose ±h screen full mode would evaluate in one batch (``stencil.screen_stencil``): the
    only input, or every input where all are vectors or matrices small enough to go together; else none."""
    if not _screen.can_screen(run):
        return []
    if len(run.wrt) == 1:
        return list(run.wrt)
    n = sum(n_coords(run.inputs[i]) for i in run.wrt)
    small = len(run.stencil.multipliers[:2]) * n * n <= limits.TUNING.together_elements
    return list(run.wrt) if small and all(run.inputs[i].dim() <= 2 for i in run.wrt) else []


def compared_nothing(run, found) -> bool:
    """Whether the cost plan's directional check compared nothing (``found``: its results): fn jumps or is
    not finite at x ± h·u along every direction (a backward at order 2 across ties, an input on the edge
    of fn's domain). The full check it stood in for compares element by element, one-sided at an edge."""
    return run.cost_plan and bool(nothing_compared(found.groups, run.wrt, run.names, {}, True))


def directions_failed(run, backward_failed: bool) -> bool:
    """Whether the cost plan's directional check failed: its backward (``backward_failed``), or forward AD's
    projections judged as ``forward_check`` will judge them (the numerics are shared; what the judging
    notes is dropped here). Either failure falls back to the full check."""
    if not run.cost_plan or backward_failed:
        return run.cost_plan
    a = run.jvp_projections
    if a is None or isinstance(a, Exception) or run.directional is None:
        return False
    try:
        with run.stage():
            _, verdict = directional.judge_projections(run, a, backward=False)
    except Exception:  # noqa: BLE001 - forward_check reports it
        return False
    return bool(verdict.failed.any())


def fall_back(run) -> str:
    """After the cost plan's directional check failed: the full check runs instead, its results replace the
    directional one's, and the plan's note says so. Returns ``"full"``."""
    run.mode = "full"
    run.cost_plan = False
    run.tier_screen = run.directional is not None and run.directional.numerics.within_tier
    made = run.budget.abandon(run)
    run.directional = None
    run.jvp_projections = None
    run.directional_allowance.clear()
    run.directional_square_sums.clear()
    run.tie_failures.clear()
    pos = _plan_note(run)
    if pos is not None:
        along, full = run.out.notes[pos].fields[1:3]
        run.out.notes[pos] = Note(
            f"auto mode checked along directions first (about {along} calls of fn where a full check needs "
            f"at least {full}: fn cannot run under vmap); the directional check failed or compared nothing "
            f"({made} calls of fn), so the full check ran and its results are the verdict",
            NoteCode.COST_PLAN, ("full_after_directional", along, full, made),
        )
    return "full"


def _plan_note(run) -> int | None:
    """The position of the plan's note in the check's results, None where there is none."""
    return next((pos for pos, n in enumerate(run.out.notes) if getattr(n, "code", None) == NoteCode.COST_PLAN), None)


def precision_first(run) -> bool:
    """Whether the cost plan's failed directions ask fn's precision inside (``first_order.own_precision``)
    before the full check: float64 numerics whose stencil along u disagreed beyond the approximate tier
    (a staircase's steps look like that; an iterative solver's derivative does not). Where fn has such a
    precision, the check runs in it (``recheck``) instead of the float64 full check that would fail."""
    state = run.directional
    return (
        run.cost_plan and state is not None and getattr(state.numerics, "beyond_tier", False)
        and run.stencil.dtype == torch.float64 and run.quantized is None
    )


def recheck(run, mode: str, note: Note, again) -> "context.Results":
    """The backward check run again in fn's own precision (``again(run, mode, note)``, a staircase or
    lower-precision outputs): where the cost plan's directions had fallen back to the failed full check,
    along directions first (that precision's whole stencil along each), and the full check only where they
    fail too, whose verdict counts then."""
    pos = _plan_note(run)
    if mode != "full" or pos is None or run.out.notes[pos].fields[0] != "full_after_directional":
        return again(run, mode, note)
    _, along, full, made = run.out.notes[pos].fields
    run.mode, run.cost_plan = "directional", True
    run.budget.plan_begins(run)
    found = again(run, "directional", note)
    result = found.check("backward")
    if not directions_failed(run, result is None or result.status == "failed"):
        run.cost_plan = False
        run.out.notes[pos] = Note(
            f"auto mode checked along directions (about {along} calls of fn where a full check needs at least "
            f"{full}: fn cannot run under vmap); they failed in float64 ({made} calls of fn), fn's precision "
            "inside explained it, and the check along directions in that precision passed; mode='full' checks "
            "every element anyway",
            NoteCode.COST_PLAN, ("directional_after_recheck", along, full, made),
        )
        return found
    fall_back(run)
    return again(run, "full", note)
