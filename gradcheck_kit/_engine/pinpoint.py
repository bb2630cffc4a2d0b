"""Auto mode's cost plan after its directions failed far beyond their tolerance: one wrong element found by
bisecting the failing direction, in place of the full check that would evaluate every coordinate.

The cost plan checks a fn that cannot run under vmap along directions (``plan``): every evaluation is a
call of fn, and the full check it falls back to on a failure makes at least two calls per coordinate, then
the rest of the stencil on the failed inputs. Where a direction's estimate
converged, both one-sided estimates agree with it, and autograd is ``decisive.DECISIVE_RATIO`` times its
tolerance away and ``GATE_SIDE_RATIO`` times the one-sided estimates' (``decisive``'s terms), a wrong
element is looked for:

- the direction ``u`` is split in halves of its coordinates; ``e(S) = a(S) - D(S)`` is autograd's
  projection on ``u`` restricted to ``S`` (from the backward already made: no call) less the one-sided
  difference along it at +h (one call: f at x is known; its truncation only steers). The other half's is
  ``e(u) - e(S)``, both sides being linear in the direction. The half with the larger ``|e|`` is split
  next, down to one coordinate: about ``log2(n)`` calls;
- that coordinate is judged on its whole stencil along its own axis (three or four calls more) and fails
  only where ``decisive``'s terms hold there: the central estimate converged, both one-sided estimates
  agreeing with it and ``decisive.SIDE_RATIO`` times their tolerance from autograd (no kink within the
  stencil's reach), autograd ``DECISIVE_RATIO`` times the tolerance away (the direction's round-off
  allowance, autograd's over the whole projection), beyond the full check's approximate tier of the
  input's largest entry, f moved, and the coordinate tied with no other. That is a failure the full check
  fails too and none of its second opinions clears (``decisive``): the verdict is the full check's. Where
  autograd is only ``GATE_SIDE_RATIO`` times the one-sided estimates' tolerance away, the stencil at h/8
  (the tie check's and refine's first step, four calls) must reproduce the estimate at h and hold the
  terms with ``decisive.SIDE_RATIO``: no smaller step or one-sided slope there lies near autograd.

A lower precision's staircase inside a float64 fn can look settled at h and 2h: where its steps are finer
than h and h is close to a whole number of them, its roundings at the stencil's points fall on a line and
shift every estimate alike. So a failure is claimed only where the staircase probe, with ``PROBE_POINTS``
moves instead of ``staircase.POINTS`` (points ``2^-22`` apart alias with h otherwise than the stencil's),
finds none. Where it finds one, or the bisection ends on an element that does not fail so, nothing is
concluded: the full check runs as it would have (``plan.fall_back``: fn's precision first), and the calls
made here count as second opinions (``budget``). A passing check never gets here: its directions passed.
"""

from __future__ import annotations

import math

import torch

from gradcheck_kit._engine import allowance, context, directional, tolerances
from gradcheck_kit._engine import screen as _screen
from gradcheck_kit._engine import staircase as _staircase
from gradcheck_kit._engine.evaluate import EvaluationFailed
from gradcheck_kit._engine import approximate as _approximate
from gradcheck_kit._engine.decisive import DECISIVE_RATIO, PRECISION, SIDE_RATIO, sides_agree, sides_far
from gradcheck_kit._engine.finite_diff import Estimates, estimate
from gradcheck_kit._inputs import coord_index, coords, from_coords, safe_float
from gradcheck_kit.report import CheckResult, GroupSummary, Mismatch, Note, NoteCode

__all__ = ["pinpointed", "GATE_SIDE_RATIO"]

#: the directions' failure is bisected where autograd is this many times the one-sided estimates' tolerance
#: from each (``decisive.SIDE_RATIO`` at the element): along a direction that moves every coordinate the
#: one-sided truncation is larger than along one; a gate only, the element's judgement decides
GATE_SIDE_RATIO = 2.0
#: the named element's mismatch note
BISECTED = "named by bisecting the failed direction; the other elements were not judged"
#: the staircase probe's moves before a failure is claimed: four third differences (``staircase``)
PROBE_POINTS = tuple(range(-3, 4))


