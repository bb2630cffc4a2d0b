"""The first-order check as a pipeline of stages over one :class:`~context.Run`:

    forward (autograd at the inputs) -> setup (mode, numeric dtype, evaluator, v) -> backward (full or
    directional; a quantized recheck may replace its results; a directional failure in auto mode requests
    narrowing, run here) -> structural checks -> linearity -> forward AD -> second order (the first
    derivative checked as a function, by this same pipeline) -> the report, built once from the results.

Each stage adds what it finds to ``run.out`` (its own :class:`~context.Results` where the pipeline needs to
keep, replace or drop them); ``build_report`` turns the results into the :class:`GradientReport`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from gradcheck_kit import _config, _state
from gradcheck_kit._engine import allowance, context, directional, full, narrow, own_dtype, second_order, setup, structural
from gradcheck_kit._engine import plan
from gradcheck_kit._engine import pinpoint
from gradcheck_kit._engine import nonfinite as _nonfinite
from gradcheck_kit._engine import notes as _notes
from gradcheck_kit._engine import screen as _screen
from gradcheck_kit._engine import staircase as _staircase
from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine.checks import called_again, full_cost, structure_and_linearity
from gradcheck_kit._engine.evaluate import (
    EvaluationFailed, as_outputs, describe_exception, differentiable_output_indices, fresh_args, is_none_output,
    seed_global_rng,
)
from gradcheck_kit._engine.forward_ad import forward_check, resolve as resolve_forward_ad
from gradcheck_kit._engine.limits import AUTO_COORDS, AUTO_ENTRIES
from gradcheck_kit._engine.one_sided import nothing_compared
from gradcheck_kit._engine.reductions import nonfinite_count
from gradcheck_kit._inputs import bitwise_equal, function_name, input_infos, is_differentiable, n_coords
from gradcheck_kit.report import CheckResult, GradientReport, Note, NoteCode, unique_notes
from gradcheck_kit._reproduce import reproduce_line
from gradcheck_kit._supported import unsupported_kind
from gradcheck_kit.errors import FunctionError

__all__ = ["execute", "run_stages", "build_report", "Facts"]


@dataclass
class Facts:
    """What the report says besides results: the mode, fn's outputs, the evaluations, the paths taken."""

    mode: str = "full"
    outputs: tuple = ()
    evaluations: int = 0
    extra_evaluations: int = 0  # spent on second opinions after a failed comparison (``budget``)
    path: str = ""
    method: str = ""
    function_error: BaseException | None = None
    function_failed: bool = False
    completed: bool = False  # every stage ran (no failure stopped the check)
    elapsed: float = 0.0


def execute(run: context.Run) -> GradientReport:
    """Run every stage of a first-order check (and the higher orders by composition); the report."""
    return build_report(run, run_stages(run))


def run_stages(run: context.Run) -> Facts:
    """Every stage of the check, its results left in ``run.out``; what the report says besides them."""
    start = time.perf_counter()
    facts = Facts()
    with _state.isolated_state():
        try:
            stages(run, facts)
        except context.Failure as exc:
            run.out.errors.append(str(exc))
            if exc.function_failed:
                facts.function_failed, facts.function_error = True, exc.cause
        except EvaluationFailed as exc:
            # fn failing next to the inputs: a domain edge, or fn changing between calls (it tells which)
            moved = called_again(run) if run.out_idx is not None else None
            run.out.errors.append(moved or evaluation_failed(run, exc))
            facts.function_failed, facts.function_error = True, exc.cause
    facts.elapsed = time.perf_counter() - start
    return facts


