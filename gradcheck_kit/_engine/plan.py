"""Auto mode's plan by cost: a function that cannot run under vmap and whose full check would take many
slow calls is checked along directions instead.

Full mode evaluates fn at least twice per input coordinate (the ±h screen), one call each where fn cannot
run under vmap (a custom Function without a vmap rule, a numpy-backed layer, a solver). A directional check
takes a constant number of calls whatever the size, and a failed one is narrowed down by a full check of
d(v·out)/dx (``narrow``), so a wrong element is still found and named; only a passing check is cheaper.
The forward that ran at the inputs times one call."""

from __future__ import annotations

from gradcheck_kit._engine import limits, stencil
from gradcheck_kit._engine.limits import AUTO_PLAN_COORDS
from gradcheck_kit._inputs import n_coords
from gradcheck_kit.report import Note, NoteCode


def by_cost(run, mode: str) -> str:
    """``mode`` as ``choose_mode`` chose it, or ``directional`` where auto mode's full check of a fn that
    cannot run under vmap would take longer than ``Tuning.auto_plan_seconds`` (a note names the plan)."""
    if run.options["mode"] != "auto" or mode != "full" or run.n_in < AUTO_PLAN_COORDS:
        return mode
    largest = max(run.wrt, key=lambda i: n_coords(run.inputs[i]))
    if stencil.runs_under_vmap(run, largest):
        return mode
    calls = 2 * run.n_in  # the fewest a full check makes: f at ±h per coordinate
    seconds = calls * run.forward_seconds
    if seconds <= limits.TUNING.auto_plan_seconds:
        return mode
    run.mode = "directional"
    run.out.notes.append(Note(
        f"auto mode checked along directions (a constant number of calls, narrowed down by a full check on "
        f"failure): fn cannot run under vmap ({run.evaluator.path}) and one call took "
        f"{run.forward_seconds * 1e3:.2g} ms, so a full check would need at least {calls} calls (about "
        f"{seconds:.2g} s); mode='full' checks every element anyway",
        NoteCode.COST_PLAN, ("directional", calls),
    ))
    return "directional"