def pinpointed(run, found: context.Results, planned: bool = True) -> context.Results | None:
    """The cost plan's failed directional results ``found`` joined by one wrong element that bisecting the
    failing direction named, or None where this does not apply or named none (the full check decides).
    ``planned=False``: directions that auto mode took for the input's size, whose narrowing would make a
    call of fn per point and coordinate or is not made (``narrow.narrowed``)."""
    target = decisive_direction(run) if applies(run, planned) else None
    if target is None:
        return None
    pos, di = target
    start = run.evaluator.calls + run.extra_evaluations
    with run.budget.spending(run):
        ended = bisect(run, pos, di)
        element = None if ended is None else judge_element(run, pos, di, *ended)
        if element is not None and staircase_seen(run):
            element = None
    made = run.evaluator.calls + run.extra_evaluations - start
    if element is None:
        run.budget.unplanned(made)  # second opinions, not the plan's calls (``budget.Budget.abandon``)
        return None
    if directional.screens(run):  # the rest of the directions' stencil, made for their failure
        run.budget.failed_directions(run.n_directions * (run.directional.numerics.values.shape[0] - _screen.POINTS))
    return joined(run, found, pos, ended[0], ended[1], element, made)


def applies(run, planned: bool = True) -> bool:
    """Whether the cost plan's failed directions (any failed directions: ``planned=False``) may be bisected:
    their whole stencil made, float64 numerics and inputs, no given tolerances, no ties along the
    directions, no lower precision found."""
    state = run.directional
    return (
        (run.cost_plan or not planned) and state is not None and state.numerics.estimates is not None
        and run.stencil.dtype == torch.float64 and not run.reference and run.quantized is None
        and run.options["atol"] is None and run.options["rtol"] is None and not state.ties_split
    )


def decisive_direction(run) -> tuple[int, int] | None:
    """The (output position, direction) whose failure no second opinion could clear (the worst of them),
    None where there is none."""
    num = run.directional.numerics
    est = num.estimates
    a = run.directional.projections
    allow, _ = allowance.allowance_directional(run, screen=False)
    kap = tolerances.kappa(a.numel())
    diff = (a - est.central).abs()
    sure = sound(a, est, diff, allow, kap, GATE_SIDE_RATIO)
    sure &= ~(num.values[1:] == num.values[:1]).all(0)  # f moved along u
    if not bool(sure.any()):
        return None
    ratio = torch.where(sure, diff / (kap * est.central_err + allow).clamp_min(1e-300), -1.0)
    flat = int(torch.argmax(ratio))
    return flat // ratio.shape[1], flat % ratio.shape[1]


def sound(a: torch.Tensor, est: Estimates, diff: torch.Tensor, allow, kap: float, side_ratio: float) -> torch.Tensor:
    """``decisive``'s terms: autograd ``DECISIVE_RATIO`` times its tolerance from a converged central
    estimate, both one-sided estimates agreeing with it and ``side_ratio`` times their tolerance from
    autograd; all finite."""
    sure = torch.isfinite(a) & torch.isfinite(diff) & torch.isfinite(est.central_err)
    sure &= diff >= DECISIVE_RATIO * (kap * est.central_err + allow)
    sure &= est.central_err <= PRECISION * est.central.abs()
    return sure & sides_agree(est, kap) & sides_far(a, est, allow, kap, side_ratio)


def along(run, pos: int, masked: dict[int, torch.Tensor], mults) -> list[float]:
    """``v·out`` of output position ``pos`` at ``x + m·h·masked`` for each multiplier ``m`` (one call each)."""
    k = run.out_idx[pos]
    h = run.stencil.h0
    values = []
    for m in mults:
        repl = {}
        for i, step in masked.items():
            x = run.evaluator.base_args[i]
            point = coords(x).to(torch.float64) + (m * h) * step.to(torch.float64)
            repl[i] = from_coords(point.to(coords(x).dtype).unsqueeze(0), x.shape, x.is_complex())[0].to(x.dtype)
        outs = run.evaluator.outputs_at(repl)
        values.append(float(outs[pos] @ run.v[k]))
    return values