def build_report(run: context.Run, facts: Facts, beside: context.Results | None = None) -> GradientReport:
    """The report, once, from the results the stages kept and those of the checks ``beside`` the first-order
    check (compiled, bias, batched: they neither stop nor reproduce it)."""
    found = run.out
    report = GradientReport(
        function=function_name(run.fn), seed=run.seed, inputs=input_infos(run.inputs, run.names, run.wrt),
        options=dict(run.options), mode=facts.mode, outputs=list(facts.outputs), checks=list(found.checks),
        mismatches=list(found.mismatches), groups=list(found.groups), errors=list(found.errors),
        notes=list(found.notes), evaluations=facts.evaluations, extra_evaluations=facts.extra_evaluations,
        method=facts.method, path=facts.path,
        resolution=found.resolution, function_failed=facts.function_failed, function_error=facts.function_error,
    )
    if facts.completed and run.approximate.count:  # (no derivative within the approximate tier: no note)
        note = run.approximate.note(report.compared, run.options["strict"])
        if note is not None:
            report.notes.append(note)
    report.notes = unique_notes(report.notes)
    if not report.ok:
        report.defer_reproduce(reproduce(run))
    report.elapsed = facts.elapsed
    if beside is not None:
        report.checks += beside.checks
        report.groups += beside.groups
        report.mismatches += beside.mismatches
        report.notes += beside.notes
    _notes.require_codes(report.notes)
    return report


def stages(run: context.Run, facts: Facts) -> None:
    forward(run, facts)
    mode = choose_mode(run)
    setup.choose_numeric_dtype(run)  # numerics in float64 where fn runs in float64, else the inputs' dtype
    run.v = setup.output_vectors(run)
    if run.n_in == 0 or run.n_out == 0:
        what = "input" if run.n_in == 0 else "output"
        facts.mode = run.options["mode"]
        run.out.checks.append(CheckResult("backward", "skipped", f"empty {what}: no derivative to compare"))
        facts.evaluations = run.evaluator.evaluations + run.extra_evaluations
        facts.completed = True
        return
    facts.mode = mode = plan.by_cost(run, mode)
    setup.rule_out_vmap(run)
    full_cost(run)
    run.out.extend(backward_stage(run, mode))
    facts.mode = mode = run.mode  # full where the cost plan's directional check failed (``plan.fall_back``)
    run.out.errors.extend(
        nothing_compared(run.out.groups, run.wrt, run.names, run.not_evaluable, mode == "directional")
    )
    run.out.checks.extend(structure_and_linearity(run, structural_graph(run)))
    forward_check(run, mode)
    if run.options["order"] > 1:
        run.out.extend(higher_orders(run, facts))
    finish(run, facts)
    facts.completed = True


def structural_graph(run: context.Run) -> structural.Graph:
    """What the structural checks read of the check so far."""
    return structural.Graph(
        outs=run.outs, out_idx=run.out_idx, leaves=run.leaves, wrt=run.wrt, inputs=run.inputs, names=run.names,
        v=run.v, drawn_vectors=run.drawn_vectors, nondet_tol=float(run.options["nondet_tol"]), n_in=run.n_in,
        full=run.full if run.directional is None else None, directional=run.directional,
        zero_grad_rows=run.zero_grad_rows, coarse_eps=lambda: setup.coarse_eps(run),
        conditioning=lambda: allowance.full_conditioning(run), custom_functions=run.graph.names,
    )


