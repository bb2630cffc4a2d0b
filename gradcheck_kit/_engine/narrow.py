"""Auto mode's narrowing: a failed directional check is followed by a full check of d(v·out)/dx of the
inputs small enough, whose results replace or join the directional ones."""

from __future__ import annotations

import dataclasses

from gradcheck_kit._engine import autograd_rows, context, full, pinpoint, stencil
from gradcheck_kit._engine.limits import NARROW_COORDS, NARROW_LOOP_COORDS
from gradcheck_kit._inputs import n_coords
from gradcheck_kit.report import CheckResult, Note, NoteCode


def narrowed(run, first: context.Results) -> context.Results:
    """The directional check's results ``first`` followed by a full check of d(v·out)/dx of the inputs of at
    most ``NARROW_COORDS`` coordinates, which names the wrong elements: one ``backward`` result for both,
    failed if either failed, or passed where every element passed and the directional failure came from
    the finite differences along u (a smaller step, the approximate tier or a tie's full check resolved it).

    Where the directions moved near-ties together (``DirectionalState.at_ties``), the full check uses its
    Jacobian where small, and its verdict overrides the directional one."""
    small = [i for i in run.wrt if n_coords(run.inputs[i]) <= NARROW_COORDS]
    if not small or not stencil.runs_under_vmap(run, small[0]):  # a call of fn per point, or no narrowing
        pinned = pinpoint.pinpointed(run, first, planned=False)
        if pinned is not None:
            return pinned
    found = context.Results()
    found.extend(first)
    if not small:
        found.notes.append(Note(
            f"the directional check failed; inputs are larger than {NARROW_COORDS} elements, so the wrong "
            "elements were not narrowed down (run with mode='full' to list them)",
            NoteCode.NOT_NARROWED, ("size", NARROW_COORDS),
        ))
        return found
    total = sum(n_coords(run.inputs[i]) for i in small)
    if total > NARROW_LOOP_COORDS and not stencil.runs_under_vmap(run, small[0]):
        found.notes.append(Note(
            f"the directional check failed; fn cannot run under vmap ({run.evaluator.path}), and narrowing "
            f"{total} coordinates down would take one call of fn per point and coordinate, so the wrong "
            f"elements were not narrowed down (run with mode='full' on an input of at most "
            f"{NARROW_LOOP_COORDS} elements to list them)",
            NoteCode.NOT_NARROWED, ("no_vmap", run.evaluator.path, total, NARROW_LOOP_COORDS),
        ))
        return found
    found.notes.append(Note(
        "the directional check failed; the wrong elements were narrowed down with a full check of "
        "d(v·out)/dx for " + ", ".join(run.names[i] for i in small),
        NoteCode.NARROWED, tuple(run.names[i] for i in small),
    ))
    run.refined_resolved = False
    approximate_before = run.approximate.count
    at_ties = run.directional is not None and run.directional.at_ties
    rows = autograd_rows.full_rows(run) if at_ties else None  # the Jacobian where small
    with run.stage(found):
        full.backward_full(run, inputs=small, check_name="backward", rows=rows)
    resolved = run.refined_resolved or approximate_before < run.approximate.count or at_ties
    return joined(run, found, len(small) == len(run.wrt) and resolved)


def joined(run, found: context.Results, may_supersede: bool) -> context.Results:
    """``found`` with its two ``backward`` results (directional, then narrowed) joined into one."""
    results = [c for c in found.checks if c.name == "backward"]
    if len(results) != 2:
        return found
    directional, narrowed_check = results
    detail = directional.detail + "; narrowed: " + narrowed_check.detail
    status = "failed"
    if narrowed_check.status == "passed" and may_supersede:
        # every element of d(v·out)/dx passed, some only at a smaller step or at a tie: the finite
        # differences along u were off (fn changes on a scale below h there), not the gradient
        status = "passed"
        at_ties = run.directional is not None and run.directional.at_ties
        detail += (
            "; every element passed, some at a smaller step or at a tie: the directional failure came from "
            "the finite differences along u, not from the gradient"
        ) if run.refined_resolved or at_ties else (
            "; every element passed, some as approximate (the note): the projection's tier is smaller"
        )
        run.directional_superseded = True
        found.mismatches = [
            m for m in found.mismatches if not (m.check == "backward" and m.kind in ("directional", "projected"))
        ]
        found.groups = [
            dataclasses.replace(g, failed=0, worst_ratio=0.0) if g.check == "backward" and g.kind == "directional" else g
            for g in found.groups
        ]
    found.checks = [
        CheckResult("backward", status, detail) if c is directional else c for c in found.checks if c is not narrowed_check
    ]
    return found
