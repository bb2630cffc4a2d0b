"""The checks beside the comparison that read the first-order check's state: full mode's cost estimate (it
may refuse to start), fn called again at the inputs (determinism), and the linearity of the backward in v."""

from __future__ import annotations


import torch

from gradcheck_kit._engine import allowance, context, one_vector, screen, setup, stencil, structural
from gradcheck_kit._engine import cost as _cost
from gradcheck_kit._engine.determinism import call_again, kept_outputs_agree, moved_outputs, not_deterministic
from gradcheck_kit._engine.limits import EVALUATION_BATCH_ELEMENTS
from gradcheck_kit._engine.linearity import linearity_check
from gradcheck_kit._inputs import coords, n_coords
from gradcheck_kit.report import CheckResult


def full_cost(run) -> None:
    """Full mode's estimated cost (``cost``): above the limit the check stops with an error saying so."""
    if run.mode != "full" or run.n_in < _cost.SMALL_COORDS:
        return
    largest = max(run.wrt, key=lambda i: n_coords(run.inputs[i]))
    points = 2 if screen.can_screen(run) else run.stencil.points  # the fewest: the ±h screen may settle it
    batched = stencil.runs_under_vmap(run, largest)
    x = run.evaluator.base_args[largest]
    elements = _cost.ELEMENT_SECONDS * (sum(n_coords(run.inputs[i]) for i in run.wrt) + run.n_out)
    if batched and x.device.type != "cpu":  # one batch of points at x, as large as ``stencil.stencil_values`` builds
        b = max(1, min(n_coords(x), EVALUATION_BATCH_ELEMENTS // (n_coords(x) + run.n_out)))
        batch = lambda: run.evaluator.batched(largest, coords(x).expand(b, -1).clone(), x.shape, x.is_complex())  # noqa: E731
        per_point = _cost.timed(batch, b)
    elif batched:
        per_point = elements
    else:  # one call of fn per point, on points built as in a batch
        per_point = min(run.forward_seconds, _cost.timed(lambda: run.evaluator.outputs_at({}), 1)) + elements
    cost = _cost.estimate(run.n_in, points, per_point, batched)
    limit = _cost.limit_seconds()
    if cost.seconds > limit:
        raise context.Failure(_cost.refusal(cost, limit))
    if cost.seconds > _cost.WARN_FRACTION * limit:
        run.out.notes.append(_cost.warning(cost))


def called_again(run) -> str | None:
    """fn called once more at the inputs as given: the error saying how it changed since its first call, or
    None where it gives the same outputs (also where forward AD's pass at the inputs, made after every
    numerical evaluation of this check, gave the first call's outputs: no call is made then)."""
    tol = float(run.options["nondet_tol"])
    latest = run.dual_calls == run.evaluator.calls
    if latest and kept_outputs_agree(run.outs, run.dual.outputs, run.out_idx, tol):
        return None
    again, failed = call_again(run.fn, run.inputs, run.grad_positions, run.rng_seed)
    run.extra_evaluations += 1
    what = failed or moved_outputs(run.outs, again, run.out_idx, tol)
    return None if what is None else not_deterministic(what)


#: how ``linearity``'s detail says that its backwards and ``zero_grad_output``'s were one batched backward
BATCHED_DETAIL = "its backwards and zero_grad_output's in one batched backward"


def structure_and_linearity(run, graph: structural.Graph) -> list[CheckResult]:
    """``reentrant``, ``zero_grad_output`` and ``linearity``: from two backwards of one vector against the
    checked Jacobian where that passes (``one_vector``), else ``reentrant`` in full and the other two from
    one batched backward where that runs and both pass (``one_vector.batched_passes``), else each in full."""
    quick = one_vector.quick_checks(graph, run.seed, run.signed_rows)
    if quick is not None:
        reentrant, linear = quick
        return [reentrant, structural.zero_grad_check(graph), linear]
    reentrant, batchable = structural.watched_reentrant(graph)
    if reentrant.status in ("skipped", "error"):
        return [reentrant, linearity(run)]
    passes = one_vector.batched_passes(graph, run.seed) if batchable and reentrant.status == "passed" else None
    if passes is not None:
        zero, linear = structural.zero_grad_check(graph, passes[3]), linearity(run, passes[:3])
        if zero.status == "passed" and linear.status == "passed":
            return [reentrant, zero, CheckResult("linearity", "passed", f"{linear.detail}; {BATCHED_DETAIL}")]
    return [reentrant, structural.zero_grad_check(graph), linearity(run)]


def linearity(run, passes: tuple | None = None) -> CheckResult:
    """``linearity_check`` of the check's outputs, again with fn's coarser precision or the float64
    conditioning where it fails; ``passes``: its three backwards where already made."""
    graded = [k for k in run.out_idx if run.outs[k].requires_grad]
    args = (
        [run.outs[k] for k in graded], [run.leaves[i] for i in run.wrt], [run.names[i] for i in run.wrt],
        run.seed, float(run.options["nondet_tol"]),
    )
    state = run.full if run.directional is None else None
    jacobians = None if state is None else [
        [state.analytic.get((i, k)) if state.rows[k] == "jacobian" else None for k in graded] for i in run.wrt
    ]
    result = linearity_check(*args, jacobians=jacobians, passes=passes)
    if result.status == "failed" and setup.coarse_eps(run):  # fn computes in a lower precision inside
        result = linearity_check(*args, eps_floor=setup.coarse_eps(run), jacobians=jacobians, passes=passes)
    float32 = all(run.inputs[i].dtype == torch.float32 for i in run.wrt)  # float16/bfloat16: too coarse
    if result.status == "failed" and float32 and state is not None and state.reference:
        # a low-precision backward of an ill-conditioned function rounds each of the three backwards by
        # up to how far its float64 derivatives move when the inputs move by a few roundings
        conditioning = allowance.full_conditioning(run)
        if conditioning:
            spread = [[conditioning.get((i, k)) if state.rows[k] == "jacobian" else None for k in graded]
                      for i in run.wrt]
            result = linearity_check(
                *args, eps_floor=setup.coarse_eps(run), jacobians=jacobians, conditioning=spread, passes=passes,
            )
    if result.status == "failed" and state is not None and state.reference is None:
        # float64: a backward whose terms cancel far below their size rounds at the size of its terms
        # (``allowance.cancellation``); the probe's moves are tried first as the bound they are
        def spread_of(moved: dict) -> list:
            return [[moved.get((i, k)) if state.rows[k] == "jacobian" else None for k in graded] for i in run.wrt]

        def check(moved: dict) -> CheckResult:
            return linearity_check(
                *args, eps_floor=setup.coarse_eps(run), jacobians=jacobians, conditioning=spread_of(moved),
                passes=passes,
            )

        moved = allowance.cancellation(run, lambda bound: check(bound).status == "passed")
        if moved:
            result = check(moved)
    return result