def forward(run: context.Run, facts: Facts) -> None:
    """Autograd's forward at the inputs as given (layout kept, storage of our own), and what it tells."""
    run.analytic_args, run.leaves = fresh_args(run.inputs, run.wrt, run.grad_positions)
    started = time.perf_counter()
    outs = call_with_grad(run, run.analytic_args)
    run.forward_seconds = time.perf_counter() - started  # one call of fn (full mode's cost estimate)
    # fn saw copies: the caller's tensors still hold the values it was given
    for i, (a, t) in enumerate(zip(run.analytic_args, run.inputs)):
        if not isinstance(t, torch.Tensor):
            continue
        before = t.detach()
        if not bitwise_equal(a, before) and not torch.equal(a.detach(), before) and not (
            torch.isnan(before).any() if before.is_floating_point() else False
        ):
            run.mutates_inputs = True
            run.out.notes.append(Note(
                f"fn modifies input {i} ({run.names[i]}) in place; every evaluation was given a fresh copy "
                "of the original values",
                NoteCode.INPUT_MODIFIED, (i,),
            ))
    run.outs = outs
    for k, kind in enumerate(map(unsupported_kind, outs)):
        if kind is not None:
            raise context.Failure(f"output {k} of fn is {kind}: only strided tensors with values can be checked")
    run.out_idx = differentiable_output_indices(outs)
    facts.outputs = tuple(
        "None" if is_none_output(o) else f"{tuple(o.shape)} {str(o.dtype).replace('torch.', '')}" for o in outs
    )
    run.output_names = ["out" if len(outs) <= 1 else f"out{k}" for k in range(len(outs))]
    skipped = [str(k) for k, o in enumerate(outs) if is_none_output(o)]
    if skipped:
        run.out.notes.append(Note(f"output {', '.join(skipped)} of fn is None: skipped", "output_none", skipped))
    if not run.out_idx:
        raise context.Failure(
            "fn returned no floating-point or complex tensor: " + ", ".join(facts.outputs), function_failed=True
        )
    refuse_nonfinite_outputs(run)
    resolve_forward_ad(run)


def refuse_nonfinite_outputs(run: context.Run) -> None:
    """Non-finite outputs at the inputs stop the check; non-finite elements of the differentiated inputs are
    never moved and listed as not checked (``nonfinite``)."""
    run.nonfinite = _nonfinite.nonfinite_elements(run.inputs, run.wrt)
    for k in run.out_idx:
        bad = nonfinite_count(run.outs[k])
        if bad:
            uses = ""
            if run.nonfinite:
                uses = (
                    f"; the differentiated inputs hold non-finite elements "
                    f"({_nonfinite.describe(run.inputs, run.names, run.nonfinite)}) that fn may be using: make them "
                    "finite, or mask them inside fn (torch.where(t.isfinite(), t, 0)) so that its outputs do not "
                    "depend on them and the other elements can be checked"
                )
            raise context.Failure(
                f"output {k} of fn has {bad} non-finite value(s) (NaN or inf) at the given inputs; "
                f"gradients cannot be checked there{uses}"
            )


def choose_mode(run: context.Run) -> str:
    run.n_in = sum(n_coords(run.inputs[i]) for i in run.wrt)
    run.n_out = sum(n_coords(run.outs[k]) for k in run.out_idx)
    mode = run.options["mode"]
    if mode == "auto":
        mode = "full" if (run.n_in * run.n_out <= AUTO_ENTRIES and run.n_in <= AUTO_COORDS) else "directional"
    run.mode = mode
    return mode


def backward_stage(run: context.Run, mode: str) -> context.Results:
    """The backward check's results: full or directional, then those of a recheck in a function's own
    precision where that replaces them, or joined by a narrowing full check where directional asks for one."""
    if mode == "full" and run.stencil.dtype == torch.float64:  # room for the staircase probe after it
        run.budget.reserve = len(_staircase.POINTS) + 1
    with run.stage() as found:
        wants_narrowing = backward(run, mode)
    run.budget.reserve = 0
    if plan.directions_failed(run, wants_narrowing or plan.compared_nothing(run, found)):  # the full check decides
        pinned = pinpoint.pinpointed(run, found) if wants_narrowing else None  # failed beyond doubt: one element
        if pinned is not None:
            return pinned
        early = plan.precision_first(run)
        mode = plan.fall_back(run)
        note = own_precision(run, True) if early else None  # a staircase: the check runs in its precision
        return backward_stage(run, mode) if note is None else plan.recheck(run, mode, note, backward_again)
    if wants_narrowing:
        return narrow.narrowed(run, found)
    return recheck_own_dtype(run, mode, recheck_quantized(run, mode, found))