def bisect(run, pos: int, di: int) -> tuple[int, int, list[float]] | None:
    """The coordinate ``(input, flat index)`` the bisection of direction ``di`` ends on, and f at +h along it
    where the last split measured that (else empty); None where ``u`` moves no coordinate. Each split
    steers by one call: the one-sided difference at +h (f at x is known), whose truncation only steers;
    the element's judgement decides."""
    state = run.directional
    k = run.out_idx[pos]
    u = {i: state.u[i][di].to(torch.float64) for i in run.wrt}
    moved = [u[i].nonzero().reshape(-1) for i in run.wrt]  # the members: (input position, flat index) rows
    members = torch.cat([torch.stack([torch.full_like(m, p), m], 1) for p, m in enumerate(moved)])
    if members.shape[0] == 0:
        return None
    g = {i: state.grads[(i, k)].to(torch.float64) for i in run.wrt}
    error = float(state.projections[pos, di] - state.numerics.estimates.central[pos, di])
    center = float(state.numerics.values[0, pos, di])
    known: list[float] = []
    while members.shape[0] > 1:
        half, rest = members[: members.shape[0] // 2], members[members.shape[0] // 2:]
        masked = masks(run, u, half)
        [plus] = along(run, pos, masked, (1.0,))
        e_half = sum(float(masked[i] @ g[i]) for i in masked) - (plus - center) / run.stencil.h0
        if abs(e_half) >= abs(error - e_half):
            members, error, known = half, e_half, [plus]
        else:
            members, error, known = rest, error - e_half, []
    return run.wrt[int(members[0, 0])], int(members[0, 1]), known


def masks(run, u: dict[int, torch.Tensor], members: torch.Tensor) -> dict[int, torch.Tensor]:
    """``u`` restricted to ``members`` (rows of input position in ``run.wrt``, flat index), per input that
    has one."""
    out: dict[int, torch.Tensor] = {}
    for p in torch.unique(members[:, 0]).tolist():
        i = run.wrt[p]
        idx = members[members[:, 0] == p, 1]
        out[i] = torch.zeros_like(u[i]).index_copy_(0, idx, u[i][idx])
    return out


def judge_element(run, pos: int, di: int, i: int, j: int, known: list[float]) -> dict | None:
    """Coordinate ``j`` of input ``i`` judged on its whole stencil along its own axis (``known``: f at its
    first points, reused): its autograd and numerical derivatives of ``v·out`` and the tolerance where it
    fails beyond doubt (the module's terms), else None. Where only autograd's distance from the one-sided
    estimates falls short (``decisive.SIDE_RATIO`` of their tolerance, but ``GATE_SIDE_RATIO`` of it), the
    stencil at h/8 decides: the terms hold there too and its estimate reproduces the one at h (``fine``)."""
    state = run.directional
    k = run.out_idx[pos]
    w = float(state.u[i][di][j])  # ± the coordinate's step scale: a power of two
    g = state.grads[(i, k)].to(torch.float64)
    a = (g[j] * w).reshape(1)
    allow = allowance.allowance_directional(run, screen=False)[0][pos, di].reshape(1)
    kap = tolerances.kappa(state.projections.numel())
    est = axis_estimates(run, pos, di, i, j, known, 1.0)
    if est is None or tied(run, i, j):
        return None
    diff = (a - est.central).abs()
    # beyond the full check's approximate tier of the largest entry it would scale this one by
    scale = max(float(g.abs().max()) * abs(w), float(a.abs()), float(est.central.abs()))
    if not bool(diff > allow + _approximate.accuracy(torch.float64) * scale):
        return None
    if not bool(sound(a, est, diff, allow, kap, SIDE_RATIO)):
        near = not bool(sound(a, est, diff, allow, kap, GATE_SIDE_RATIO))
        if near or not fine(run, pos, di, i, j, a, est, allow, kap):
            return None
    tol = float(kap * est.central_err[0] + allow[0])
    return {"analytic": float(g[j]), "numerical": float(est.central[0]) / w, "allowed": tol / abs(w)}


def axis_estimates(run, pos: int, di: int, i: int, j: int, known: list[float], scale: float) -> Estimates | None:
    """The estimates of the derivative along coordinate ``j`` of input ``i`` (times its step scale) from the
    whole stencil at ``scale·h`` (``known``: f at its first points); None where f did not move."""
    state = run.directional
    axis = masks(run, {i: state.u[i][di].to(torch.float64)}, torch.tensor([[run.wrt.index(i), j]]))
    mults = [m * scale for m in run.stencil.multipliers]
    values = [float(state.numerics.values[0, pos, di])] + known + along(run, pos, axis, mults[len(known):])
    stacked = torch.tensor(values, dtype=torch.float64).view(-1, 1, 1)
    if bool((stacked[1:] == stacked[0]).all()):
        return None
    h = torch.tensor(run.stencil.h0 * scale, dtype=torch.float64)
    est = estimate(stacked, h, state.numerics.fmag[pos].view(1, 1), run.stencil)
    return Estimates(*(None if t is None else t.reshape(1) for t in vars(est).values()))


def fine(run, pos: int, di: int, i: int, j: int, a, est: Estimates, allow, kap: float) -> bool:
    """The stencil at h/8 along the coordinate (the tie check's and refine's first step): its estimate
    reproduces the one at h (refine clears only an estimate that moved), and ``decisive``'s terms hold
    there with ``decisive.SIDE_RATIO`` (no one-sided slope at h/8 near autograd: the tie check clears
    none)."""
    est8 = axis_estimates(run, pos, di, i, j, [], 1.0 / 8)
    if est8 is None:
        return False
    same = (est8.central - est.central).abs() <= kap * (est8.central_err + est.central_err)
    return bool(same & sound(a, est8, (a - est8.central).abs(), allow, kap, SIDE_RATIO))


def staircase_seen(run) -> bool:
    """Whether the staircase probe at ``PROBE_POINTS`` sees fn's values scatter like a lower precision's
    roundings (or fn fails there: nothing is claimed then either)."""
    bases = {i: run.evaluator.base_args[i] for i in run.wrt}

    def outputs_at(repl: dict) -> list:  # the probe's middle point is x itself: f there is known
        return run.f0 if all(torch.equal(t, bases[i]) for i, t in repl.items()) else run.evaluator.outputs_at(repl)

    try:
        return _staircase.staircase(outputs_at, bases, run.evaluator.batched_together, PROBE_POINTS,
                                    unit_floor=not run.reference) is not None
    except EvaluationFailed:
        return True


def tied(run, i: int, j: int) -> bool:
    """Whether coordinate ``j`` of input ``i`` ties with another (``screen.untied_coordinates``)."""
    return not bool(_screen.untied_coordinates(run, i)[j])


def joined(run, found: context.Results, pos: int, i: int, j: int, element: dict, made: int) -> context.Results:
    """``found`` (the failed directional check) with the element named in place of the directions: its
    mismatch, a group of one entry, the note, and the ``backward`` result's detail saying so."""
    k = run.out_idx[pos]
    x = run.inputs[i]
    index, part = coord_index(j, x.shape, x.is_complex())
    diff = abs(element["analytic"] - element["numerical"])
    # the element stands for the failed directions: their mismatches and groups give way to it, as to the full
    # check's (``plan.fall_back``); the check's detail keeps them
    found.mismatches = [m for m in found.mismatches if not (m.check == "backward" and m.kind == "directional")]
    found.groups = [g for g in found.groups if not (g.check == "backward" and g.kind == "directional")]
    found.mismatches.insert(0, Mismatch(
        check="backward", input_index=i, output_index=k, index=index, analytic=element["analytic"],
        numerical=element["numerical"], abs_error=diff, allowed=element["allowed"], output_element=None,
        input_name=run.names[i], input_value=safe_float(coords(x)[j]), kind="projected",
        note="; ".join([f"input {part}"] * bool(part) + [f"no gradient flows to input {i}: autograd gave none"]
                       * (run.directional.raw_grads.get((i, k)) is None) + [BISECTED]),
    ))
    group = GroupSummary("backward", i, k, "projected")
    group.compared, group.failed = 1, 1
    group.worst_ratio = diff / max(element["allowed"], 1e-300) if math.isfinite(diff) else math.inf
    found.groups.append(group)
    where = f"{run.names[i]}{list(index)}"
    found.notes.append(Note(
        f"the directional check failed beyond doubt; bisecting the failed direction named d(v·out{k})/d {where} "
        f"as wrong in {made} call(s) of fn, judged on its whole stencil (the other elements were not judged: "
        "mode='full' lists every wrong element)",
        NoteCode.PINPOINTED, (run.names[i], tuple(index), k, made),
    ))
    found.checks = [
        CheckResult("backward", "failed", c.detail + f"; pinpointed: d(v·out{k})/d {where} is wrong")
        if c.name == "backward" else c for c in found.checks
    ]
    plan_note(run)
    return found


def plan_note(run) -> None:
    """The cost plan's note (``plan.by_cost``) saying that the directions' failure was bisected instead of
    followed by the full check."""
    for pos, n in enumerate(run.out.notes):
        if getattr(n, "code", None) == NoteCode.COST_PLAN and n.fields[0] == "directional":
            along, full = n.fields[1:3]
            run.out.notes[pos] = Note(
                f"auto mode checked along directions, about {along} calls of fn where a full check needs at least "
                f"{full}: fn cannot run under vmap; they failed far beyond their tolerance, so bisecting a failed "
                "direction named a wrong element instead of the full check; mode='full' lists every wrong element",
                NoteCode.COST_PLAN, ("pinpointed", along, full),
            )