def backward(run: context.Run, mode: str) -> bool:
    """The backward check; whether a failed directional check asks to be narrowed down."""
    run.not_evaluable = {}
    if mode == "full":
        full.backward_full(run)
        return False
    return directional.backward_directional(run)


def recheck_quantized(run: context.Run, mode: str, first: context.Results) -> context.Results:
    """A failed full check of a function whose outputs are lower-precision values (it computes in float32,
    bfloat16 or float16 inside and returns float64): the finite differences at float64's step see a
    staircase, and the check runs again with that precision's stencil and round-off model, whose results
    replace ``first``. So does a float64 function computing part of its value in lower precision
    (``staircase``), also where the check passed with second opinions that such a staircase explains.

    Told by one more evaluation at a point that is not a float32 value (x moved by 2^-36 of its scale):
    a function that rounds its inputs to lower precision returns values of that precision there."""
    result = first.check("backward")
    if mode != "full" or run.stencil.dtype != torch.float64 or result is None:
        return first
    failed = result.status == "failed"
    # outputs of a lower dtype than the float64 inputs: fn computes in it, and a pass at float64's step
    # may owe itself to that precision's noise, grown into the allowance (float32 inputs' own outputs are not)
    finest = min(tolerances.eps(run.inputs[i].dtype) for i in run.wrt)
    lowered = failed or any(tolerances.eps(run.outs[k].dtype) > max(finest, 1e-15) for k in run.out_idx)
    # a pass that needed second opinions (smaller steps, one-sided estimates) may be a staircase too
    if not lowered and not (result.status == "passed" and any(_second_opinion(n) for n in first.notes)):
        return first
    # a pass against f's observed rounding (whole ulps of a coarser value) asks for its outputs' precision too
    observed = any(getattr(n, "code", None) == NoteCode.OBSERVED_ROUNDING for n in first.notes)
    note = None if run.precision_probed else own_precision(run, lowered or observed)
    return first if note is None else plan.recheck(run, mode, note, backward_again)


def own_precision(run: context.Run, failed: bool) -> Note | None:
    """fn's lower precision inside, looked for once: its outputs' precision (where the check ``failed``), else
    a staircase in its values. Where found, the numerics are set for it and the note saying so returned."""
    run.precision_probed = True
    with run.budget.spending(run):
        quantized, stair = setup.output_precision(run) if failed else None, None
    if quantized is None:
        bases = {i: run.evaluator.base_args[i] for i in run.wrt}
        try:
            stair = probed_staircase(run, bases)
        except EvaluationFailed:
            stair = None
        if stair is None:
            return None
        quantized = stair.dtype
    run.quantized = quantized
    run.staircase = stair is not None
    run.stencil = tolerances.stencil_for(quantized)
    name = str(quantized).replace("torch.", "")
    if stair is not None:
        note = _staircase.note(stair)
    else:
        note = Note(
            f"fn's outputs are {name} values also where its inputs are not (it computes in {name} inside): "
            f"the float64 finite differences were checked again with {name}'s step and round-off model, so "
            "resolution is coarse",
            NoteCode.LOW_PRECISION_OUTPUTS, (name,),
        )
    return note


def backward_again(run: context.Run, mode: str, note: Note) -> context.Results:
    """The backward check run again from its start with the numerics the caller set (fresh steps, a budget
    of its own): its results, ``note`` first, replace the first run's."""
    run.steps.clear()
    with run.stage() as again:
        run.out.notes.append(note)
        run.budget.restart(run)
        backward(run, mode)
    return again


#: notes that say nothing of fn's rounding: a pass with only these needs no staircase probe
_NOT_OPINIONS = frozenset({
    NoteCode.UNCHECKED_FLAT, NoteCode.UNCHECKED_UNDERFLOW, NoteCode.UNCHECKED_NONFINITE, NoteCode.OUTPUT_NONE,
    NoteCode.INPUT_MODIFIED, NoteCode.GRAD_INSIDE, NoteCode.NONFINITE_INPUTS, NoteCode.FULL_COST,
    NoteCode.COST_PLAN, NoteCode.COMPILED, NoteCode.NO_GRADIENT_FLOW,
})


def _second_opinion(note) -> bool:
    return getattr(note, "code", None) not in _NOT_OPINIONS


def recheck_own_dtype(run: context.Run, mode: str, first: context.Results) -> context.Results:
    """A failed full check with a float64 reference whose failing entries sit at output elements where the
    float64 forward is another function (``own_dtype``): the check runs again with numerics in the inputs'
    own dtype, and its results replace ``first``."""
    result = first.check("backward")
    if mode != "full" or not run.reference or run.quantized is not None or result is None:
        return first
    if result.status != "failed" or run.f0_cache is None:
        return first
    gap = own_dtype.element_gap(run.outs, run.out_idx, run.f0_cache, first.mismatches, own_dtype.low_eps(run))
    if gap is None:
        return first
    spent = run.evaluator.evaluations + run.extra_evaluations
    setup.choose_numeric_dtype(run, own=True)
    run.extra_evaluations += spent - 1  # the analytic forward is counted once
    return backward_again(run, mode, own_dtype.note(gap, run.low_dtype_name, run.output_names[gap.output]))


def probed_staircase(run: context.Run, bases: dict) -> "_staircase.Staircase | None":
    """The staircase probe, a second opinion on a failed or doubtful check (its calls were kept back from the
    others': ``budget.reserve``)."""
    with run.budget.spending(run):
        return _staircase.staircase(run.evaluator.outputs_at, bases, run.evaluator.batched_together,
                                    unit_floor=not run.reference)


def higher_orders(run: context.Run, facts: Facts) -> context.Results:
    """Orders 2 .. ``order`` by composition: the first derivative projected on v, ``G``, checked like any
    function by this pipeline with ``order`` one less; its results renamed (``second_order``)."""
    G = second_order.first_derivative_of(run)
    options = dict(run.options)
    options["order"] = run.options["order"] - 1
    options["seed"] = run.seed + 1
    inner = execute(context.Run(G, run.inputs, list(run.wrt), run.names, None, options))
    run.extra_evaluations += inner.evaluations  # G's calls count as this check's
    if inner.function_failed and not facts.function_failed:
        facts.function_failed, facts.function_error = True, inner.function_error
    return second_order.results_of(inner, run.names, run.wrt)


def finish(run: context.Run, facts: Facts) -> None:
    """What the report says last: fn changing between calls, internal differentiation, elements not
    checked, the method, the float64 reference."""
    moved = called_again(run)
    if moved:
        run.out.errors.insert(0, moved)
    if run.evaluator.grad_inside is not None:
        run.out.notes.append(Note(
            f"fn differentiates internally (without grad it raised {run.evaluator.grad_inside}): its "
            "numerical evaluations ran with grad enabled and the differentiated inputs requiring grad",
            NoteCode.GRAD_INSIDE, (),
        ))
    facts.evaluations = run.evaluator.evaluations + run.extra_evaluations
    facts.extra_evaluations = run.budget.extra()  # the failing path's calls (``budget``)
    failed = any(c.status == "failed" for c in run.out.checks)
    if run.budget.cut or run.budget.decided or (run.budget.extra() and failed):  # a pass's are no news
        run.out.notes.append(run.budget.note(run))
    facts.path = run.evaluator.path
    if run.nonfinite:
        run.out.notes.append(Note(
            f"not checked: {_nonfinite.describe(run.inputs, run.names, run.nonfinite)} (fn's outputs do not "
            "depend on these elements; their derivatives cannot be estimated, the other elements were checked)",
            NoteCode.NONFINITE_INPUTS, tuple((run.names[i], tuple(p.tolist())) for i, p in run.nonfinite.items()),
        ))
    facts.method = method(run) + (f" at the {run.low_dtype_name} point" if run.reference else "")
    if run.reference:
        run.out.notes.insert(0, reference_note(run))
    elif run.no_reference_reason:
        run.out.notes.append(run.no_reference_reason)


def method(run: context.Run) -> str:
    num = run.directional.numerics if run.directional is not None else None
    if num is not None and num.estimates is None:
        return _screen.describe(run.stencil)
    if run.quantized is not None:
        name = str(run.quantized).replace("torch.", "")
        what = f"fn computes part of its value in {name}" if run.staircase else f"fn's outputs are {name} values"
        return run.stencil.describe().replace(
            f"evaluated in {name}", f"evaluated in float64 with {name}'s step and round-off ({what})"
        )
    return run.stencil.describe()


def reference_note(run: context.Run) -> Note:
    where = f"numerical derivatives evaluated in float64 at the {run.low_dtype_name} point; autograd checked in "
    state = run.directional
    if state is not None and state.numerics.estimates is None and state.grads_ref is None:
        return Note(where + (
            f"{run.low_dtype_name} within the floor of its round-off allowance (no float64 autograd run was "
            "needed)"
        ), NoteCode.FLOAT64_REFERENCE, (run.low_dtype_name, "floor"))
    return Note(
        where + f"{run.low_dtype_name}, its round-off allowance measured against a float64 autograd run",
        NoteCode.FLOAT64_REFERENCE, (run.low_dtype_name, "measured"),
    )


def evaluation_failed(run: context.Run, exc: EvaluationFailed) -> str:
    """The error of a check stopped by fn failing at a point near the inputs (it ran at them)."""
    step = ""
    if run.stencil is not None:
        step = (
            f" (the numerical derivatives move the differentiated inputs by up to "
            f"{max(abs(m) for m in run.stencil.multipliers):g}h, h = {run.stencil.h0:.2g}·max(|x|, 1))"
        )
    return (
        f"fn {exc.what} when evaluated at a point near the inputs{step}; at the inputs as given it ran. "
        "A function that cannot be evaluated next to the inputs (a domain edge, a check on the values, "
        "state that changes between calls) cannot be differentiated numerically there: move the inputs "
        "away from the edge, or make fn a pure function of its arguments"
    )


def reproduce(run: context.Run) -> Callable[[], str]:
    """Builds the reproduce line when first read (it may save the inputs to a file)."""
    extras = []
    defaults = _config.BUILTIN_DEFAULTS
    for key in ("mode", "order", "forward_ad", "atol", "rtol", "directions", "nondet_tol", "strict", "batched"):
        if run.options.get(key) != defaults.get(key):
            extras.append(f"{key}={run.options[key]!r}")
    if run.wrt != [i for i, t in enumerate(run.inputs) if is_differentiable(t) and t.requires_grad]:
        extras.append(f"wrt={run.wrt}")
    named = list(zip(run.names, run.inputs))
    if run.user_grad_outputs is not None:
        named.append(("grad_outputs", run.user_grad_outputs))
        extras.append("grad_outputs=grad_outputs")
    extras.append(f"seed={run.seed}")
    n, fn = len(run.inputs), run.fn
    return lambda: reproduce_line(fn, "assert_gradients_close", named, lambda names: ", ".join(names[:n]), extras)


def call_with_grad(run: context.Run, args) -> tuple:
    seed_global_rng(run.rng_seed)
    try:
        with torch.enable_grad():
            result = run.fn(*args)
    except Exception as exc:  # noqa: BLE001 - the function's own failure is reported, not raised
        raise context.Failure(f"fn raised {describe_exception(exc)} when called with the inputs as given", exc) from None
    try:
        return as_outputs(result)
    except FunctionError as exc:
        raise context.Failure(str(exc), function_failed=True) from None
