"""``check_gradients``: autograd against finite differences, in the inputs' own dtype.

Data flows one way: inputs -> numerical derivatives with error estimates (``_finite_diff``) and autograd
derivatives (``_analytic``) -> comparison (``_compare``) -> :class:`GradientReport`. Nothing here raises
because a gradient is wrong; see ``assertions`` for that.

Two ways to compare:

- **full**: every input coordinate is perturbed (batched through ``vmap``) and compared with autograd,
  entry by entry of the Jacobian when it is small (``d out[k] / d x[j]``), else projected on the
  output vector ``v`` (``d(v·out) / d x[j]``, one backward); with float64 numerics an input is first
  evaluated at ``x ± h·e_j`` only, and the rest of the stencil runs only when some entry does not pass the
  plain central difference's tolerance (``_screen_prepare``/``_screen_test``; several small inputs share
  one screen, their vectors and matrices evaluated through one vmap). Forward AD of inputs whose backward
  Jacobian passed is compared with that Jacobian along a random direction, entry by entry (against the
  finite differences) when they disagree;
- **directional**: random directions ``u`` (Rademacher, scaled per coordinate) against ``v·J·u``, a
  constant number of evaluations whatever the size; with float64 numerics it stops after ``x ± h·u``
  when that already decides a pass (``_screen``), and runs the rest of the stencil (and, for float32
  inputs, the float64 autograd reference) only otherwise. ``mode="auto"`` picks by size and, when a
  directional check fails, narrows it down to the wrong input elements.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from gradcheck_kit import (
    _approximate, _batched, _bias, _compiled, _config, _cost, _kinks, _nonfinite, _reference, _screen, _staircase,
    _state, _ties, tolerances,
)
from gradcheck_kit._analytic import (
    ForwardADUnsupported,
    GradientMetaError,
    _check_grad_meta,
    forward_pass,
    jvp_columns,
    jvp_directions,
    rows_from_coords,
    vjp_rows,
    vjp_rows_functorch,
)
from gradcheck_kit._compare import Verdict, compare
from gradcheck_kit._determinism import call_again, moved_outputs, not_deterministic
from gradcheck_kit._evaluate import (
    EvaluationFailed,
    Evaluator,
    as_outputs,
    describe_exception,
    differentiable_output_indices,
    is_none_output,
    seed_global_rng,
)
from gradcheck_kit._finite_diff import Estimates, _rms, estimate, estimate_with_sigma, noise_sigma
from gradcheck_kit._grad_outputs import reject_nonfinite
from gradcheck_kit._inputs import input_names as names_for_inputs  # the keyword shadows the name
from gradcheck_kit._inputs import (
    bitwise_equal,
    coord_index,
    coords,
    coords64,
    from_coords,
    function_name,
    input_infos,
    is_differentiable,
    layout_clone,
    n_coords,
    resolve_wrt,
    safe_float,
)
from gradcheck_kit._linearity import linearity_check
from gradcheck_kit._modules import module_state_kept
from gradcheck_kit._notes import unchecked_notes
from gradcheck_kit._one_sided import nothing_compared, one_sided
from gradcheck_kit._reasons import forward_ad_reason
from gradcheck_kit._report import CheckResult, GradientReport, GroupSummary, Mismatch, Note, format_index
from gradcheck_kit._reproduce import reproduce_line
from gradcheck_kit._structural import structural_checks
from gradcheck_kit._supported import check_grad_outputs, refuse_unsupported, unsupported_kind
from gradcheck_kit.errors import FunctionError, InvalidArgument
from gradcheck_kit.options import (  # noqa: F401 - MODES, FORWARD_AD re-exported
    FORWARD_AD,
    MODES,
    check_input_names,
    resolve_options,
)

__all__ = ["check_gradients", "MODES"]

#: full mode compares every Jacobian entry up to this many entries, else projections d(v·out)/dx
JACOBIAN_ENTRIES = 1 << 20
#: auto mode uses full mode up to this many Jacobian entries and input coordinates
AUTO_ENTRIES = 1 << 20
AUTO_COORDS = 1 << 13
#: a failed full-mode entry gets a second opinion at steps h/8, h/64, ... (``_Check._refine``): this many
#: levels (down to 8^-10 ~ 1e-9 of h), on at most this many coordinates of one input
REFINE_FACTOR = 8.0
REFINE_LEVELS = 10
REFINE_COORDS = 32
#: an estimate whose error estimate is at most this fraction of its value has converged
REFINE_PRECISION = 1e-2
#: a failed full-mode entry within this many tolerances of passing gets a second sample of f's rounding
#: (``_Check._resample``): the same stencil at x moved by RESAMPLE_SHIFT of the step
RESAMPLE_RATIO = 64.0
RESAMPLE_SHIFT = 2.0**-10
#: after a failed directional check, auto mode narrows down inputs up to this many coordinates
NARROW_COORDS = 1 << 16
#: the same where fn cannot run under vmap (one call of fn per point and coordinate)
NARROW_LOOP_COORDS = 1 << 13
#: elements of one batch of perturbed evaluations (inputs + outputs, per point)
BATCH_ELEMENTS = 1 << 23
#: mismatches kept per (check, input, output) group
KEPT_PER_GROUP = 100
DEFAULT_DIRECTIONS = 2
#: random directions of the full-mode forward-AD check against the checked backward Jacobian. One
#: suffices: the comparison allows round-off only, and forward AD that differs from the checked Jacobian by
#: a nonzero d in some row differs along a Gaussian u by d·u ~ N(0, |d|²), below that allowance only with
#: probability about allowance / |d| (each direction costs a forward-mode pass, make_dual per input)
FORWARD_DIRECTIONS = 1
#: above this many input coordinates one direction is the default (each costs a stencil of evaluations)
LARGE_COORDS = 1 << 16
#: a directional check of more low-precision coordinates than this defers its float64 probe to its first
#: point and f(x) in float64 to where it is needed (``_Check._choose_numeric_dtype``)
DEFERRED_PROBE_COORDS = 1 << 16
#: inputs whose Jacobians have at most this many entries together (float64, no user rtol) share one ±h
#: screen: one set of tensor operations over their stacked matrices instead of one per input
JOINT_SCREEN_ENTRIES = 1 << 18
#: full mode computes autograd's rows through vmap over torch.func.vjp from this many rows on, up to
#: FUNCTORCH_ELEMENTS rows x input coordinates (one more forward, then functorch's batching rules: 1.5x
#: faster on a conv1d's 112 rows; slower than is_grads_batched for a few rows, and measured slower
#: overall on a 24x24 matmul's 576 x 1152)
FUNCTORCH_ROWS = 64
FUNCTORCH_ELEMENTS = 1 << 16
#: the shared ±h screen evaluates its vector and matrix inputs through one vmap up to this many elements
#: of batched input values (points x coordinates); see _Check._screen_stencil
TOGETHER_ELEMENTS = 1 << 19


def check_gradients(
    fn: Callable,
    *inputs: Any,
    wrt: Any = None,
    grad_outputs: Any = None,
    mode: str | None = None,
    order: int | None = None,
    forward_ad: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int | None = None,
    input_names: Sequence[str] | None = None,
    directions: int | None = None,
    nondet_tol: float | None = None,
    strict: bool | None = None,
    batched: bool | None = None,
) -> GradientReport:
    """Compare autograd's derivatives of ``fn(*inputs)`` with finite differences; return a report.

    ``wrt``: indices of the inputs to differentiate (default: the tensors that require grad, or every
    floating tensor when none does). ``grad_outputs``: the vector ``v`` (one tensor per output) that
    projects outputs where a projection is used (default: uniform in (-1, 1), from the private generator).
    ``mode``: ``"full"``, ``"directional"`` or ``"auto"``. ``order=2`` also checks the backward of the
    backward. ``forward_ad``: ``True`` checks forward-mode AD too, ``"auto"`` where supported, ``False``
    skips it. ``atol``/``rtol``: ``None`` derives the allowance for autograd's round-off from the dtype
    (and a float64 run where possible); given values replace it (``atol + rtol·|numerical|``); the
    numerical error estimate is always added. ``seed`` seeds every random choice (the caller's RNG is
    untouched). ``input_names``: display names of the inputs in messages. ``directions``: random
    directions per directional check (default 2). ``strict``: entries that agree only approximately fail
    (see :class:`gradcheck_kit.options.CheckOptions`). ``batched=True`` also checks fn, its backward and
    its forward AD under ``vmap`` against one call per batch entry (the check ``batched``). Keywords left ``None`` take the defaults of
    ``gradcheck_kit._config.defaults`` (the pytest plugin sets them from its options).
    """
    options = _resolve_options(
        mode=mode, order=order, forward_ad=forward_ad, atol=atol, rtol=rtol, seed=seed,
        directions=directions, nondet_tol=nondet_tol, strict=strict, batched=batched,
    )
    if not callable(fn):
        raise InvalidArgument(f"fn={fn!r} is not callable")
    inputs = _torch_style(inputs)
    names = names_for_inputs(fn, len(inputs), check_input_names(input_names, len(inputs)))
    for i, t in enumerate(inputs):
        refuse_unsupported(t, f"inputs[{i}] ({names[i]})")
    check_grad_outputs(grad_outputs)
    reject_nonfinite(grad_outputs)
    inputs = tuple(_state.outside_inference(inputs))  # made in inference mode: ordinary copies
    wrt_list = resolve_wrt(inputs, wrt)
    eager = _compiled.eager_of(fn)  # torch.compile'd: numerics on the eager function, compiled against eager
    run = _Check(fn if eager is None else eager, inputs, wrt_list, names, grad_outputs, options)
    # a module's buffers (BatchNorm's running statistics) and .grad kept, one check at a time (_state)
    with _state.CHECK_LOCK, module_state_kept(fn):
        report = run.execute()
        if eager is not None:
            with _isolated_state():
                comparison = _compiled.compare_with_eager(fn, eager, inputs, wrt_list, names, options["seed"])
            _merge_compiled(report, comparison)
        if not report.errors:
            with _isolated_state():
                bias = _bias.bias_check(run.fn, inputs, wrt_list, options["seed"])
            if bias is not None:
                report.checks.append(bias)
        if options["batched"] and not report.errors:
            with _isolated_state():
                report.checks.append(_batched.compare_batched(run.fn, inputs, wrt_list, options["seed"]).check)
        elif getattr(run, "evaluator", None) is not None and run.evaluator.vmap_mismatch is not None:
            report.checks.append(CheckResult(
                "batched", "failed",
                f"fn under vmap gives other values than one call per point ({run.evaluator.vmap_mismatch}): a "
                "vmap rule that mixes batch entries? The numerical derivatives were evaluated point by point",
            ))
    _config.notify_report(report)
    return report


def _merge_compiled(report: GradientReport, comparison: "_compiled.CompiledComparison") -> None:
    """The compiled-against-eager verdict joins the eager function's report as the check ``compiled``."""
    report.checks.append(comparison.check)
    report.groups.extend(comparison.groups)
    report.mismatches.extend(comparison.mismatches)
    report.notes.append(Note(
        "fn is compiled (torch.compile): the numerical check ran on the eager function it wraps (eager == "
        "numerical: the backward check), and compiled autograd was compared with eager autograd on the same "
        "inputs (compiled == eager: the compiled check)",
        "compiled",
    ))
    report.notes.extend(Note(n, "compiled") for n in comparison.notes)


def _torch_style(inputs: tuple) -> tuple:
    """``check_gradients(fn, (x, y))``, as ``torch.autograd.gradcheck`` takes them, means ``(fn, x, y)``."""
    if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)) and any(is_differentiable(t) for t in inputs[0]):
        return tuple(inputs[0])
    return inputs


def _resolve_options(**given: Any) -> dict:
    return resolve_options(given, _config.current_defaults()).as_dict()


@contextmanager
def _isolated_state() -> Iterator[None]:
    """Grad recorded whatever the caller's grad or inference mode; the caller's modes and RNG states are
    restored whatever the checked function does; checks in several threads run one at a time (``_state``)."""
    with _state.isolated_state():
        yield


class _Failure(Exception):
    """Internal: stop the check and report this message as an error; ``function_failed`` where fn (or its
    backward) raised or returned no tensors, ``cause`` the exception it raised."""

    def __init__(self, message: str, cause: BaseException | None = None, function_failed: bool = False):
        super().__init__(message)
        self.cause = cause
        self.function_failed = function_failed or cause is not None


class _NoFloat64(Exception):
    """Internal: a deferred float64 probe found that fn does not compute in float64 (or fails) at its point."""


class _Check:
    def __init__(self, fn, inputs, wrt, names, grad_outputs, options):
        self.fn = fn
        self.inputs = list(inputs)
        self.wrt = wrt
        # inputs that require grad in every call with grad enabled: the differentiated ones and those the
        # caller made require grad (a fn that differentiates internally may need them to)
        caller_flags = [isinstance(t, torch.Tensor) and t.requires_grad and is_differentiable(t) for t in self.inputs]
        self.grad_positions = sorted(set(wrt) | {i for i, flag in enumerate(caller_flags) if flag})
        self.names = names
        self.user_grad_outputs = grad_outputs
        self.options = options
        self.seed = options["seed"]
        self.gen = torch.Generator().manual_seed(self.seed)
        self.rng_seed = (self.seed * 2654435761 + 97) % (2**63)
        self._rms_cache: dict = {}  # rms of inputs and outputs, for the natural derivative scale
        self._natural_parts: dict = {}  # (input, output): the natural scale in each derivative scale (_floor_scale)
        self._steps: dict[int, torch.Tensor] = {}  # finite-difference step per coordinate, per input
        self._mult_cache: dict[tuple, torch.Tensor] = {}  # stencil multipliers as (points, 1) tensors
        self._directional_allowance: dict = {}  # "screen"/"full" -> (allowance, scale): backward and jvp share them
        self._directional_square_sums: dict = {}  # (i, k) -> sum((g·u)²) of autograd's gradient, when finite
        self.quantized: torch.dtype | None = None  # fn's outputs' precision, where a recheck used it
        self._refined_resolved = False  # a second opinion at a smaller step passed some entry (_refine)
        self._along_cache: dict = {}  # _stencil_along's evaluations per (input, column, points)
        self._tie_failures: list[tuple[int, list[int], str]] = []  # (input, members, text) of ties judged wrong
        self._directional_superseded = False  # auto mode's narrowed full check overrode the directional failure
        self._conditioning_rows: dict | None | bool = False  # _conditioning's result (False: not computed)
        self._coarse: float | None = None  # coarse_eps's result (None: not computed)
        self.approximate = _approximate.Tally()  # derivatives within the approximate tier (one note)
        self.staircase = False  # _recheck_quantized found a staircase inside a float64 function
        self.forward_rounding: tuple[float, ...] = ()  # per output: |f64 - low| at x (_reference_differs)
        self.report = GradientReport(
            function=function_name(fn),
            seed=self.seed,
            inputs=input_infos(inputs, names, wrt),
            options={k: v for k, v in options.items()},
        )

    # ---------------------------------------------------------------------------------------------
    def execute(self) -> GradientReport:
        start = time.perf_counter()
        with _isolated_state():
            try:
                self._run()
                note = self.approximate.note(self.report.compared, self.options["strict"])
                if note is not None:
                    self.report.notes.append(note)
            except _Failure as exc:
                self.report.errors.append(str(exc))
                if exc.function_failed:
                    self.report.function_failed, self.report.function_error = True, exc.cause
            except EvaluationFailed as exc:
                # fn failing next to the inputs: a domain edge, or fn changing between calls (it tells which)
                moved = self._called_again() if hasattr(self, "out_idx") else None
                self.report.errors.append(moved or self._evaluation_failed(exc))
                self.report.function_failed, self.report.function_error = True, exc.cause
        self.report.notes = list(dict.fromkeys(self.report.notes))
        if not self.report.ok:
            self.report.defer_reproduce(self._reproduce_line())
        self.report.elapsed = time.perf_counter() - start
        return self.report

    def _evaluation_failed(self, exc: EvaluationFailed) -> str:
        """The error of a check stopped by fn failing at a point near the inputs (it ran at them)."""
        step = ""
        if hasattr(self, "stencil"):
            step = (
                f" (the numerical derivatives move the differentiated inputs by up to "
                f"{max(abs(m) for m in self.stencil.multipliers):g}h, h = {self.stencil.h0:.2g}·max(|x|, 1))"
            )
        return (
            f"fn {exc.what} when evaluated at a point near the inputs{step}; at the inputs as given it ran. "
            "A function that cannot be evaluated next to the inputs (a domain edge, a check on the values, "
            "state that changes between calls) cannot be differentiated numerically there: move the inputs "
            "away from the edge, or make fn a pure function of its arguments"
        )

    def _reproduce_line(self) -> Callable[[], str]:
        """Builds the reproduce line when first read (it may save the inputs to a file)."""
        extras = []
        defaults = _config.BUILTIN_DEFAULTS
        for key in ("mode", "order", "forward_ad", "atol", "rtol", "directions", "nondet_tol", "strict", "batched"):
            if self.options.get(key) != defaults.get(key):
                extras.append(f"{key}={self.options[key]!r}")
        if self.wrt != [i for i, t in enumerate(self.inputs) if is_differentiable(t) and t.requires_grad]:
            extras.append(f"wrt={self.wrt}")
        named = list(zip(self.names, self.inputs))
        if self.user_grad_outputs is not None:
            named.append(("grad_outputs", self.user_grad_outputs))
            extras.append("grad_outputs=grad_outputs")
        extras.append(f"seed={self.seed}")
        n, fn = len(self.inputs), self.fn
        return lambda: reproduce_line(fn, "assert_gradients_close", named, lambda names: ", ".join(names[:n]), extras)

    # ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        report = self.report
        # 1. autograd's forward on the inputs as given (layout kept, storage of our own)
        self.leaves = {}
        analytic_args = []
        for i, t in enumerate(self.inputs):
            if isinstance(t, torch.Tensor):
                clone = layout_clone(t)
                if i in self.grad_positions:
                    clone.requires_grad_(True)
                if i in self.wrt:
                    self.leaves[i] = clone
                analytic_args.append(clone)
            else:
                analytic_args.append(t)
        self.analytic_args = analytic_args
        self.mutates_inputs = False
        started = time.perf_counter()
        outs = self._call_with_grad(analytic_args)
        self.forward_seconds = time.perf_counter() - started  # one call of fn (full mode's cost estimate)
        # fn saw copies: the caller's tensors still hold the values it was given
        for i, (a, t) in enumerate(zip(analytic_args, self.inputs)):
            if not isinstance(t, torch.Tensor):
                continue
            before = t.detach()
            if not bitwise_equal(a, before) and not torch.equal(a.detach(), before) and not (
                torch.isnan(before).any() if before.is_floating_point() else False
            ):
                self.mutates_inputs = True
                report.notes.append(
                    f"fn modifies input {i} ({self.names[i]}) in place; every evaluation was given a fresh copy "
                    "of the original values"
                )
        self.outs = outs
        for k, kind in enumerate(map(unsupported_kind, outs)):
            if kind is not None:
                raise _Failure(f"output {k} of fn is {kind}: only strided tensors with values can be checked")
        self.out_idx = differentiable_output_indices(outs)
        report.outputs = [
            "None" if is_none_output(o) else f"{tuple(o.shape)} {str(o.dtype).replace('torch.', '')}" for o in outs
        ]
        skipped = [str(k) for k, o in enumerate(outs) if is_none_output(o)]
        if skipped:
            report.notes.append(Note(f"output {', '.join(skipped)} of fn is None: skipped", "output_none"))
        if not self.out_idx:
            raise _Failure(
                "fn returned no floating-point or complex tensor: " + ", ".join(report.outputs), function_failed=True
            )
        # non-finite elements of the differentiated inputs: never moved, listed as not checked (_nonfinite)
        self.nonfinite = _nonfinite.nonfinite_elements(self.inputs, self.wrt)
        for k in self.out_idx:
            bad = _nonfinite_count(outs[k])
            if bad:
                uses = ""
                if self.nonfinite:
                    uses = (
                        f"; the differentiated inputs hold non-finite elements ({_nonfinite.describe(self.inputs, self.names, self.nonfinite)}) "
                        "that fn may be using: make them finite, or mask them inside fn (torch.where(t.isfinite(), t, 0)) "
                        "so that its outputs do not depend on them and the other elements can be checked"
                    )
                raise _Failure(
                    f"output {k} of fn has {bad} non-finite value(s) (NaN or inf) at the given inputs; "
                    f"gradients cannot be checked there{uses}"
                )
        # 2. mode
        n_in = sum(n_coords(self.inputs[i]) for i in self.wrt)
        n_out = sum(n_coords(outs[k]) for k in self.out_idx)
        self.n_in, self.n_out = n_in, n_out
        mode = self.options["mode"]
        if mode == "auto":
            mode = "full" if (n_in * n_out <= AUTO_ENTRIES and n_in <= AUTO_COORDS) else "directional"
        self.mode = mode
        # 3. numerics: in float64 where fn runs in float64, else in the inputs' dtype
        self._choose_numeric_dtype()
        # 4. projections v of the outputs
        self.v = self._output_vectors()
        if n_in == 0 or n_out == 0:
            what = "input" if n_in == 0 else "output"
            report.mode = self.options["mode"]
            report.checks.append(CheckResult("backward", "skipped", f"empty {what}: no derivative to compare"))
            report.evaluations = self.evaluator.evaluations + self.extra_evaluations
            return
        report.mode = mode
        self._full_cost()
        notes_before = len(report.notes)
        self.backward_check(mode)
        self._recheck_quantized(mode, notes_before)
        report.errors.extend(
            nothing_compared(report.groups, self.wrt, self.names, self.not_evaluable, mode == "directional")
        )
        structural_checks(self)
        report.checks.append(self._linearity())
        self.forward_check(mode)
        self.second_order_check()
        moved = self._called_again()
        if moved:
            report.errors.insert(0, moved)
        if self.evaluator.grad_inside is not None:
            report.notes.append(
                f"fn differentiates internally (without grad it raised {self.evaluator.grad_inside}): its "
                "numerical evaluations ran with grad enabled and the differentiated inputs requiring grad"
            )
        report.evaluations = self.evaluator.evaluations + self.extra_evaluations
        report.path = self.evaluator.path
        if self.nonfinite:
            report.notes.append(
                f"not checked: {_nonfinite.describe(self.inputs, self.names, self.nonfinite)} (fn's outputs do not "
                "depend on these elements; their derivatives cannot be estimated, the other elements were checked)"
            )
        report.method = self._method() + (f" at the {self.low_dtype_name} point" if self.reference else "")
        if self.reference:
            report.notes.insert(0, self._reference_note())
        elif self.no_reference_reason:
            report.notes.append(self.no_reference_reason)

    def _full_cost(self) -> None:
        """Full mode's estimated cost (``_cost``): above the limit the check stops with an error saying so."""
        if self.mode != "full" or self.n_in < _cost.SMALL_COORDS:
            return
        largest = max(self.wrt, key=lambda i: n_coords(self.inputs[i]))
        points = 2 if self._can_screen() else self.stencil.points  # the fewest: the ±h screen may settle it
        batched = self._runs_under_vmap(largest)
        x = self.evaluator.base_args[largest]
        elements = _cost.ELEMENT_SECONDS * (sum(n_coords(self.inputs[i]) for i in self.wrt) + self.n_out)
        if batched and x.device.type != "cpu":  # one batch of points at x, as large as _stencil_values builds
            b = max(1, min(n_coords(x), BATCH_ELEMENTS // (n_coords(x) + self.n_out)))
            run = lambda: self.evaluator.batched(largest, coords(x).expand(b, -1).clone(), x.shape, x.is_complex())  # noqa: E731
            per_point = _cost.timed(run, b)
        elif batched:
            per_point = elements
        else:  # one call of fn per point, on points built as in a batch
            per_point = min(self.forward_seconds, _cost.timed(lambda: self.evaluator.outputs_at({}), 1)) + elements
        cost = _cost.estimate(self.n_in, points, per_point, batched)
        limit = _cost.limit_seconds()
        if cost.seconds > limit:
            raise _Failure(_cost.refusal(cost, limit))
        if cost.seconds > _cost.WARN_FRACTION * limit:
            self.report.notes.append(_cost.warning(cost))

    def _called_again(self) -> str | None:
        """fn called once more at the inputs as given: the error saying how it changed since its first call, or
        None where it gives the same outputs."""
        again, failed = call_again(self.fn, self.inputs, self.grad_positions, self.rng_seed)
        if hasattr(self, "extra_evaluations"):
            self.extra_evaluations += 1
        what = failed or moved_outputs(self.outs, again, self.out_idx, float(self.options["nondet_tol"]))
        return None if what is None else not_deterministic(what)

    def _linearity(self) -> CheckResult:
        graded = [k for k in self.out_idx if self.outs[k].requires_grad]
        args = (
            [self.outs[k] for k in graded], [self.leaves[i] for i in self.wrt], [self.names[i] for i in self.wrt],
            self.seed, float(self.options["nondet_tol"]),
        )
        state = getattr(self, "full_state", None) if not hasattr(self, "directional_state") else None
        jacobians = None if state is None else [
            [state["analytic"].get((i, k)) if state["rows"][k] == "jacobian" else None for k in graded] for i in self.wrt
        ]
        result = linearity_check(*args, jacobians=jacobians)
        if result.status == "failed" and self.coarse_eps():  # fn computes in a lower precision inside
            result = linearity_check(*args, eps_floor=self.coarse_eps(), jacobians=jacobians)
        float32 = all(self.inputs[i].dtype == torch.float32 for i in self.wrt)  # float16/bfloat16: too coarse
        if result.status == "failed" and float32 and state is not None and state.get("reference"):
            # a low-precision backward of an ill-conditioned function rounds each of the three backwards by
            # up to how far its float64 derivatives move when the inputs move by a few roundings
            conditioning = self._conditioning()
            if conditioning:
                spread = [[conditioning.get((i, k)) if state["rows"][k] == "jacobian" else None for k in graded]
                          for i in self.wrt]
                result = linearity_check(*args, eps_floor=self.coarse_eps(), jacobians=jacobians, conditioning=spread)
        return result

    def coarse_eps(self) -> float:
        """eps of a precision coarser than float64 whose values fn returns also where its inputs are not float32
        values (it computes in that precision inside), else 0: the rounding its backward may have too. One
        evaluation, on first need."""
        if self._coarse is None:
            precision = self.quantized or (self._output_precision() if self.num_dtype == torch.float64 else None)
            self._coarse = tolerances.eps(precision) if precision is not None else 0.0
        return self._coarse

    def _method(self) -> str:
        num = self.directional_state["numerics"] if hasattr(self, "directional_state") else None
        if num is not None and num.estimates is None:
            return _screen.describe(self.stencil)
        if self.quantized is not None:
            name = str(self.quantized).replace("torch.", "")
            what = f"fn computes part of its value in {name}" if self.staircase else f"fn's outputs are {name} values"
            return self.stencil.describe().replace(
                f"evaluated in {name}", f"evaluated in float64 with {name}'s step and round-off ({what})"
            )
        return self.stencil.describe()

    def _recheck_quantized(self, mode: str, notes_before: int) -> None:
        """A failed full check of a function whose outputs are lower-precision values (it computes in float32,
        bfloat16 or float16 inside and returns float64): the finite differences at float64's step see a
        staircase, and the check runs again with that precision's stencil and round-off model. So does a
        float64 function computing part of its value in lower precision (``_staircase``), also where the
        check passed with second opinions that such a staircase explains.

        Told by one more evaluation at a point that is not a float32 value (x moved by 2^-36 of its scale):
        a function that rounds its inputs to lower precision returns values of that precision there."""
        result = self.report.check("backward")
        if mode != "full" or self.stencil.dtype != torch.float64 or result is None:
            return
        failed = result.status == "failed"
        # a pass that needed second opinions (smaller steps, one-sided estimates) may be a staircase too
        if not failed and not (result.status == "passed" and len(self.report.notes) > notes_before):
            return
        quantized, stair = self._output_precision() if failed else None, None
        if quantized is None:
            bases = {i: self.evaluator.base_args[i] for i in self.wrt}
            try:
                stair = _staircase.staircase(self.evaluator.outputs_at, bases)
            except EvaluationFailed:
                stair = None
            if stair is None:
                return
            quantized = stair.dtype
        self.quantized = quantized
        self.staircase = stair is not None
        self.report.checks = [c for c in self.report.checks if c.name != "backward"]
        self.report.mismatches = [m for m in self.report.mismatches if m.check != "backward"]
        self.report.groups = [g for g in self.report.groups if g.check != "backward"]
        del self.report.notes[notes_before:]  # the first pass's notes (its refinements) no longer hold
        self.stencil = tolerances.stencil_for(quantized)
        self._steps.clear()
        name = str(quantized).replace("torch.", "")
        if stair is not None:
            self.report.notes.append(_staircase.note(stair))
            self.backward_check(mode)
            return
        self.report.notes.append(
            f"fn's outputs are {name} values also where its inputs are not (it computes in {name} inside): the "
            f"float64 finite differences were checked again with {name}'s step and round-off model, so "
            "resolution is coarse"
        )
        self.backward_check(mode)

    def _output_precision(self) -> torch.dtype | None:
        """The coarsest precision (bfloat16, float16, float32) whose values fn returns at a point that is not a
        float32 value, or None where fn returns float64 values (or integers only) there."""
        repl = {}
        for i in self.wrt:
            x = self.evaluator.base_args[i]
            if not x.is_floating_point():
                return None
            repl[i] = _nudged(x, 2.0**-36)
        try:
            outs = self.evaluator.outputs_at(repl)
        except EvaluationFailed:
            return None
        finite = [o[torch.isfinite(o)] for o in outs]
        # integers (a constant 0, rounded values) are values of every precision: they tell nothing
        if not any(bool((f != f.round()).any()) for f in finite):
            return None
        for dtype in (torch.bfloat16, torch.float16, torch.float32):  # coarsest significand first
            if all(bool((f == f.to(dtype).to(torch.float64)).all()) for f in finite):
                return dtype
        return None

    def _reference_note(self) -> str:
        where = f"numerical derivatives evaluated in float64 at the {self.low_dtype_name} point; autograd checked in "
        state = getattr(self, "directional_state", None)
        if state is not None and state["numerics"].estimates is None and state.get("grads_ref") is None:
            return where + (
                f"{self.low_dtype_name} within the floor of its round-off allowance (no float64 autograd run was "
                "needed)"
            )
        return where + f"{self.low_dtype_name}, its round-off allowance measured against a float64 autograd run"

    # ---------------------------------------------------------------------------------------------
    def _call_with_grad(self, args) -> tuple:
        seed_global_rng(self.rng_seed)
        try:
            with torch.enable_grad():
                result = self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - the function's own failure is reported, not raised
            raise _Failure(f"fn raised {describe_exception(exc)} when called with the inputs as given", exc) from None
        try:
            return as_outputs(result)
        except FunctionError as exc:
            raise _Failure(str(exc), function_failed=True) from None

    def _choose_numeric_dtype(self, defer: bool = True) -> None:
        """The numerics' dtype and base point: float64 where fn runs in float64 (for low-precision inputs a
        probe at x tells), else the inputs' own.

        A directional check of more than ``DEFERRED_PROBE_COORDS`` low-precision coordinates defers the
        probe (``defer``): its first point, x + h·u, is the probe (``_outputs_at``), and f(x) in float64
        is evaluated only where the check needs it (``f0``): one float64 forward fewer, a fifth of the check.
        """
        self.extra_evaluations = 1  # the analytic forward
        low = [self.inputs[i].dtype for i in self.wrt if tolerances.eps(self.inputs[i].dtype) > 1e-15]
        self.reference = False
        self.reference_pending = False
        self.no_reference_reason = ""
        self.low_dtype_name = ""
        self._f0 = None
        grad_inside = None
        probe = None
        if low:
            self.low_dtype_name = str(low[0]).replace("torch.", "")
            ref_args = [_to_double(t) for t in self.inputs]
            if defer and self.mode == "directional" and self.n_in > DEFERRED_PROBE_COORDS:
                self.reference = self.reference_pending = True
                base = ref_args
            else:
                probe, grad_inside = self._probe_float64(ref_args)
                if probe is not None and self._reference_differs(probe, ref_args, grad_inside, low[0]):
                    probe = None
                if probe is not None:
                    self.reference = True
                    base = ref_args
        borrowed: list[int] = []
        if not self.reference:
            # the inputs' values in the inputs' dtype. A directional check only reads the differentiated
            # inputs (fn gets x ± h·u in buffers of ours): it borrows the caller's tensors, which the
            # Evaluator never hands to fn (a call that would gets a copy); every other base is a copy
            if self.mode == "directional" and not self.mutates_inputs:
                borrowed = [i for i in self.wrt if self.inputs[i].is_contiguous()]
            base = [
                (t.detach() if i in borrowed else t.detach().clone()) if isinstance(t, torch.Tensor) else t
                for i, t in enumerate(self.inputs)
            ]
        num_dtype = torch.float64
        if not self.reference and low:
            num_dtype = _real_of(low[0])
        self.num_dtype = num_dtype
        self.stencil = tolerances.stencil_for(num_dtype)
        base = [b.contiguous() if isinstance(b, torch.Tensor) else b for b in base]
        self.evaluator = Evaluator(
            self.fn, base, self.out_idx, self.rng_seed, fresh_copies=self.mutates_inputs, borrowed=borrowed,
            grad_inputs=self.grad_positions, out_shapes=[self.outs[k].shape for k in self.out_idx],
            grad_inside=grad_inside,
        )
        self.evaluator.nondet_tol = float(self.options["nondet_tol"])
        if not self.reference and not low:
            # numerics in the inputs' own dtype: autograd's forward already is f(x)
            self._f0 = [coords64(self.outs[k]) for k in self.out_idx]
        elif probe is not None:  # the float64 probe ran at the base point with the same RNG state: f(x)
            self._f0 = [coords64(probe[k]) for k in self.out_idx]
        elif not self.reference_pending:
            self._f0 = self.evaluator.outputs_at({})

    def _probe_float64(self, ref_args: list) -> tuple[tuple | None, str | None]:
        """fn at the inputs in float64: its outputs where they are float64 of the same shapes (and why calls
        need grad, if they do), else ``None`` with ``no_reference_reason`` saying why."""
        # fresh copies where fn modifies its inputs: ref_args become the numerics' base point
        prober = Evaluator(
            self.fn, ref_args, self.out_idx, self.rng_seed, fresh_copies=self.mutates_inputs,
            grad_inputs=self.grad_positions,
        )
        try:
            ref_outs = prober.call(ref_args)
        except EvaluationFailed as exc:
            self.no_reference_reason = (
                f"fn cannot run in float64 (it {exc.what}): numerical derivatives in "
                f"{self.low_dtype_name}, so resolution is coarse"
            )
            return None, None
        self.extra_evaluations += 1
        ok = len(ref_outs) == len(self.outs) and all(
            ref_outs[k].dtype in (torch.float64, torch.complex128) and ref_outs[k].shape == self.outs[k].shape
            for k in self.out_idx
        )
        if not ok:
            dts = ", ".join(str(ref_outs[k].dtype) for k in self.out_idx if k < len(ref_outs))
            self.no_reference_reason = (
                f"fn does not compute in float64 (float64 inputs gave {dts}): numerical derivatives in "
                f"{self.low_dtype_name}, so resolution is coarse"
            )
            return None, None
        return ref_outs, prober.grad_inside

    def _reference_differs(self, probe: tuple, ref_args: list, grad_inside, low: torch.dtype) -> bool:
        """Whether fn's float64 outputs at x differ from its low-precision ones by more than rounding explains
        (``_reference``): then ``no_reference_reason`` says so and the numerics stay in the inputs' dtype."""
        e = tolerances.eps(low)

        def moved() -> list[torch.Tensor] | None:
            repl = {i: _reference.moved_point(ref_args[i], e) for i in self.wrt if tolerances.eps(self.inputs[i].dtype) > 1e-15}
            prober = Evaluator(
                self.fn, ref_args, self.out_idx, self.rng_seed, fresh_copies=True, grad_inputs=self.grad_positions,
                grad_inside=grad_inside,
            )
            self.extra_evaluations += 1
            try:
                return prober.outputs_at(repl)
            except EvaluationFailed:
                return None

        low_outs = [coords64(self.outs[k]) for k in self.out_idx]
        x_scale = max(float(_rms(coords64(self.inputs[i]))) for i in self.wrt)
        gap = _reference.forward_gap(low_outs, [coords64(probe[k]) for k in self.out_idx], e, x_scale, moved)
        self.forward_rounding = gap.rounding
        if gap.ratio <= 1.0:
            return False
        self.no_reference_reason = _reference.gap_note(gap, self.low_dtype_name, self.out_idx[gap.output])
        return True

    @property
    def f0(self) -> list[torch.Tensor]:
        """f(x) per differentiable output (float64 coordinates) in the numerics' dtype; where the float64 probe
        was deferred, evaluated on first need (a screened directional pass never needs it)."""
        if self._f0 is None:
            self._f0 = self.evaluator.outputs_at({})
        return self._f0

    def _output_vectors(self) -> dict[int, torch.Tensor]:
        """v per differentiable output, as float64 real coordinates of the output's own dtype values."""
        given = self.user_grad_outputs
        if given is not None:
            if isinstance(given, torch.Tensor):
                given = (given,)
            given = tuple(given)
            if len(given) != len(self.outs):
                raise InvalidArgument(
                    f"grad_outputs has {len(given)} tensor(s) but fn returned {len(self.outs)} output(s)"
                )
        vectors = {}
        self.drawn_vectors: dict[int, torch.Tensor] = {}  # v as drawn, in the output's dtype and shape
        self.out_vectors: dict[int, torch.Tensor] = {}  # v as drawn or given, in the output's dtype and shape
        for k in self.out_idx:
            out = self.outs[k]
            if given is not None:
                g = given[k]
                if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(out.shape):
                    shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
                    raise InvalidArgument(
                        f"grad_outputs[{k}] has shape {shape}; output {k} has shape {tuple(out.shape)}"
                    )
                v = g.detach().to(device=out.device, dtype=out.dtype)
            else:
                wide = torch.float64 if _real_of(out.dtype) == torch.float64 else torch.float32
                v = _uniform_vector(out.shape, self.gen, wide)
                if out.is_complex():
                    v = torch.complex(v, _uniform_vector(out.shape, self.gen, wide))
                # exact in float32 and float64, rounded once in lower precision; on the output's device
                v = v.to(device=out.device, dtype=out.dtype)
                self.drawn_vectors[k] = v
            self.out_vectors[k] = v
            vectors[k] = coords64(v)
        return vectors

    # ---------------------------------------------------------------------------------------------
    # full mode
    def _stencil_values(self, i: int, rows: dict[int, str], mults: Sequence[float]) -> dict[int, torch.Tensor]:
        """``f`` at ``x + m·h_j·e_j`` for every coordinate ``j`` of input ``i`` and each multiplier ``m``:
        per output ``(len(mults), n_i, r_k)`` float64 (projected rows when ``rows[k]`` says so)."""
        x = self.evaluator.base_args[i]
        complex_ = x.is_complex()
        base = coords(x)  # the input's (real) dtype
        n_i = base.numel()
        step = self._step(i)
        mult = self._multipliers(mults)
        npts = len(mults)
        cols_per_batch = max(1, BATCH_ELEMENTS // ((n_i + self.n_out) * npts))
        values = {}
        if cols_per_batch < n_i:
            values = {k: torch.empty(npts, n_i, self._rows(k, rows[k]), dtype=torch.float64) for k in self.out_idx}
        for start in range(0, n_i, cols_per_batch):
            stop = min(n_i, start + cols_per_batch)
            b = stop - start
            points = base.expand(npts, b, n_i).clone()
            _move_diagonal(points, start, mult * step[start:stop])
            outs = self.evaluator.batched(i, points.view(npts * b, n_i), x.shape, complex_)
            for pos, k in enumerate(self.out_idx):
                proj = self._project(k, rows[k], outs[pos])  # (npts*b, r)
                if b == n_i:
                    values[k] = proj.reshape(npts, b, -1)
                else:
                    values[k][:, start : start + b] = proj.reshape(npts, b, -1)
        return values

    def _screen_stencil(self, inputs: Sequence[int], rows: dict[int, str]) -> dict[int, dict[int, torch.Tensor]]:
        """``f`` at ±h for every coordinate of ``inputs``: vectors and matrices together through one vmap
        where they are small (``TOGETHER_ELEMENTS``), the others (and all, where vmap cannot run fn so) one
        input at a time.

        Why only vectors and matrices: torch batches ``matmul``, ``linear`` and elementwise ops over batched
        matrices as cheaply as over one batched input, so one call saves the per-call cost of vmap (an MLP's
        check -16%), while a batched convolution weight beside a batched image turns into a grouped
        convolution (a conv1d's check +40% when its inputs were evaluated together)."""
        mults = self.stencil.multipliers[:2]
        together = [i for i in inputs if self.inputs[i].dim() <= 2]
        n_together = sum(n_coords(self.inputs[i]) for i in together)
        known = None
        if len(together) >= 2 and len(mults) * n_together * n_together <= TOGETHER_ELEMENTS:
            known = self._stencil_values_together(together, rows, mults)
        known = known or {}
        for i in inputs:
            if i not in known:
                known[i] = self._stencil_values(i, rows, mults)
        return known

    def _stencil_values_together(
        self, inputs: Sequence[int], rows: dict[int, str], mults: Sequence[float]
    ) -> dict[int, dict[int, torch.Tensor]] | None:
        """``_stencil_values`` of several inputs through one vmap over all of them (each point moves one
        coordinate of one input; the others stay at x). ``None`` where vmap cannot run fn so."""
        mult = self._multipliers(mults)
        npts = len(mults)
        xs = [self.evaluator.base_args[i] for i in inputs]
        bases = [coords(x) for x in xs]
        sizes = [b.numel() for b in bases]
        total = npts * sum(sizes)
        batches, start = [], 0
        for i, x, base, n in zip(inputs, xs, bases, sizes):
            points = base.expand(total, n).clone()
            _move_diagonal(points[start : start + npts * n].view(npts, n, n), 0, mult * self._step(i))
            batches.append(from_coords(points, x.shape, x.is_complex()))
            start += npts * n
        outs = self.evaluator.batched_together(inputs, batches)
        if outs is None:
            return None
        values, start = {}, 0
        for i, n in zip(inputs, sizes):
            values[i] = {
                k: self._project(k, rows[k], outs[pos][start : start + npts * n]).reshape(npts, n, -1)
                for pos, k in enumerate(self.out_idx)
            }
            start += npts * n
        return values

    def _multipliers(self, mults: Sequence[float]) -> torch.Tensor:
        """The stencil multipliers as a ``(points, 1)`` float64 tensor (cached)."""
        key = tuple(mults)
        if key not in self._mult_cache:
            self._mult_cache[key] = torch.tensor(key, dtype=torch.float64).unsqueeze(1)
        return self._mult_cache[key]

    def _step(self, i: int) -> torch.Tensor:
        if i not in self._steps:
            self._prepare_steps([i])
        return self._steps[i]

    def _prepare_steps(self, inputs: Sequence[int]) -> None:
        """The finite-difference steps of several inputs in one pass (per coordinate, float64)."""
        todo = [i for i in inputs if i not in self._steps]
        if not todo:
            return
        # numpy: full mode's inputs are small, where a numpy call costs a fraction of a torch call
        parts = [coords64(self.evaluator.base_args[i]).numpy() for i in todo]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        x = np.where(np.isfinite(x), x, 0.0)  # a non-finite element (not used by fn) takes the unit step
        # scale_of: 2^round(log2(max(|x|, 1)))
        steps = np.exp2(np.round(np.log2(np.maximum(np.abs(x), 1.0)))) * self.stencil.h0
        for i, s in zip(todo, torch.from_numpy(steps).split([p.size for p in parts])):
            self._steps[i] = s

    def _full_numerics(self, i: int, rows: dict[int, str], known: dict | None = None) -> dict[int, "_FullNumerics"]:
        """Numerical derivatives of every output row w.r.t. every coordinate of input ``i``.

        ``rows[k]`` is ``"jacobian"`` (one row per output coordinate) or ``"projected"`` (one row: v·out).
        Returns per output the raw stencil values ``(points, n_i, r_k)`` with the noise of ``f``.
        ``known``: stencil values already computed for the first multipliers (the screen's ±h).
        """
        mults = self.stencil.multipliers
        done = 0 if known is None else next(iter(known.values())).shape[0]
        fresh = self._stencil_values(i, rows, mults[done:]) if done < len(mults) else None
        x = self.evaluator.base_args[i]
        xc = coords64(x)
        step = self._step(i)
        numerics = {}
        for pos, k in enumerate(self.out_idx):
            parts = [self._project(k, rows[k], self.f0[pos].unsqueeze(0)).unsqueeze(1).expand(1, xc.numel(), -1)]
            if known is not None:
                parts.append(known[k])
            if fresh is not None:
                parts.append(fresh[k])
            values = torch.cat(parts)
            fmag = self._project(k, rows[k], self.f0[pos].abs().unsqueeze(0), absolute=True)  # (1, r)
            sigma = noise_sigma(values, fmag, self.stencil, pool_dim=0)
            flat = (values[1:] == values[0]).all(dim=0)
            numerics[k] = _FullNumerics(values, sigma, step, xc.abs(), flat)
        return numerics

    def _judge(self, i, k, a, ref, num: "_FullNumerics", extra: float, kap: float):
        """Compare autograd's ``(n_i, r)`` values with the numerics, on the entries that can differ.

        An entry whose stencil values are all identical (f does not depend on that coordinate) and whose
        autograd value is exactly zero passes without arithmetic: most of a Jacobian, for most functions.
        """
        candidates = ~num.flat | (a != 0)
        j_idx, r_idx = candidates.nonzero(as_tuple=True)
        est = estimate_with_sigma(
            num.values[:, j_idx, r_idx], num.step[j_idx], num.sigma[j_idx, r_idx], self.stencil,
            x_abs=num.x_abs[j_idx],
        )
        allow = self._allowance_full(i, k, a, ref, est, extra, (j_idx, r_idx))
        a_g = a[j_idx, r_idx]
        verdict = compare(a_g, est, allow, kap)
        # f exactly zero at every point while autograd's value is below sqrt(tiny): f underflows (x * x at
        # x = 1e-200), a finite difference cannot see the derivative: not checkable, never a mismatch
        tiny = torch.finfo(self.num_dtype).tiny ** 0.5
        flat = num.flat[j_idx, r_idx]
        underflow = flat & (num.values[0, j_idx, r_idx] == 0) & (a_g.abs() < tiny)
        zero_f = underflow
        # f identical at every point while autograd's value would move it over the stencil by less than one
        # rounding at unit scale (|a|·reach < eps·max(|f|, 1)): f computed through intermediates of that
        # size (log(1 + e^g) with e^g ~ 1e-12 rounds 1 + e^g; cos(x^3) - 1 at x = 1e-12 is exactly 0) shows
        # no change at all: not checkable either. A derivative of a constant that a finite difference could
        # see (at float64's step, anything above ~3e-11·max(|f|, 1)) is still compared
        reach = num.step[j_idx] * max(abs(m) for m in self.stencil.multipliers)
        quantum = tolerances.eps(self.stencil.dtype) * num.values[0, j_idx, r_idx].abs().clamp_min(1.0)
        underflow = underflow | (flat & (a_g.abs() * reach < quantum))
        if bool(underflow.any()):
            verdict.failed = verdict.failed & ~underflow
            verdict.unchecked = verdict.unchecked | underflow
            if verdict.cause is not None:
                code = torch.where(zero_f, 3, 4).to(torch.int8)
                verdict.cause = torch.where(underflow & (verdict.cause == 0), code, verdict.cause)
            verdict.ratio = torch.where(underflow, torch.zeros_like(verdict.ratio), verdict.ratio)
        self._settle_kinks(i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
        if bool(verdict.unchecked.any()):
            self._one_sided(i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
        if bool((verdict.failed | verdict.kink).any()):
            self._settle_ties(i, k, a, num, j_idx, r_idx, allow, verdict, kap)
        if bool(verdict.failed.any()):
            self._resample(i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
        if bool(verdict.failed.any()):
            self._refine(i, k, a_g, j_idx, r_idx, est, allow, verdict, kap)
        if bool(verdict.failed.any()) and self._approximate_tier():
            jacobian = self.full_state["rows"][k] == "jacobian"
            scale = _approximate.entry_scale(a, verdict.numerical, j_idx, r_idx, jacobian)
            rho = _approximate.accuracy(self.inputs[i].dtype)
            _approximate.apply(verdict, a_g, scale, rho, self.options["strict"])
        return verdict, j_idx, r_idx

    def _one_sided(self, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
        """Entries no estimate of the central stencil could evaluate (f not finite on one side within it):
        one-sided stencils inside the domain at steps h, h/8, ... (``_one_sided``), on at most
        ``REFINE_COORDS`` coordinates. Those still not evaluable are counted in ``not_evaluable``."""
        stuck = verdict.unchecked & ~(
            torch.isfinite(est.central_err) | torch.isfinite(est.right_err) | torch.isfinite(est.left_err)
        )
        idx = stuck.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        center = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])[0][r_idx[idx]]
        x_j = coords(self.evaluator.base_args[i]).cpu()[j_idx[idx]].to(torch.float64)
        cols = torch.unique(j_idx[idx])[:REFINE_COORDS]
        tried = idx[torch.isfinite(center) & torch.isfinite(x_j) & torch.isin(j_idx[idx], cols)]
        self.not_evaluable[i] = self.not_evaluable.get(i, 0) + idx.numel() - tried.numel()
        if tried.numel() == 0:
            return

        def evaluate(entries: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            js, rs = j_idx[tried[entries]], r_idx[tried[entries]]
            ucols, inverse = torch.unique(js, return_inverse=True)
            first = torch.zeros(ucols.numel(), dtype=torch.long).scatter_(0, inverse, torch.arange(js.numel()))
            values = self._stencil_along(i, k, ucols, self._coordinates(i, ucols), offsets[:, first])
            return values[:, inverse, rs]

        center = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])[0][r_idx[tried]]
        res = one_sided(a[tried], allow[tried], kap, center, self._step(i)[j_idx[tried]], evaluate, self.stencil.dtype)
        self.not_evaluable[i] += int((~res.decided).sum())
        done = tried[res.decided]
        if done.numel() == 0:
            return
        verdict.unchecked[done] = False
        verdict.failed[done] = res.failed[res.decided]
        numerical = res.numerical[res.decided]
        _relist(verdict, done, numerical, res.allowed[res.decided], (a[done] - numerical).abs())
        self.report.notes.append(
            f"{done.numel()} derivative(s) of output {k} w.r.t. {self.names[i]} were compared with one-sided "
            "differences at smaller steps: fn is not finite on one side of the point within the stencil"
        )

    def _approximate_tier(self) -> bool:
        """Whether failed derivatives may pass as approximate (``_approximate``): not under given tolerances."""
        return self.options["atol"] is None and self.options["rtol"] is None

    def _resample(self, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
        """A second sample of f's rounding for failed entries within ``RESAMPLE_RATIO`` of passing.

        The error estimate's round-off part rests on one noise sample per derivative (the stencil's
        residual). A function computed through intermediates far larger than itself (``cos`` of an argument
        near 50 formed by a subtraction) rounds each evaluation by much more than ``eps·|f|``, and one sample
        can come out a tenth of that. The same stencil, at x moved by ``RESAMPLE_SHIFT`` of the step (a
        fresh rounding, the same truncation), gives a second estimate; the entry passes when autograd is
        within the tolerance of their mean with their spread added to the error. Only entries already
        within ``RESAMPLE_RATIO`` tolerances are looked at, so what this can forgive stays below
        ``RESAMPLE_RATIO`` times the first tolerance (~1e-8 relative in float64); 5 points per coordinate,
        at most ``REFINE_COORDS`` coordinates.
        """
        near = verdict.failed & ~verdict.sharp_kink & (verdict.ratio <= RESAMPLE_RATIO)
        idx = near.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        cols = torch.unique(j_idx[idx])[:REFINE_COORDS]
        idx = idx[torch.isin(j_idx[idx], cols)]
        step = self._step(i)[cols]
        shifted = self._coordinates(i, cols) + RESAMPLE_SHIFT * step
        mults = self._multipliers([0.0] + list(self.stencil.multipliers))  # the stencil's order: 0, +1, -1, ...
        values = self._stencil_along(i, k, cols, shifted, mults * step)  # (points + 1, b, r)
        again = self._entry_estimates(k, values, cols, step, j_idx[idx], r_idx[idx], shifted, unit_floor=True)
        first, second = est.central[idx], again.central
        mean = (first + second) / 2
        tol = kap * (torch.maximum(est.central_err[idx], again.central_err) + (first - second).abs()) + allow[idx]
        diff = (a[idx] - mean).abs()
        ok = torch.isfinite(mean) & torch.isfinite(tol) & torch.isfinite(a[idx]) & (diff <= tol)
        if not bool(ok.any()):
            return
        verdict.failed[idx[ok]] = False
        _relist(verdict, idx[ok], mean[ok], tol[ok], diff[ok])
        self.report.notes.append(
            f"{int(ok.sum())} derivative(s) of output {k} w.r.t. {self.names[i]} passed on a second sample of fn's "
            "rounding (the same stencil at x moved by 2^-10 of the step): one sample had understated it"
        )

    def _settle_kinks(self, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
        """Entries that passed on a central value spoiled by a kink inside the stencil (``_kinks``), judged
        again at smaller steps on the kink's clean side; at most ``REFINE_COORDS`` coordinates."""
        idx = _kinks.suspects(a, est, allow, kap, verdict).nonzero().squeeze(1)
        idx = idx[torch.isin(j_idx[idx], torch.unique(j_idx[idx])[:REFINE_COORDS])]
        if idx.numel() == 0:
            return
        mults = self._multipliers(self.stencil.multipliers)
        center = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])[0]

        def estimates_at(level: int, open_: torch.Tensor) -> Estimates:
            sel = idx[open_]
            cols = torch.unique(j_idx[sel])
            step = self._step(i)[cols] / _kinks.STEP_FACTOR**level
            at = self._coordinates(i, cols)
            proj = self._stencil_along(i, k, cols, at, mults * step)
            values = torch.cat([center.view(1, 1, -1).expand(1, cols.numel(), -1), proj])
            return self._entry_estimates(k, values, cols, step, j_idx[sel], r_idx[sel], at, unit_floor=False)

        decided, wrong, level = _kinks.apply(verdict, idx, _kinks.settle(a[idx], allow[idx], kap, estimates_at), a[idx])
        if decided:
            self.report.notes.append(
                _kinks.note(f"derivative(s) of output {k} w.r.t. {self.names[i]}", decided, wrong, level)
            )

    def _settle_ties(self, i, k, a, num: "_FullNumerics", j_idx, r_idx, allow, verdict: Verdict, kap: float) -> None:
        """Failed entries at a kink at the point or at a tie (``_ties``): one-sided slopes measured again along
        their coordinate and along their tie group; at most ``REFINE_COORDS`` coordinates."""
        failed = verdict.failed & ~verdict.unchecked
        cols = torch.unique(j_idx[failed])[:REFINE_COORDS]
        x, step = self.evaluator.base_args[i], self._step(i).to(torch.float64)
        reach = max(abs(m) for m in self.stencil.multipliers)
        # a group is judged where a member failed or passed only as a kink (each member alone between its
        # one-sided slopes can still add up to too much: amax's tie with every member given 1)
        touched = torch.unique(j_idx[(failed | verdict.kink) & ~verdict.unchecked])
        groups = [
            g for g in _ties.tie_groups(x, step, reach)
            if g.numel() <= _ties.MAX_MEMBERS and bool(torch.isin(g, touched).any())
        ][: _ties.MAX_GROUPS]
        if cols.numel() == 0 and not groups:
            return
        singles = torch.unique(torch.cat([cols] + groups))
        center, fmag, _ = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])
        mults = self._multipliers(self.stencil.multipliers)
        # along one coordinate: the stencil at h is known, the one at h/8 is _refine's first level
        offsets = mults * (step[singles] / _ties.STEP_FACTOR)
        fine = self._stencil_along(i, k, singles, self._coordinates(i, singles), offsets)
        first = center.view(1, 1, -1)
        one_fine = torch.cat([first.expand(1, singles.numel(), -1), fine])
        s = _ties.sides(num.values[:, singles], one_fine, step[singles], fmag, self.stencil)
        if groups:
            masks = torch.zeros(len(groups), coords(x).numel(), dtype=torch.float64)
            for g, members in enumerate(groups):
                masks[g, members] = 1.0
            g_step = torch.stack([step[m].max() for m in groups])
            both = self._along(i, k, masks, torch.cat([mults * g_step, mults * (g_step / _ties.STEP_FACTOR)]))
            p = mults.shape[0]
            lead = first.expand(1, len(groups), -1)
            sg = _ties.sides(torch.cat([lead, both[:p]]), torch.cat([lead, both[p:]]), g_step, fmag, self.stencil)
            fields = ("right", "right_err", "left", "left_err")
            s = _ties.Sides(*(torch.cat([getattr(s, f), getattr(sg, f)]) for f in fields))
        d = _ties.decide(a, j_idx, r_idx, verdict, allow, kap, cols, singles, groups, s)
        _ties.apply(verdict, d)
        for members in d.passed_groups:
            note = _ties.tie_note(self.inputs[i], self.names[i], members)
            if note not in self.report.notes:  # once, whichever outputs see the tie
                self.report.notes.append(note)
        for members in d.failed_groups:
            self._tie_failures.append((i, members.tolist(), _ties.tie_text(self.inputs[i], self.names[i], members)))
        if bool(d.rescued.any()):
            what = f"derivative(s) of output {k} w.r.t. {self.names[i]}"
            self.report.notes.append(_ties.kink_note(what, int(d.rescued.sum())))

    def _along(self, i: int, k: int, masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``f`` at ``x + offsets[m, d] * masks[d]`` (input ``i``) in output ``k``'s rows: ``(points, d, r)``."""
        x = self.evaluator.base_args[i]
        base = coords(x).cpu()
        points = (base.to(torch.float64) + offsets.unsqueeze(2) * masks.unsqueeze(0)).to(base.dtype)
        outs = self.evaluator.batched(i, points.view(-1, base.numel()), x.shape, x.is_complex())
        kind = self.full_state["rows"][k]
        return self._project(k, kind, outs[self.out_idx.index(k)]).reshape(offsets.shape[0], masks.shape[0], -1)

    def _coordinates(self, i: int, cols: torch.Tensor) -> torch.Tensor:
        """The values of coordinates ``cols`` of input ``i`` at the base point, float64 on the host."""
        return coords(self.evaluator.base_args[i]).cpu()[cols].to(torch.float64)

    def _stencil_along(self, i: int, k: int, cols: torch.Tensor, at: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``f`` with coordinate ``cols[c]`` of input ``i`` at ``at[c] + offsets[m, c]`` (the others at x), in
        output ``k``'s rows: ``(points, b, r)``. The points are built on the host; ``evaluator.batched`` moves
        them to the input's device."""
        x = self.evaluator.base_args[i]
        base = coords(x).cpu()
        b = cols.numel()
        points = base.expand(offsets.shape[0], b, base.numel()).clone()
        points[:, torch.arange(b), cols] = (at + offsets).to(points.dtype)
        # columns already evaluated at the same points (the tie check's h/8 is _refine's first level)
        keys = [(id(x), i, int(cols[c]), points[:, c, cols[c]].numpy().tobytes()) for c in range(b)]
        todo = [c for c in range(b) if keys[c] not in self._along_cache]
        if todo:
            fresh = self.evaluator.batched(i, points[:, todo].reshape(-1, base.numel()), x.shape, x.is_complex())
            for n, c in enumerate(todo):
                self._along_cache[keys[c]] = [o.reshape(offsets.shape[0], len(todo), -1)[:, n] for o in fresh]
        cached = [self._along_cache[key] for key in keys]
        outs = [torch.stack([per[o] for per in cached], 1).flatten(0, 1) for o in range(len(cached[0]))]
        kind = self.full_state["rows"][k]
        return self._project(k, kind, outs[self.out_idx.index(k)]).reshape(offsets.shape[0], b, -1)

    def _entry_estimates(self, k, values, cols, step, j_sel, r_sel, at, unit_floor) -> Estimates:
        """Estimates for the entries ``(j_sel, r_sel)`` from stencil ``values`` ``(points + 1, b, r)`` along
        ``cols`` (steps ``step``, coordinates' values ``at``), with their noise."""
        where = torch.searchsorted(cols, j_sel)  # each entry's column in this batch
        vals = values[:, where, r_sel]
        fmag = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])[1]
        sig = noise_sigma(vals, fmag[r_sel], self.stencil)
        return estimate_with_sigma(vals, step[where], sig, self.stencil, x_abs=at[where].abs(), unit_floor=unit_floor)

    def _refine(self, i, k, a, j_idx, r_idx, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
        """A second opinion on failed entries from the same stencil at steps h/8, h/64, ...

        A smooth function that changes on a scale below h (1/x at x = 1e-10, tanh(1e7·x) at 0) has a
        Richardson estimate at h that is far off and an error estimate that cannot see it. An entry passes
        here only when, at some smaller step, (1) autograd agrees with the estimate there within its own
        tolerance, (2) that estimate has converged (``REFINE_PRECISION``) and (3) it differs from the one at
        h by more than both error estimates: the estimate at h was wrong. A wrong gradient keeps failing:
        where the estimate at h had converged, the next step's estimate reproduces it, and refining that
        entry stops there (one level of evaluations, ``4 x min(coordinates, REFINE_COORDS)`` points).
        """
        failed = verdict.failed.nonzero().squeeze(1)
        coords_failed = torch.unique(j_idx[failed])[:REFINE_COORDS]
        open_ = failed[torch.isin(j_idx[failed], coords_failed)]  # entries still being refined
        mults = self._multipliers(self.stencil.multipliers)  # (points, 1)
        center = self._f0_rows(self.out_idx.index(k), k, self.full_state["rows"][k])[0]  # (r,)
        resolved, level_used, reestimated, level_worse = 0, 0, set(), 0
        best_tol = torch.full_like(verdict.allowed, float("inf"))
        prev_c, prev_e = est.central[open_], est.central_err[open_]  # each open entry's last estimate
        for level in range(1, REFINE_LEVELS + 1):
            if open_.numel() == 0:
                break
            cols = torch.unique(j_idx[open_])
            step = self._step(i)[cols] / REFINE_FACTOR**level
            at = self._coordinates(i, cols)
            proj = self._stencil_along(i, k, cols, at, mults * step)
            values = torch.cat([center.view(1, 1, -1).expand(1, cols.numel(), -1), proj])  # (points + 1, b, r)
            fine = self._entry_estimates(k, values, cols, step, j_idx[open_], r_idx[open_], at, unit_floor=False)
            a_o, allow_o = a[open_], allow[open_]
            tol = kap * fine.central_err + allow_o
            usable = torch.isfinite(fine.central) & torch.isfinite(fine.central_err)
            # converged: the error estimate a small fraction of the value
            precise = fine.central_err <= REFINE_PRECISION * fine.central.abs() + allow_o
            # the estimate at h was wrong: this one differs from it by more than both error estimates
            moved = (fine.central - est.central[open_]).abs() > kap * (est.central_err[open_] + fine.central_err)
            agrees = usable & precise & moved & torch.isfinite(a_o) & ((a_o - fine.central).abs() <= tol)
            diff = (a_o - fine.central).abs()
            if bool(agrees.any()):
                verdict.failed[open_[agrees]] = False
                _relist(verdict, open_[agrees], fine.central[agrees], tol[agrees], diff[agrees])
                resolved += int(agrees.sum())
                level_used = level
            # the estimate at h was off and a converged one disagrees with autograd too: the listing shows
            # the tightest such estimate (the entry stays failed)
            better = usable & precise & moved & ~agrees & (tol < best_tol[open_])
            if bool(better.any()):
                worse = open_[better]
                best_tol[worse] = tol[better]
                _relist(verdict, worse, fine.central[better], tol[better], diff[better])
                reestimated.update(worse.tolist())
                level_worse = level
            # a converged estimate that the next step reproduces settles an entry (a wrong gradient stops
            # here, usually after one level); the rest goes on to the next smaller step
            settled = (prev_e <= REFINE_PRECISION * prev_c.abs()) & (
                (fine.central - prev_c).abs() <= kap * (prev_e + fine.central_err)
            )
            keep = usable & ~agrees & ~settled
            open_, prev_c, prev_e = open_[keep], fine.central[keep], fine.central_err[keep]
        reestimated = sum(1 for e in reestimated if verdict.failed[e])  # not resolved at a later level
        if reestimated:
            self.report.notes.append(
                f"{reestimated} failing derivative(s) of output {k} w.r.t. {self.names[i]} are listed with the "
                f"estimate at a smaller step (h/{REFINE_FACTOR**level_worse:g}): the estimate at h was off because "
                "fn changes on a scale below h there"
            )
        if resolved:
            self._refined_resolved = True
            self.report.notes.append(
                f"{resolved} derivative(s) of output {k} w.r.t. {self.names[i]} were resolved with a smaller step "
                f"(down to h/{REFINE_FACTOR**level_used:g}): the estimate at h was off because fn changes on a "
                "scale below h there"
            )

    def _rows(self, k: int, kind: str) -> int:
        return self.f0[self.out_idx.index(k)].numel() if kind == "jacobian" else 1

    def _project(self, k: int, kind: str, values: torch.Tensor, absolute: bool = False) -> torch.Tensor:
        """``(B, n_out_coords)`` -> ``(B, r)``."""
        if kind == "jacobian":
            return values
        v = self.v[k].abs() if absolute else self.v[k]
        return (values @ v).unsqueeze(1)

    def _row_vectors(self, k: int, kind: str) -> torch.Tensor:
        if kind == "jacobian":
            return torch.eye(self.f0[self.out_idx.index(k)].numel(), dtype=torch.float64)
        return self.v[k].unsqueeze(0)

    def _analytic_full(
        self, rows: dict[int, str], leaves: dict[int, torch.Tensor], outs, args: Sequence | None = None,
        zero_rows: dict | None = None,
    ) -> tuple[dict, dict, str]:
        """Autograd's rows: per (input, output) ``(n_i, r_k)`` float64, and whether a gradient flowed.

        ``args``: the call that built ``outs`` (its tensors are ``leaves``); with many rows the rows come
        from ``vmap`` over ``torch.func.vjp`` of the same call where it runs and reproduces ``outs``.
        ``zero_rows``: where every output's rows are batched anyway (two or more), one more row of zeros
        goes with them, and this dict receives per (input, output) the gradient of that zero
        ``grad_output`` (the structural check's zero_grad_output, without a backward of its own)."""
        order = list(self.wrt)
        leaf_list = [leaves[i] for i in order]
        vectors = {k: self._row_vectors(k, rows[k]) for k in self.out_idx}
        fold = zero_rows is not None and all(v.shape[0] >= 2 for v in vectors.values())
        if fold:
            vectors = {k: torch.cat([v, v.new_zeros(1, v.shape[1])]) for k, v in vectors.items()}
        n_rows = sum(v.shape[0] for v in vectors.values())
        results, flowed, path = self._analytic_rows(order, leaf_list, vectors, n_rows, outs, args)
        if fold:
            for key, g in results.items():
                zero_rows[key] = g[:, -1]
                results[key] = g[:, :-1]
        return results, flowed, path

    def _analytic_rows(self, order, leaf_list, vectors, n_rows, outs, args) -> tuple[dict, dict, str]:
        results, flowed = {}, {}
        path = "single"
        if (
            args is not None
            and not self.mutates_inputs
            and FUNCTORCH_ROWS <= n_rows
            and n_rows * sum(leaf.numel() for leaf in leaf_list) <= FUNCTORCH_ELEMENTS
        ):
            batched = vjp_rows_functorch(self.fn, args, order, outs, vectors, self.rng_seed)
            if batched is not None:
                for k, (per_leaf, flow) in batched.items():
                    for i, g, f in zip(order, per_leaf, flow):
                        results[(i, k)] = g.T
                        flowed[(i, k)] = f
                return results, flowed, "batched (vmap over torch.func.vjp)"
        for k in self.out_idx:
            try:
                per_leaf, flow, p = vjp_rows(outs[k], leaf_list, vectors[k])
            except GradientMetaError as exc:
                raise _Failure(f"autograd returned a malformed gradient for output {k}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a failing backward is reported
                raise _Failure(f"backward of output {k} raised {describe_exception(exc)}", exc) from None
            path = p if p not in ("single", "none") else path
            for i, g, f in zip(order, per_leaf, flow):
                results[(i, k)] = g.T  # (n_i, r): a view, no copy
                flowed[(i, k)] = f
        return results, flowed, path

    def _reference_leaves(self, perturb: int | None = None):
        """float64 copies of the inputs with a fresh graph, for the autograd round-off allowance; ``perturb``:
        input moved by ``CAP_EPS`` roundings of its own dtype at unit scale (``_conditioning``)."""
        args = [_to_double(t) for t in self.inputs]
        if perturb is not None:
            # CAP_EPS roundings: intermediates up to that many times the input's unit scale (((10 + 1/(x + 3))²
            # - 71)² forms 1280 from x = 0, and rounds it by eps·1280, 76 roundings of x at unit scale)
            e = tolerances.CAP_EPS * tolerances.eps(self.inputs[perturb].dtype)
            args[perturb] = _nudged(args[perturb], e)
        for i in self.grad_positions:
            args[i] = args[i].detach().clone().requires_grad_(True)
        leaves = {i: args[i] for i in self.wrt}
        seed_global_rng(self.rng_seed)
        with torch.enable_grad():
            outs = as_outputs(self.fn(*args))
        self.extra_evaluations += 1
        return args, leaves, outs

    def backward_check(self, mode: str) -> None:
        self.not_evaluable: dict[int, int] = {}  # per input: derivatives no stencil could evaluate (_one_sided)
        if mode == "full":
            self._backward_full()
        else:
            self._backward_directional()

    def _full_rows(self) -> dict[int, str]:
        rows = {}
        for k in self.out_idx:
            n_k = self.f0[self.out_idx.index(k)].numel()
            rows[k] = "jacobian" if self.n_in * n_k <= JACOBIAN_ENTRIES else "projected"
        return rows

    def _backward_full(self, *, inputs: Sequence[int] | None = None, check_name: str = "backward") -> None:
        rows = self._full_rows() if inputs is None else {k: "projected" for k in self.out_idx}
        inputs = list(self.wrt) if inputs is None else list(inputs)
        zero_rows = {} if check_name == "backward" and self.mode == "full" else None
        analytic, flowed, path = self._analytic_full(rows, self.leaves, self.outs, self.analytic_args, zero_rows)
        if zero_rows:
            self.zero_grad_rows = zero_rows  # structural_checks reads the zero grad_output's gradient here
        reference = None
        if self.reference:
            try:
                ref_args, ref_leaves, ref_outs = self._reference_leaves()
                reference, _, _ = self._analytic_full(rows, ref_leaves, ref_outs, ref_args)
            except _Failure:
                reference = None
        prepared, joint = {}, None
        if self._can_screen():
            joint = self._joint_screen_prepare(inputs, rows, analytic, reference)
            if joint is not None and joint.complete:
                prepared = joint.screens()
            else:
                prepared = self._screens_apart(inputs, rows, analytic, reference, joint)
                joint = None
        extra = self._global_scales(rows, reference if reference is not None else analytic, inputs, prepared)
        self.full_state = {
            "rows": rows, "estimates": {}, "reference": reference, "extra": extra, "analytic": analytic,
            "input_passed": {}, "prepared": prepared, "joint": joint,
        }
        total = sum(
            n_coords(self.inputs[i]) * self._rows(k, rows[k]) for i in inputs for k in self.out_idx
        )
        kap = tolerances.kappa(total)
        failed_any = False
        screened = []
        joint_worst = self._joint_screen_test(joint, rows, extra, kap) if joint is not None else None
        if joint is not None and joint_worst is None:  # some entry needs a closer look: input by input
            prepared = self.full_state["prepared"] = self._screens_apart(inputs, rows, analytic, reference, joint)
        for i in inputs:
            known = None
            if i in prepared:
                known = prepared[i].known
                if joint_worst is not None:
                    worst = joint_worst[i]
                else:
                    worst = self._screen_test(i, prepared[i], rows, analytic, reference, extra, kap)
                if worst is not None:
                    screened.append(i)
                    self.full_state["input_passed"][i] = True
                    self.full_state["estimates"][i] = None  # computed on demand (forward AD per entry)
                    for k in self.out_idx:
                        self._record_screened(check_name, i, k, rows[k], worst[k], flowed.get((i, k), True))
                    continue
            num = self._full_numerics(i, rows, known)
            self.full_state["estimates"][i] = num
            failed_i = False
            for k in self.out_idx:
                a = analytic[(i, k)]
                ref = reference[(i, k)] if reference is not None else None
                verdict, j_idx, r_idx = self._judge(i, k, a, ref, num[k], extra[(i, k)], kap)
                failed_i |= self._record(
                    check_name, i, k, rows[k], a, verdict, flowed.get((i, k), True), j_idx, r_idx
                )
            self.full_state["input_passed"][i] = not failed_i
            failed_any |= failed_i
        self.full_state["screened"] = screened
        kinds = sorted(set(rows.values()))
        detail = f"full, {'/'.join(kinds)}, numerical {self.evaluator.path}, autograd {path}"
        if screened:
            names = ", ".join(self.names[i] for i in screened)
            detail += f"; settled at ±h (every entry within the plain central difference's tolerance): {names}"
        self.report.checks.append(CheckResult(check_name, "failed" if failed_any else "passed", detail))

    # The screen: the plain central difference D(h) from the first two stencil points. The full estimate is
    # the Richardson value D4 = (4 D(h) - D(2h)) / 3 with error |D4 - D(h)| + 1.5 sigma/h (+ ...), sigma at
    # least the round-off model. So |a - D(h)| <= kappa sigma_model / h + allowance implies
    # |a - D4| <= kappa (|D4 - D(h)| + 1.5 sigma / h) + allowance: the full comparison would pass too, and
    # the points at 2h are not needed. Anything else (a failure, a possible kink, an entry f does not move
    # while autograd is nonzero, a non-finite value) goes through the full stencil.
    KINK_SUSPECT = 1e-2  # one-sided slopes at h differing by this fraction of D(h): maybe a kink

    def _can_screen(self) -> bool:
        return self.stencil.levels == 2 and self.options["rtol"] is None

    def _screens_apart(self, inputs, rows, analytic, reference, joint: "_JointScreen | None") -> dict:
        """Input by input screens, reusing the stencil values a shared screen already computed."""
        return {
            i: self._screen_prepare(i, rows, analytic, reference, joint.known[i] if joint is not None else None)
            for i in inputs
        }

    def _screen_prepare(self, i, rows, analytic, reference, known: dict | None = None) -> "_Screen":
        """``f`` at ±h for every coordinate of input ``i`` and the entries that can differ from zero."""
        if known is None:
            known = self._stencil_values(i, rows, self.stencil.multipliers[:2])
        screen = _Screen(known)
        for pos, k in enumerate(self.out_idx):
            fp, fm = known[k][0], known[k][1]  # (n_i, r)
            f0 = self._project(k, rows[k], self.f0[pos].unsqueeze(0))  # (1, r)
            a = analytic[(i, k)]
            moved = (fp != f0).logical_or_(fm != f0)
            j_idx, r_idx = moved.nonzero(as_tuple=True)
            a_c = a[j_idx, r_idx]
            # autograd nonzero only where f moves (else: the full stencil decides)
            complete = int(torch.count_nonzero(a)) == int(torch.count_nonzero(a_c))
            screen.candidates[k] = (j_idx, r_idx, a_c)
            screen.complete &= complete
            if complete and reference is None:  # every nonzero of the Jacobian is among the candidates
                finite = a_c.nan_to_num(0.0, posinf=0.0, neginf=0.0)
                screen.sumsq[k] = float(finite.square().sum())
                rows_sq = torch.zeros(a.shape[1], dtype=torch.float64).index_add_(0, r_idx, finite.square())
                screen.row_rms[k] = (rows_sq / max(a.shape[0], 1)).sqrt()
        return screen

    def _screen_test(self, i, screen, rows, analytic, reference, extra, kap) -> dict | None:
        """The worst ratio per output when every entry of input ``i`` passes the screen, else ``None``."""
        if not screen.complete:
            return None
        step = self._step(i)
        worst = {}
        policy = tolerances.AnalyticAllowance(self.inputs[i].dtype, reference is not None)
        for pos, k in enumerate(self.out_idx):
            j_idx, r_idx, a_c = screen.candidates[k]
            if j_idx.numel() == 0:
                worst[k] = 0.0
                continue
            fp, fm = screen.known[k][0], screen.known[k][1]
            fpc, fmc = fp[j_idx, r_idx], fm[j_idx, r_idx]
            ref = reference[(i, k)] if reference is not None else None
            if ref is None and k in screen.row_rms:
                base_c, row_rms = a_c, screen.row_rms[k]
            else:
                base = ref if ref is not None else analytic[(i, k)]
                base_c = base[j_idx, r_idx]
                row_rms = torch.linalg.vector_norm(base.nan_to_num(0.0, posinf=0.0, neginf=0.0), dim=0)
                row_rms = row_rms / math.sqrt(max(base.shape[0], 1))
            scale = base_c.abs() + row_rms[r_idx] + extra[(i, k)]
            measured = (a_c - ref[j_idx, r_idx]).abs() if ref is not None else None
            allow = policy.allowance(scale, measured, floor_scale=self._floor_scale(scale, i, k, measured))
            ratio = self._screen_ratios(pos, k, rows[k], fpc, fmc, step[j_idx], r_idx, a_c, allow, kap)
            if ratio is None:
                return None
            worst[k] = float(ratio.max())
        return worst

    def _screen_ratios(self, pos, k, kind, fpc, fmc, h, r_idx, a_c, allow, kap):
        """The screen's test of candidate entries (f at ±h, steps, rows, autograd's values, autograd's
        round-off allowance): ``|a - D(h)| / tolerance`` per entry when every one passes and none looks
        like a kink, else ``None``. Torch tensors or numpy arrays (the shared screen's), answered in kind."""
        e = tolerances.eps(self.stencil.dtype)
        f0, fmag, f_scale = self._f0_rows(pos, k, kind)
        xp = torch
        if isinstance(fpc, np.ndarray):
            xp, f0, fmag, f_scale = np, f0.numpy(), fmag.numpy(), float(f_scale)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = (fpc - fmc) / (2 * h)
            sigma = (tolerances.NOISE_MODEL_EPS * e) * (
                xp.maximum(xp.maximum(fmag[r_idx], abs(fpc)), abs(fmc)) + f_scale
            )
            if self.options["nondet_tol"]:
                allow = allow + self.options["nondet_tol"]
            if self.options["atol"] is not None:
                allow = xp.full_like(d, float(self.options["atol"]))
            tol = kap * sigma / h + allow
            diff = abs(a_c - d)
            kinkish = abs(fpc - 2 * f0[r_idx] + fmc) / h > self.KINK_SUSPECT * abs(d) + 4 * kap * sigma / h
            ok = (diff <= tol) & ~kinkish  # NaN anywhere compares False: the full treatment
            return diff / tol if bool(ok.all()) else None

    def _f0_rows(self, pos: int, k: int, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``f(x)`` in output ``k``'s rows, ``|f(x)|`` projected on ``|v|`` (the noise model's size) and the
        rms of that (cached per output and kind of rows)."""
        key = ("f0 rows", k, kind)
        if key not in self._rms_cache:
            f0 = self._project(k, kind, self.f0[pos].unsqueeze(0))[0]
            fmag = self._project(k, kind, self.f0[pos].abs().unsqueeze(0), absolute=True)[0]  # (r,)
            self._rms_cache[key] = (f0, fmag, _rms(fmag))
        return self._rms_cache[key]

    def _joint_screen_prepare(self, inputs, rows, analytic, reference) -> "_JointScreen | None":
        """The ±h screen of several small inputs of one dtype at once (no float64 reference run): ``f`` at ±h
        (``_screen_stencil``), then the candidates, sums of squares and row sizes from the inputs'
        stacked ``(sum n_i, r)`` matrices. ``None`` where the inputs do not qualify; ``complete`` is false
        where autograd is nonzero somewhere f did not move (the input-by-input path decides then)."""
        if len(inputs) < 2 or reference is not None:
            return None
        dtype = self.inputs[inputs[0]].dtype
        if any(self.inputs[i].dtype != dtype for i in inputs):
            return None
        sizes = [n_coords(self.inputs[i]) for i in inputs]
        if sum(sizes) * sum(self._rows(k, rows[k]) for k in self.out_idx) > JOINT_SCREEN_ENTRIES:
            return None
        self._prepare_steps(inputs)
        step = torch.cat([self._step(i) for i in inputs]).numpy()
        known = self._screen_stencil(inputs, rows)
        joint = _JointScreen(known, list(inputs), dtype)
        seg = np.repeat(np.arange(len(sizes)), sizes)  # input position per row
        n_rows = np.maximum(np.array(sizes, dtype=np.float64), 1.0)[:, None]
        # numpy from here on: these matrices are small (JOINT_SCREEN_ENTRIES), where a numpy call costs a
        # fraction of a torch call (a conv1d's or an MLP's check: about a fifth of its time was spent here)
        for pos, k in enumerate(self.out_idx):
            fp, fm = torch.cat([known[i][k] for i in inputs], dim=1).numpy()  # f at +h, -h: (sum n_i, r)
            a = torch.cat([analytic[(i, k)] for i in inputs]).numpy()
            f0 = self._f0_rows(pos, k, rows[k])[0].numpy()  # (r,)
            j_idx, r_idx = np.nonzero((fp != f0) | (fm != f0))
            a_c = a[j_idx, r_idx]
            if np.count_nonzero(a) != np.count_nonzero(a_c):
                joint.complete = False
                return joint
            s = seg[j_idx]
            sq = np.square(np.where(np.isfinite(a_c), a_c, 0.0))
            r = a.shape[1]
            sums = np.bincount(s * r + r_idx, weights=sq, minlength=len(inputs) * r).reshape(len(inputs), r)
            joint.sumsq[k] = sums.sum(axis=1).tolist()
            joint.row_rms[k] = np.sqrt(sums / n_rows)  # (inputs, r)
            joint.parts[k] = (fp[j_idx, r_idx], fm[j_idx, r_idx], step[j_idx], a_c, s, r_idx, j_idx)
        return joint

    def _joint_screen_test(self, joint: "_JointScreen", rows, extra, kap) -> dict | None:
        """``_screen_test`` for every input of ``joint`` in one pass: per input the worst ratio per output
        when every entry of every input passes, else ``None``."""
        policy = tolerances.AnalyticAllowance(joint.dtype, False)
        n = len(joint.inputs)
        worst: dict[int, dict] = {i: {} for i in joint.inputs}
        for pos, k in enumerate(self.out_idx):
            fpc, fmc, h, a_c, s, r_idx, _ = joint.parts[k]  # numpy (_joint_screen_prepare)
            if a_c.size == 0:
                for i in joint.inputs:
                    worst[i][k] = 0.0
                continue
            extra_c = np.array([extra[(i, k)] for i in joint.inputs])[s]
            scale = np.abs(a_c) + joint.row_rms[k][s, r_idx] + extra_c
            ratio = self._screen_ratios(pos, k, rows[k], fpc, fmc, h, r_idx, a_c, policy.allowance(scale, None), kap)
            if ratio is None:
                return None
            per_input = np.zeros(n)
            np.maximum.at(per_input, s, ratio)
            for i, value in zip(joint.inputs, per_input.tolist()):
                worst[i][k] = value
        return worst

    def _record_screened(self, check: str, i: int, k: int, kind: str, worst: float, flowed: bool) -> None:
        group = GroupSummary(check, i, k, kind)
        group.compared = n_coords(self.inputs[i]) * self._rows(k, kind)
        group.worst_ratio = worst
        self.report.groups.append(group)
        if not flowed and check == "backward":
            self.report.notes.append(
                f"no gradient flows to input {i} ({self.names[i]}) from output {k}: autograd treats it as not used "
                "(detached, computed under no_grad, or requires_grad_(False)); compared as zero"
            )

    def _natural_scale(self, i: int, k: int, kind: str) -> float:
        """A derivative's natural size, |out| / max(|x|, 1): round-off of terms that cancel to an exact
        zero (a shift-invariant input, say) is of this order even where the Jacobian is zero."""
        pos = self.out_idx.index(k)
        if ("x", i) not in self._rms_cache:  # numpy: full mode's inputs are small
            self._rms_cache[("x", i)] = _rms(_nonfinite.finite_or_zero(coords64(self.inputs[i])).numpy())
        if ("out", k) not in self._rms_cache:
            self._rms_cache[("out", k)] = float(_rms(self.f0[pos]))
        out_rms, x_rms = self._rms_cache[("out", k)], self._rms_cache[("x", i)]
        v_norm = 1.0 if kind == "jacobian" else float(self.v[k].norm())
        return v_norm * out_rms / max(x_rms, 1.0)

    def _global_scales(self, rows: dict, jac: dict, inputs: Sequence[int], prepared: dict | None = None) -> dict:
        """Per (input, output): the rms of every Jacobian entry of that output (all inputs) plus the
        natural scale; added to each entry's own scale so exact zeros get a round-off allowance."""
        extra = {}
        prepared = prepared or {}

        def sumsq(i, k):
            if i in prepared and k in prepared[i].sumsq:
                return prepared[i].sumsq[k]
            return _sum_squares(jac[(i, k)])

        for k in self.out_idx:
            total = sum(sumsq(i, k) for i in self.wrt if (i, k) in jac)
            count = sum(jac[(i, k)].numel() for i in self.wrt if (i, k) in jac)
            rms = (total / max(count, 1)) ** 0.5
            for i in inputs:
                natural = self._natural_scale(i, k, rows[k])
                self._natural_parts[(i, k)] = natural
                extra[(i, k)] = rms + natural
        return extra

    def _allowance_full(
        self, i: int, k: int, a: torch.Tensor, ref: torch.Tensor | None, est: Estimates, extra: float, idx: tuple
    ) -> torch.Tensor:
        """Autograd's allowance on the entries ``idx`` (rows, columns) of the ``(n_i, r)`` matrices."""
        if self.options["atol"] is not None or self.options["rtol"] is not None:
            atol = self.options["atol"] or 0.0
            rtol = self.options["rtol"] or 0.0
            return atol + rtol * est.central.abs().nan_to_num(0.0)
        base = ref if ref is not None else a
        base = base.nan_to_num(0.0, posinf=0.0, neginf=0.0)
        row_rms = base.square().mean(dim=0).sqrt()
        j_idx, r_idx = idx
        scale = base[j_idx, r_idx].abs() + row_rms[r_idx] + extra
        measured = (a[j_idx, r_idx] - ref[j_idx, r_idx]).abs().nan_to_num(0.0) if ref is not None else None
        policy = tolerances.AnalyticAllowance(self.inputs[i].dtype, ref is not None)
        conditioning = None
        if measured is not None and bool(policy.capped(scale, measured).any()):
            cond = self._conditioning()
            if cond is not None:
                conditioning = cond[(i, k)][j_idx, r_idx]
        floor_scale = self._floor_scale(scale, i, k, measured)
        forward = self._forward_rounding(i, k) if measured is not None else None
        return policy.allowance(scale, measured, conditioning, floor_scale, forward) + self.options["nondet_tol"]

    def _forward_rounding(self, i: int, k: int) -> float | None:
        """The low-precision forward's measured rounding of output k (|f64 - low| at x) over input i's unit
        scale: the absolute round-off its derivatives carry from intermediates that cancel (``AnalyticAllowance``)."""
        if k not in self.out_idx or len(self.forward_rounding) != len(self.out_idx):
            return None
        x_scale = max(float(_rms(coords64(self.inputs[i]))), 1.0)
        return self.forward_rounding[self.out_idx.index(k)] / x_scale

    def _floor_scale(self, scale: torch.Tensor, i: int, k: int, measured) -> torch.Tensor | None:
        """``scale`` without the natural size of (input i, output k) where a float64 run measured the
        round-off (``AnalyticAllowance.allowance``'s ``floor_scale``), else None (the floor keeps it)."""
        if measured is None:
            return None
        return (scale - self._natural_parts.get((i, k), 0.0)).clamp_min(0.0)

    def _conditioning(self) -> dict | None:
        """Per (input, output): how far the float64 derivatives move when each low-precision input moves
        by ``CAP_EPS`` roundings of its dtype at unit scale (``64·eps·max(|x|, 1)``, alternating signs),
        summed over those inputs: the error a derivative computed in that dtype carries from rounding its
        inputs and intermediates up to 64 times their size. Computed once per check, on the first entry
        whose measured float32 error exceeds the allowance's cap (one float64 forward and backward per
        such input); ``None`` where that fails."""
        if self._conditioning_rows is not False:
            return self._conditioning_rows
        rows = self.full_state["rows"]
        total = self._rounding_changes(
            self.full_state["reference"], lambda leaves, outs: self._analytic_full(rows, leaves, outs)[0]
        )
        self._conditioning_rows = total
        if total:
            self.report.notes.append(
                "some float32 derivatives differ from float64 autograd by more than 64 eps; their allowance "
                "was raised to how far the float64 derivatives move when the inputs move by 64 float32 "
                "roundings (an ill-conditioned expression rounds its float32 derivatives that much)"
            )
        return self._conditioning_rows

    def _rounding_changes(self, reference: dict, derive: Callable) -> dict | None:
        """Per key of ``reference`` (the float64 derivatives), how far ``derive(leaves, outs)`` moves from it
        when each low-precision input in turn moves by ``CAP_EPS`` roundings at unit scale, summed over those
        inputs (``_conditioning``, ``_directional_conditioning``); None where that fails or finds nothing."""
        low = [j for j, t in enumerate(self.inputs) if is_differentiable(t) and tolerances.eps(t.dtype) > 1e-15]
        total: dict = {}
        try:
            for j in low:
                _, leaves, outs = self._reference_leaves(perturb=j)
                for key, moved in derive(leaves, outs).items():
                    change = (moved - reference[key]).abs().nan_to_num(0.0)
                    total[key] = change if key not in total else total[key] + change
        except Exception:  # noqa: BLE001 - no conditioning: the capped allowance stands
            return None
        return total or None

    def _record(
        self, check: str, i: int, k: int, kind: str, a: torch.Tensor, verdict: Verdict, flowed: bool,
        j_idx: torch.Tensor, r_idx: torch.Tensor,
    ) -> bool:
        """Add a group summary and its mismatches; return whether anything failed.

        ``verdict`` covers the entries ``(j_idx, r_idx)`` of the ``(n_i, r)`` matrix ``a``; the others passed.
        """
        report = self.report
        group = GroupSummary(check, i, k, kind)
        group.compared = int(a.numel() - verdict.unchecked.sum().item())
        group.unchecked = int(verdict.unchecked.sum().item())
        group.failed = int(verdict.failed.sum().item())
        group.kinks = int(verdict.kink.sum().item())
        finite_ratio = verdict.ratio
        group.worst_ratio = float(finite_ratio.max().item()) if finite_ratio.numel() else 0.0
        report.groups.append(group)
        x = self.inputs[i]
        name = self.names[i]
        if verdict.approximate is not None:
            label = lambda pos: _approximate_label(self.outs[k], report.output_name(k), kind, x, name, int(j_idx[pos]), int(r_idx[pos]))  # noqa: E731
            self.approximate.add(verdict.approximate, _approximate.accuracy(x.dtype), x.dtype, label)
        if group.kinks:
            report.notes.append(
                f"{group.kinks} derivative(s) of output {k} w.r.t. {name} sit at or next to a kink (left and right "
                "slopes differ); autograd's value was accepted where it lies between them or matches the clean side"
            )
        if group.unchecked:
            report.notes.extend(unchecked_notes(verdict, a, j_idx, r_idx, x, k, name))
        if not flowed and check == "backward":
            report.notes.append(
                f"no gradient flows to input {i} ({name}) from output {k}: autograd treats it as not used "
                "(detached, computed under no_grad, or requires_grad_(False)); compared as zero"
            )
        if not group.failed:
            return False
        failed_at = verdict.failed.nonzero().reshape(-1)
        order = torch.argsort(verdict.ratio[failed_at], descending=True)[:KEPT_PER_GROUP]
        xc = coords(x)
        for pos in failed_at[order].tolist():
            j, r = int(j_idx[pos]), int(r_idx[pos])
            index, part = coord_index(j, x.shape, x.is_complex())
            out_shape = self.outs[k].shape
            out_elem = None
            note = []
            if kind == "jacobian":
                out_elem, opart = coord_index(r, out_shape, self.outs[k].is_complex())
                if opart:
                    note.append(f"output {opart}")
            if part:
                note.append(f"input {part}")
            if not flowed:
                note.append(f"no gradient flows to input {i}: autograd gave none")
            if bool(verdict.sharp_kink[pos]):
                lo, hi = sorted((float(verdict.left[pos]), float(verdict.right[pos])))
                note.append(
                    f"a kink: the one-sided slopes are {lo:.6g} and {hi:.6g}; a valid (sub)gradient lies between them"
                )
            note += [f"at a tie ({text}): the gradient over them is wrong" for t_i, m, text in self._tie_failures
                     if t_i == i and j in m][:1]
            analytic_value = float(a[j, r])
            numerical_value = float(verdict.numerical[pos])
            if not math.isfinite(analytic_value):
                note.append("autograd's value is not finite where the numerical one is")
            report.mismatches.append(
                Mismatch(
                    check=check,
                    input_index=i,
                    output_index=k,
                    index=index,
                    analytic=analytic_value,
                    numerical=numerical_value,
                    abs_error=abs(analytic_value - numerical_value),
                    allowed=float(verdict.allowed[pos]),
                    output_element=out_elem,
                    input_name=name,
                    input_value=safe_float(xc[j]),
                    kind=kind,
                    note="; ".join(note),
                )
            )
        return True

    # ---------------------------------------------------------------------------------------------
    # directional mode
    def _directions(self) -> dict[int, torch.Tensor]:
        """Per input ``(d, n_i)``: random signs times each coordinate's step scale (``scale_of``), so ``|u|``
        is the scale; float64 for float64 inputs, else float32 (powers of two: exact in both)."""
        d = self.options["directions"] or (DEFAULT_DIRECTIONS if self.n_in <= LARGE_COORDS else 1)
        self.n_directions = d
        out = {}
        for i in self.wrt:
            x = coords(self.inputs[i].detach()).cpu()  # base_args[i]'s values (a float64 copy of low precision)
            out[i] = _rademacher(x if x.dtype in _FLOAT_BITS else x.to(torch.float32), d, self.gen)
            reach = max(abs(m) for m in self.stencil.multipliers)
            out[i] = _ties.tie_directions(x, out[i], self._step(i), reach)  # tied elements move together
            if i in self.nonfinite:  # never moved: x + t·h·u stays what fn masks
                out[i][:, self.nonfinite[i]] = 0.0
        return out

    def _directional_numerics(self, u: dict[int, torch.Tensor]) -> "_DirectionalNumerics":
        """phi(0) for every output and direction, then phi(+-h), or the whole stencil where no screen applies
        (``_screen``): the rest of the stencil is evaluated by ``_directional_estimates`` on first need."""
        d = self.n_directions
        n_out = len(self.out_idx)
        values = torch.full((self.stencil.points + 1, n_out, d), math.nan, dtype=torch.float64)
        fmag = torch.tensor([[self._output_sizes(k)[0]] for k in self.out_idx], dtype=torch.float64)
        num = _DirectionalNumerics(values, fmag, evaluated=1, center=False)
        if not self.reference_pending:  # phi(0) from f(x), which is known (a deferred probe: on first need)
            self._directional_center(num)
        self._evaluate_directional(num, u, _screen.POINTS if _screen.applies(self.stencil) else values.shape[0])
        return num

    def _directional_center(self, num: "_DirectionalNumerics") -> None:
        """phi(0) from f(x)."""
        for pos, k in enumerate(self.out_idx):
            num.values[0, pos, :] = self.f0[pos] @ self.v[k]
        num.center = True

    def _output_sizes(self, k: int) -> tuple[float, float, float]:
        """``(sum |f·v|, f·f, v·v)`` of output k at the inputs (the noise model's size, the natural scale's
        sums), from autograd's forward and v in the output's own dtype, summed as ``_size_sq`` says (sizes,
        not differences: the output's rounding does not matter), once per check."""
        key = ("output sizes", k)
        if key not in self._rms_cache:
            f, v = coords(self.outs[k]), coords(self.out_vectors[k])
            self._rms_cache[key] = (_size_abs_dot(f, v), _size_sq(f), _size_sq(v))
        return self._rms_cache[key]

    def _outputs_at(self, repl: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """``evaluator.outputs_at``; the first call of a deferred probe also checks that fn computes in
        float64 there (``_NoFloat64`` where it does not, or fails)."""
        if not self.reference_pending:
            return self.evaluator.outputs_at(repl)
        try:
            outs = self.evaluator.raw_outputs_at(repl)
        except EvaluationFailed:
            raise _NoFloat64 from None
        if not all(outs[k].dtype in (torch.float64, torch.complex128) for k in self.out_idx):
            raise _NoFloat64
        self.reference_pending = False
        return [coords64(outs[k]) for k in self.out_idx]

    def _evaluate_directional(
        self, num: "_DirectionalNumerics", u: dict[int, torch.Tensor], upto: int, h: float | None = None
    ) -> None:
        """Fill the stencil rows ``num.evaluated .. upto - 1`` (offsets ``multipliers[row - 1]`` times h, the
        stencil's step unless given)."""
        h = self.stencil.h0 if h is None else h
        mult = self.stencil.multipliers
        base = {i: coords(self.evaluator.base_args[i]) for i in self.wrt}
        buffers = {i: torch.empty_like(base[i]) for i in self.wrt}
        for di in range(self.n_directions):
            for row in range(num.evaluated, upto):
                repl = {}
                for i in self.wrt:
                    x = self.evaluator.base_args[i]
                    step = u[i][di]
                    if step.dtype != base[i].dtype or step.device != base[i].device:
                        # float32 directions (a mixed add is slower), or an input on another device
                        step = buffers[i].copy_(step)
                    point = torch.add(base[i], step, alpha=mult[row - 1] * h, out=buffers[i])
                    repl[i] = from_coords(point.unsqueeze(0), x.shape, x.is_complex())[0].to(x.dtype)
                outs = self._outputs_at(repl)
                for pos, k in enumerate(self.out_idx):
                    num.values[row, pos, di] = outs[pos] @ self.v[k]
                del outs, repl  # not held while fn computes the next point (one output less at the peak)
        num.evaluated = max(num.evaluated, upto)

    def _directional_estimates(self) -> Estimates:
        """The full stencil's estimates (evaluating the points the screen left out), and for low-precision
        inputs the float64 autograd reference its allowance measures round-off against."""
        state = self.directional_state
        num = state["numerics"]
        if num.estimates is None:
            if not num.center:
                self._directional_center(num)
            self._evaluate_directional(num, state["u"], num.values.shape[0])
            h = torch.tensor(self.stencil.h0, dtype=torch.float64)
            num.estimates = estimate(num.values, h, num.fmag, self.stencil, pool_dim=1)
            if self.reference:
                self._directional_reference()
        return num.estimates

    def _directional_reference(self) -> dict | None:
        """The float64 autograd run's ``v·J`` (``grads_ref``), computed on first need; None where it fails
        (the allowance is then the blanket one)."""
        state = self.directional_state
        if "reference_ran" not in state:
            state["reference_ran"] = True
            try:
                _, ref_leaves, ref_outs = self._reference_leaves()
                state["grads_ref"], _ = self._vjp_vectors(ref_leaves, ref_outs)
            except Exception:  # noqa: BLE001 - no reference: blanket allowance
                state["grads_ref"] = None
        return state["grads_ref"]

    def _judge_directional(self, a: torch.Tensor) -> tuple[Verdict, torch.Tensor, bool]:
        """Autograd's ``(n_out, d)`` values against the numerics: the +-h screen where it decides (every value
        passes it), else the full stencil. Returns the verdict, the scale of each value, and whether the screen
        decided."""
        kap = tolerances.kappa(a.numel())
        num = self.directional_state["numerics"]
        if num.estimates is None and _screen.applies(self.stencil):
            allow, scale = self._allowance_directional(screen=True)
            verdict = _screen.screen(a, num.values, self.stencil.h0, num.fmag, self.stencil, allow, kap, num.center)
            if verdict is None and self.reference and self._directional_reference() is not None:
                # low-precision inputs: the floor alone did not settle it; with autograd's round-off measured
                # against the float64 run (the allowance the full comparison gives) it may, without the
                # rest of the stencil
                allow, scale = self._allowance_directional(screen="measured")
                verdict = _screen.screen(a, num.values, self.stencil.h0, num.fmag, self.stencil, allow, kap, num.center)
            if verdict is not None:
                return verdict, scale, True
        est = self._directional_estimates()
        allow, scale = self._allowance_directional(screen=False)
        # no second opinion at smaller steps here (full mode's _refine): one coordinate's steep feature
        # would dominate the projection and its tolerance there, and hide a wrong element elsewhere. Auto
        # mode narrows a failure down with a full check, whose entries get it one by one (_narrow)
        verdict = compare(a, est, allow, kap)
        self._settle_directional_kinks(a, est, allow, verdict, kap)
        if bool(verdict.failed.any()) and self._approximate_tier():
            _approximate.apply(
                verdict, a, self._directional_own_scale(), _approximate.accuracy(self._directional_dtype(), True),
                self.options["strict"],
            )
        return verdict, scale, False

    def _directional_own_scale(self) -> torch.Tensor:
        """Per output ``(n_out, 1)``: ``||(v·J) ∘ |u| ||`` of autograd's gradients (0 where not finite)."""
        scale = torch.zeros(len(self.out_idx), 1, dtype=torch.float64)
        for pos, k in enumerate(self.out_idx):
            sums = [self._directional_square_sums.get((i, k)) for i in self.wrt]
            if all(s is not None for s in sums):
                scale[pos] = math.sqrt(max(sum(float(s) for s in sums), 0.0))
        return torch.nan_to_num(scale, nan=0.0, posinf=0.0)

    def _directional_dtype(self) -> torch.dtype:
        return min((self.inputs[i].dtype for i in self.wrt), key=lambda dt: -tolerances.eps(dt))

    def _settle_directional_kinks(self, a, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
        """Directional values that passed on a central value spoiled by a kink along ``u`` inside the stencil
        (``_kinks``), judged again with the stencil at smaller steps on the kink's clean side."""
        flat = lambda t: None if t is None else t.view(-1)  # noqa: E731 - (n_out, d) -> flat positions (views: writes reach verdict)
        view = Verdict(*(flat(getattr(verdict, f)) for f in Verdict.__dataclass_fields__))
        flat_est = Estimates(*(None if t is None else flat(t) for t in vars(est).values()))
        idx = _kinks.suspects(flat(a), flat_est, flat(allow), kap, view).nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        state = self.directional_state
        num = state["numerics"]

        def estimates_at(level: int, open_: torch.Tensor) -> Estimates:
            h = self.stencil.h0 / _kinks.STEP_FACTOR**level
            fine = _DirectionalNumerics(num.values.clone(), num.fmag, evaluated=1)
            self._evaluate_directional(fine, state["u"], num.values.shape[0], h=h)
            sigma = noise_sigma(fine.values, fine.fmag, self.stencil, pool_dim=1)
            e = estimate_with_sigma(fine.values, torch.tensor(h, dtype=torch.float64), sigma, self.stencil, unit_floor=False)
            return Estimates(*(None if t is None else flat(t)[idx[open_]] for t in vars(e).values()))

        settled = _kinks.settle(flat(a)[idx], flat(allow)[idx], kap, estimates_at)
        decided, wrong, level = _kinks.apply(view, idx, settled, flat(a)[idx])
        if decided:
            self.report.notes.append(_kinks.note("directional derivative(s)", decided, wrong, level))

    def _vjp_vectors(self, leaves: dict[int, torch.Tensor], outs, raw: dict | None = None) -> tuple[dict, dict]:
        """g[(i, k)] = v_k · d out_k / d x_i as real coordinates (in the gradient's dtype), and whether a
        gradient flowed.

        One backward per output (``vjp_rows``' single-row case, without its batching machinery and copies);
        ``raw`` receives autograd's own gradients (``None`` where none flowed), for the re-entrancy check.
        """
        grads, flowed = {}, {}
        order = list(self.wrt)
        leaf_list = [leaves[i] for i in order]
        for k in self.out_idx:
            out = outs[k]
            result: tuple = (None,) * len(order)
            if out.requires_grad:
                grad_output = self.drawn_vectors.get(k)
                if grad_output is None or grad_output.dtype != out.dtype:  # given, or a float64 reference run
                    grad_output = rows_from_coords(self.v[k].unsqueeze(0), out)[0]
                try:
                    result = torch.autograd.grad(
                        out, leaf_list, grad_outputs=grad_output, retain_graph=True, allow_unused=True
                    )
                except Exception as exc:  # noqa: BLE001
                    raise _Failure(f"backward of output {k} raised {describe_exception(exc)}", exc) from None
            for i, leaf, g in zip(order, leaf_list, result):
                flowed[(i, k)] = g is not None
                if raw is not None:
                    raw[(i, k)] = None if g is None else g.detach()
                if g is None:
                    grads[(i, k)] = torch.zeros(n_coords(leaf), dtype=torch.float64)
                    continue
                try:
                    _check_grad_meta(g.unsqueeze(0), leaf)
                except GradientMetaError as exc:
                    raise _Failure(f"autograd returned a malformed gradient for output {k}: {exc}") from None
                # coordinates in the gradient's own dtype (exact in float64): the products with u and the
                # sums of squares convert them chunk by chunk, without a full-size float64 copy
                grads[(i, k)] = coords(g.detach()).cpu()
                if i in self.nonfinite:  # not checked there, as in full mode (their u is 0: NaN·0 would spread)
                    grads[(i, k)] = grads[(i, k)].index_fill(0, self.nonfinite[i], 0.0)
        return grads, flowed

    def _backward_directional(self) -> None:
        try:
            self._backward_directional_once()
        except _NoFloat64:  # the deferred probe: fn does not compute in float64 at x + h·u
            self._choose_numeric_dtype(defer=False)  # the probe at x decides, as for any other check
            self.extra_evaluations += 1  # the point that told
            self._backward_directional_once()

    def _backward_directional_once(self) -> None:
        u = self._directions()
        # forward AD's projections now, while least else is held in memory (the check of them comes with
        # forward_check): its temporaries on top of the numerics' and the backward's cost page faults on
        # large inputs (a float64 check of 10^6 elements took 15-20% longer)
        self._jvp_projections = self._jvp_projection(u) if self.options["forward_ad"] is not False else None
        num = self._directional_numerics(u)
        raw: dict = {}
        grads, flowed = self._vjp_vectors(self.leaves, self.outs, raw)
        self.directional_state = {"u": u, "numerics": num, "grads": grads, "grads_ref": None, "raw_grads": raw}
        a = self._project_directional(grads, u)
        verdict, scale, screened = self._judge_directional(a)
        failed = self._record_directional("backward", a, verdict, all(flowed.values()))
        self.report.resolution = float((verdict.allowed / scale.clamp_min(1e-300)).max())
        if screened:
            detail = (
                f"directional, {self.n_directions} direction(s), 2 evaluations each (stopped after ±h: the "
                "central difference already agreed within its round-off)"
            )
            if not num.center:
                detail += "; f(x) in float64 was not needed, so a kink exactly at x was not looked for"
        else:
            detail = f"directional, {self.n_directions} direction(s), {self.stencil.points} evaluations each"
        self.report.checks.append(CheckResult("backward", "failed" if failed else "passed", detail))
        if failed and self.options["mode"] == "auto":
            self._narrow()

    def _project_directional(self, grads: dict, u: dict) -> torch.Tensor:
        a = torch.zeros(len(self.out_idx), self.n_directions, dtype=torch.float64)
        for pos, k in enumerate(self.out_idx):
            for i in self.wrt:
                # the first direction's pass also sums (g·u)² = (g·|u|)², the allowance's scale
                value, square_sum = _dot_and_square_sum(u[i][0], grads[(i, k)])
                a[pos, 0] += value
                self._directional_square_sums[(i, k)] = square_sum
                for di in range(1, self.n_directions):
                    a[pos, di] += _dot64(u[i][di], grads[(i, k)])
        return a

    def _allowance_directional(self, screen: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Autograd's allowance and scale per ``(n_out, d)`` value; backward and jvp share them.

        ``screen``: what the +-h screen may allow, never more than the full comparison: with given tolerances
        ``atol`` alone (``rtol`` scales the full stencil's value), for low-precision inputs the floor that
        ``AnalyticAllowance`` always allows (the part measured against a float64 autograd run only adds).
        ``screen="measured"``: the screen's second try for low-precision inputs, with that measured part (the
        full comparison's allowance, the float64 run made for it).
        """
        key = screen if screen == "measured" else ("screen" if screen else "full")
        if key not in self._directional_allowance:
            state = self.directional_state
            self._directional_allowance[key] = self._compute_allowance_directional(
                state["grads"], None if screen is True else state["grads_ref"], state["u"],
                None if screen else state["numerics"].estimates,
            )
        return self._directional_allowance[key]

    def _compute_allowance_directional(self, grads, ref, u, est) -> tuple[torch.Tensor, torch.Tensor]:
        """``est`` None: the screen's allowance (see ``_allowance_directional``)."""
        n_out = len(self.out_idx)
        scale = torch.zeros(n_out, 1, dtype=torch.float64)
        measured = torch.zeros(n_out, 1, dtype=torch.float64) if ref is not None else None
        for pos, k in enumerate(self.out_idx):
            for i in self.wrt:
                s = u[i][0]  # |u| is each coordinate's step scale; signs do not change a sum of squares
                base = ref[(i, k)] if ref is not None else grads[(i, k)]
                known = self._directional_square_sums.get((i, k)) if ref is None else None
                scale[pos] += known if known is not None else _scaled_square_sum(base, s)
                if measured is not None:
                    measured[pos] += _scaled_square_sum(grads[(i, k)] - ref[(i, k)], s)
        scale = scale.sqrt()
        own = scale.clone()  # the floor's scale where round-off is measured (_floor_scale)
        for pos, k in enumerate(self.out_idx):
            scale[pos] += max(self._directional_natural_scale(i, k) for i in self.wrt)
        if measured is not None:
            measured = measured.sqrt()
        if self.options["atol"] is not None or self.options["rtol"] is not None:
            atol = self.options["atol"] or 0.0
            if est is None:  # the screen: rtol scales the full stencil's value, which it has not computed
                allow = torch.full((n_out, self.n_directions), float(atol), dtype=torch.float64)
            else:
                allow = atol + (self.options["rtol"] or 0.0) * est.central.abs().nan_to_num(0.0)
            return allow, scale.expand(n_out, self.n_directions)
        dtype = min((self.inputs[i].dtype for i in self.wrt), key=lambda dt: -tolerances.eps(dt))
        if est is None and self.reference and ref is None:
            # the screen of low-precision inputs: the floor alone (a measured round-off of 0)
            policy = tolerances.AnalyticAllowance(dtype, True)
            measured = torch.zeros_like(scale)
        else:
            policy = tolerances.AnalyticAllowance(dtype, measured is not None)
        floor_scale = own if measured is not None else None
        conditioning = None
        if est is not None and measured is not None and bool(policy.capped(scale, measured).any()):
            conditioning = self._directional_conditioning(ref, u)
            if conditioning is not None:
                # only where the conditioning explains the measured error: a projection can be far smaller
                # than the error's norm by chance, so a float32-only bug (a backward through float16: 15x
                # the conditioning here) must not get the raised allowance on the chance that it projects small
                explained = measured <= tolerances.MEASURED_FACTOR * conditioning
                conditioning = torch.where(explained, conditioning, torch.zeros_like(conditioning))
                if bool(explained.any()) and _CONDITIONING_NOTE not in self.report.notes:
                    self.report.notes.append(_CONDITIONING_NOTE)
        allow = (
            policy.allowance(scale, measured, conditioning, floor_scale)
            + self.options["nondet_tol"] * scale.clamp_min(1.0)
        ).expand(
            n_out, self.n_directions
        )
        return allow, scale.expand(n_out, self.n_directions)

    def _directional_conditioning(self, ref: dict, u: dict) -> torch.Tensor | None:
        """``_conditioning`` for a directional check, per output ``(n_out, 1)``: how far the float64 ``v·J``
        moves when each low-precision input moves by ``CAP_EPS`` roundings at unit scale, summed over those
        inputs, in the measured part's norm (``||change · |u| ||``). One float64 forward and backward per such
        input, on the first full comparison whose measured float32 error exceeds the cap; None where that
        fails."""
        state = self.directional_state
        if "conditioning" in state:
            return state["conditioning"]
        state["conditioning"] = None
        total = self._rounding_changes(ref, lambda leaves, outs: self._vjp_vectors(leaves, outs)[0])
        if total is None:
            return None
        cond = torch.zeros(len(self.out_idx), 1, dtype=torch.float64)
        for pos, k in enumerate(self.out_idx):
            for i in self.wrt:
                cond[pos] += _scaled_square_sum(total[(i, k)], u[i][0])
        state["conditioning"] = cond.sqrt()
        return state["conditioning"]

    def _directional_natural_scale(self, i: int, k: int) -> float:
        """``_natural_scale(i, k, "projected")`` from dot products (one pass each, cached per check)."""
        key = ("directional", i, k)
        if key not in self._rms_cache:
            x = coords(self.inputs[i])  # the inputs' values (a scale: summed in their dtype)
            if i in self.nonfinite:
                x = _nonfinite.finite_or_zero(x)
            sums = self._output_sizes(k)[1:]
            x_rms = math.sqrt(_size_sq(x) / max(x.numel(), 1))
            out_rms = math.sqrt(sums[0] / max(self.v[k].numel(), 1))
            v_norm = math.sqrt(sums[1])
            self._rms_cache[key] = v_norm * out_rms / max(x_rms, 1.0)
        return self._rms_cache[key]

    def _record_directional(self, check: str, a: torch.Tensor, verdict: Verdict, flowed: bool) -> bool:
        failed_any = False
        first_input = self.wrt[0]
        for pos, k in enumerate(self.out_idx):
            group = GroupSummary(check, first_input if len(self.wrt) == 1 else -1, k, "directional")
            group.compared = int((~verdict.unchecked[pos]).sum())
            group.unchecked = int(verdict.unchecked[pos].sum())
            group.failed = int(verdict.failed[pos].sum())
            group.kinks = int(verdict.kink[pos].sum())
            group.worst_ratio = float(verdict.ratio[pos].max())
            self.report.groups.append(group)
            if verdict.approximate is not None:
                self.approximate.add(
                    verdict.approximate[pos], _approximate.accuracy(self._directional_dtype(), True), self._directional_dtype(),
                    lambda di, k=k: f"directional derivative {di} of output {k}", directional=True,
                )
            for di in range(a.shape[1]):
                if not verdict.failed[pos, di]:
                    continue
                failed_any = True
                analytic_value = float(a[pos, di])
                self.report.mismatches.append(
                    Mismatch(
                        check=check,
                        input_index=group.input_index,
                        output_index=k,
                        index=(di,),
                        analytic=analytic_value,
                        numerical=float(verdict.numerical[pos, di]),
                        abs_error=abs(analytic_value - float(verdict.numerical[pos, di])),
                        allowed=float(verdict.allowed[pos, di]),
                        input_name="+".join(self.names[i] for i in self.wrt),
                        kind="directional",
                        note="" if flowed else "some input gets no gradient from autograd",
                    )
                )
        return failed_any

    def _narrow(self) -> None:
        small = [i for i in self.wrt if n_coords(self.inputs[i]) <= NARROW_COORDS]
        if not small:
            self.report.notes.append(
                f"the directional check failed; inputs are larger than {NARROW_COORDS} elements, so the wrong "
                "elements were not narrowed down (run with mode='full' to list them)"
            )
            return
        total = sum(n_coords(self.inputs[i]) for i in small)
        if total > NARROW_LOOP_COORDS and not self._runs_under_vmap(small[0]):
            # one call of fn per point and coordinate: 2^15 coordinates took 131,209 calls and 99 s
            self.report.notes.append(
                f"the directional check failed; fn cannot run under vmap ({self.evaluator.path}), and narrowing "
                f"{total} coordinates down would take one call of fn per point and coordinate, so the wrong "
                f"elements were not narrowed down (run with mode='full' on an input of at most "
                f"{NARROW_LOOP_COORDS} elements to list them)"
            )
            return
        self.report.notes.append(
            "the directional check failed; the wrong elements were narrowed down with a full check of "
            "d(v·out)/dx for " + ", ".join(self.names[i] for i in small)
        )
        self._refined_resolved = False
        approximate_before = self.approximate.count
        self._backward_full(inputs=small, check_name="backward")
        # the narrowing check repeats the name: keep one entry, failed if either failed
        results = [c for c in self.report.checks if c.name == "backward"]
        if len(results) == 2:
            self.report.checks.remove(results[1])
            detail = results[0].detail + "; narrowed: " + results[1].detail
            status = "failed"
            if results[1].status == "passed" and len(small) == len(self.wrt) and (
                self._refined_resolved or approximate_before < self.approximate.count
            ):
                # every element of d(v·out)/dx passed, some only at a smaller step: the finite differences
                # along u were off (fn changes on a scale below h there), not the gradient
                status = "passed"
                detail += (
                    "; every element passed, some at a smaller step: the directional failure came from the "
                    "finite differences along u, not from the gradient"
                ) if self._refined_resolved else (
                    "; every element passed, some as approximate (the note): the projection's tier is smaller"
                )
                self._directional_superseded = True
                self.report.mismatches = [
                    m for m in self.report.mismatches if not (m.check == "backward" and m.kind == "directional")
                ]
                for group in self.report.groups:
                    if group.check == "backward" and group.kind == "directional":
                        group.failed, group.worst_ratio = 0, 0.0
            self.report.checks[self.report.checks.index(results[0])] = CheckResult("backward", status, detail)

    def _runs_under_vmap(self, i: int) -> bool:
        """Whether full mode's batched evaluations of input ``i`` would run through vmap: one batch of one
        point (x itself) tells, as the first batch of a full check would."""
        if self.evaluator.vmap_failed is None and self.evaluator.grad_inside is None and not self.evaluator.used_vmap:
            x = self.evaluator.base_args[i]
            try:
                self.evaluator.batched(i, coords(x).unsqueeze(0), x.shape, x.is_complex())
            except EvaluationFailed:
                return False
        return self.evaluator.vmap_failed is None and self.evaluator.grad_inside is None

    # ---------------------------------------------------------------------------------------------
    def forward_check(self, mode: str) -> None:
        setting = self.options["forward_ad"]
        if setting is False:
            self.report.checks.append(CheckResult("forward_ad", "skipped", "forward_ad=False"))
            return
        try:
            if mode == "full" and hasattr(self, "full_state"):
                failed = self._forward_full()
            else:
                failed = self._forward_directional()
        except ForwardADUnsupported as exc:
            status = "skipped" if setting == "auto" else "error"
            self.report.checks.append(
                CheckResult("forward_ad", status, f"fn does not support forward-mode AD: {forward_ad_reason(str(exc))}")
            )
            return
        except Exception as exc:  # noqa: BLE001
            status = "skipped" if setting == "auto" else "error"
            described = describe_exception(exc)
            detail = forward_ad_reason(described) if status == "skipped" else f"forward-mode AD raised {described}"
            self.report.checks.append(CheckResult("forward_ad", status, detail))
            return
        detail = getattr(self, "_forward_detail", None)  # full mode; directional once superseded
        self.report.checks.append(CheckResult("forward_ad", "failed" if failed else "passed", detail or mode))

    def _jvp_args(self) -> list:
        """The inputs as given for a forward-mode pass (fresh copies when fn modifies its inputs)."""
        if not self.mutates_inputs:
            return self.analytic_args
        args = []
        for i, t in enumerate(self.inputs):
            if isinstance(t, torch.Tensor):
                clone = layout_clone(t)
                args.append(clone.requires_grad_(True) if i in self.grad_positions else clone)
            else:
                args.append(t)
        return args

    def _forward_full(self) -> bool:
        """Forward AD in full mode. Inputs whose backward Jacobian passed entry by entry are checked against
        it along ``FORWARD_DIRECTIONS`` Gaussian direction(s) (one forward-mode pass per direction for all of
        them: ``J·u`` from forward AD against ``J·u`` from the checked backward Jacobian, within autograd's
        round-off). An
        input whose backward failed, or a disagreement there, gets every forward column compared entry by
        entry with the finite differences, which is what names the wrong entries."""
        state = self.full_state
        rows = state["rows"]
        failed_any = False
        total = sum(n_coords(self.inputs[i]) * self._rows(k, rows[k]) for i in state["estimates"] for k in self.out_idx)
        kap = tolerances.kappa(total)
        verified = [i for i in state["estimates"] if state["input_passed"].get(i)]
        per_entry = [i for i in state["estimates"] if i not in verified]
        self._forward_detail = "full, every column against the finite differences"
        if verified:
            if self._forward_against_backward(verified):
                self._forward_detail = (
                    f"full: J·u along {FORWARD_DIRECTIONS} random direction{'s' if FORWARD_DIRECTIONS != 1 else ''} "
                    "against the checked backward Jacobian"
                    + (f"; every column of {', '.join(self.names[i] for i in per_entry)} against the finite "
                       "differences" if per_entry else "")
                )
                for i in verified:
                    for k in self.out_idx:
                        self._record_screened("forward_ad", i, k, rows[k], 0.0, True)
            else:
                per_entry = list(state["estimates"])
                self._forward_detail = (
                    "full: J·u disagreed with the checked backward Jacobian; every column compared with the "
                    "finite differences"
                )
        for i in per_entry:
            est = state["estimates"][i]
            if est is None:  # settled by the screen: the full stencil is needed now
                est = state["estimates"][i] = self._full_numerics(i, rows)
            n_i = n_coords(self.inputs[i])
            cols_per_batch = max(1, BATCH_ELEMENTS // (n_i + self.n_out))
            parts: dict[int, list] = {k: [] for k in self.out_idx}
            for start in range(0, n_i, cols_per_batch):
                stop = min(n_i, start + cols_per_batch)
                tangents = torch.zeros(stop - start, n_i, dtype=torch.float64)
                tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                cols, _ = jvp_columns(
                    self.fn, self._jvp_args(), i, tangents, self.out_idx, self.rng_seed, self.mutates_inputs
                )
                for pos, k in enumerate(self.out_idx):
                    parts[k].append(self._project(k, rows[k], cols[pos]))
            for k in self.out_idx:
                a = torch.cat(parts[k])
                ref = state["reference"][(i, k)] if state["reference"] is not None else None
                verdict, j_idx, r_idx = self._judge(i, k, a, ref, est[k], state["extra"][(i, k)], kap)
                failed_any |= self._record("forward_ad", i, k, rows[k], a, verdict, True, j_idx, r_idx)
        return failed_any

    def _forward_against_backward(self, inputs: list[int]) -> bool:
        """Whether forward AD's ``J·u`` matches the backward Jacobian's (already checked) ``J·u``.

        Where the ±h screen listed every nonzero entry of the inputs' Jacobians (``_screen_candidates``),
        the products and scales are sums over those entries, all inputs at once; else input by input over
        the dense matrices."""
        state = self.full_state
        rows, analytic, reference, extra = state["rows"], state["analytic"], state["reference"], state["extra"]
        sizes = [n_coords(self.inputs[i]) for i in inputs]
        # one tensor per input (make_dual copies a tangent that is a view into a larger storage)
        tangents = {
            i: torch.randn(FORWARD_DIRECTIONS, n, generator=self.gen, dtype=torch.float64) for i, n in zip(inputs, sizes)
        }
        cols, _ = jvp_directions(self.fn, self._jvp_args(), tangents, self.out_idx, self.rng_seed, self.mutates_inputs)
        dtype = min((self.inputs[i].dtype for i in inputs), key=lambda dt: -tolerances.eps(dt))
        policy = tolerances.AnalyticAllowance(dtype, reference is not None)
        u_norm = torch.stack([u.square().sum(dim=1) for u in tangents.values()], dim=1).sqrt_()  # (d, inputs)
        nondet_tol = self.options["nondet_tol"]
        sparse = self._screen_candidates(inputs, sizes) if reference is None else None
        if sparse is not None:
            # small arrays (the screen's nonzero entries): numpy, where a call costs a fraction of torch's
            u_all = np.concatenate([u.numpy() for u in tangents.values()], axis=1)
            u_norm = u_norm.numpy()
        for pos, k in enumerate(self.out_idx):
            got = self._project(k, rows[k], cols[pos])  # (d, r)
            if sparse is not None:
                # J·u and sum (u b)² over the nonzero entries b of the stacked (sum n_i, r) Jacobians
                j_idx, r_idx, b, row_rms = sparse[k]
                ub = u_all[:, j_idx] * np.where(np.isfinite(b), b, 0.0)  # unchecked entries (fn not finite) as 0
                r = got.shape[1]
                expected = np.stack([np.bincount(r_idx, weights=row, minlength=r) for row in ub])
                scale2 = np.stack([np.bincount(r_idx, weights=row * row, minlength=r) for row in ub])
                extra_k = np.array([[extra[(i, k)]] for i in inputs])
                if not _jvp_within(got.numpy(), expected, scale2, u_norm, row_rms, extra_k, policy, None, nondet_tol):
                    return False
                continue
            # dense: input by input over the matrices
            expected, scale2 = torch.zeros_like(got), torch.zeros_like(got)
            measured2 = torch.zeros_like(got) if reference is not None else None
            rms_parts = []
            for i, u in tangents.items():
                a = analytic[(i, k)]
                ref = reference[(i, k)] if reference is not None else None
                base = ref if ref is not None else a
                product = u @ base
                if not bool(torch.isfinite(product).all()):  # entries left unchecked (fn not finite there)
                    base = base.nan_to_num(0.0, posinf=0.0, neginf=0.0)
                    product = u @ base
                expected += product
                b2 = base.square()
                u2 = u.square()
                scale2 += u2 @ b2
                rms_parts.append(b2.mean(dim=0).sqrt())
                if measured2 is not None:
                    measured2 += u2 @ (a - ref).nan_to_num(0.0).square()
            extra_k = torch.tensor([[extra[(i, k)]] for i in inputs], dtype=torch.float64)
            measured = measured2.sqrt() if measured2 is not None else None
            row_rms = torch.stack(rms_parts)  # (inputs, r)
            if not _jvp_within(got, expected, scale2, u_norm, row_rms, extra_k, policy, measured, nondet_tol):
                return False
        return True

    def _screen_candidates(self, inputs: list[int], sizes: list[int]) -> dict | None:
        """Per output, every nonzero entry of autograd's Jacobians of ``inputs`` stacked as one
        ``(sum n_i, r)`` matrix (rows, columns, values) and each input's row rms ``(inputs, r)``, as the
        ±h screen found them (numpy arrays); ``None`` unless the screen listed them all for every input."""
        state = self.full_state
        joint = state.get("joint")
        if joint is not None and joint.inputs == list(inputs):
            return {k: (j, r, a, joint.row_rms[k]) for k, (_, _, _, a, _, r, j) in joint.parts.items()}
        prepared = state["prepared"]
        screens = [prepared.get(i) for i in inputs]
        if any(s is None or any(k not in s.row_rms for k in self.out_idx) for s in screens):
            return None
        offsets = np.cumsum([0] + list(sizes[:-1]))
        result = {}
        for k in self.out_idx:
            parts = [tuple(t.numpy() for t in s.candidates[k]) for s in screens]
            j_idx = np.concatenate([j + off for (j, _, _), off in zip(parts, offsets)])
            r_idx = np.concatenate([r for _, r, _ in parts])
            values = np.concatenate([a for _, _, a in parts])
            result[k] = (j_idx, r_idx, values, np.stack([s.row_rms[k].numpy() for s in screens]))
        return result

    def _jvp_directional(self, i: int, tangents: torch.Tensor) -> list[torch.Tensor]:
        """``J_i·u`` per output, ``(d, n_out_coords)``: one forward-mode pass for one direction (no vmap
        wrapper, coordinates in the output's dtype), else ``jvp_columns`` (float64)."""
        if tangents.shape[0] != 1:
            cols, _ = jvp_columns(self.fn, self._jvp_args(), i, tangents, self.out_idx, self.rng_seed, self.mutates_inputs)
            return cols
        args = self._jvp_args()
        primal = args[i]
        tangent = from_coords(tangents, primal.shape, primal.is_complex())[0].to(device=primal.device, dtype=primal.dtype)
        cols = forward_pass(self.fn, args, {i: tangent}, self.out_idx, self.rng_seed, self.mutates_inputs)
        return [c.unsqueeze(0) for c in cols]

    def _jvp_projection(self, u: dict[int, torch.Tensor]) -> torch.Tensor | Exception:
        """``v·J·u`` per output and direction ``(n_out, d)`` from forward-mode passes, or the exception they
        raised (``forward_check`` reports it)."""
        try:
            a = torch.zeros(len(self.out_idx), self.n_directions, dtype=torch.float64)
            for i in self.wrt:  # J·u = sum over inputs of J_i·u_i
                cols = self._jvp_directional(i, u[i])
                part = self._project_tangents(cols)
                # a finite projection proves finite tangents (a non-finite one never drops out of it: 0·inf
                # and 0·NaN are NaN): the tangents are counted only where it is not
                if not bool(torch.isfinite(part).all()) and any(_nonfinite_count(c) for c in cols):
                    # u's power-of-two scales (|x| rounded) can carry a tangent past the largest float32
                    # where the outputs are large too: J·u = s·J·(u/s), both exact for a power of two s
                    s = float(u[i].abs().max())
                    if s > 1.0:
                        part = s * self._project_tangents(self._jvp_directional(i, u[i] / s))
                a += part
            return a
        except Exception as exc:  # noqa: BLE001 - reported by forward_check, as if raised there
            return exc

    def _project_tangents(self, cols: list[torch.Tensor]) -> torch.Tensor:
        """``v·col`` per output and direction ``(n_out, d)``, in float64."""
        part = torch.zeros(len(self.out_idx), self.n_directions, dtype=torch.float64)
        for pos, col in enumerate(cols):
            for di in range(col.shape[0]):
                part[pos, di] = _dot64(col[di], self.v[self.out_idx[pos]])
        return part

    def _forward_directional(self) -> bool:
        if not hasattr(self, "directional_state"):
            raise ForwardADUnsupported("no directional numerics to compare with")
        a = self._jvp_projections
        if isinstance(a, Exception):
            raise a
        if self._directional_superseded:
            return self._forward_against_backward_directional(a)
        # the jvp's round-off is judged like the backward's: same scale, same measured float32 error; the
        # backward's screen may have stopped the stencil early, the jvp is screened (or not) on its own
        verdict, _, _ = self._judge_directional(a)
        return self._record_directional("forward_ad", a, verdict, True)

    def _forward_against_backward_directional(self, a: torch.Tensor) -> bool:
        """Forward AD's ``v·J·u`` against the backward's ``(v·J)·u``, once the backward was verified element by
        element and the finite differences along u were found off: both carry autograd's round-off, so each
        gets the allowance once."""
        state = self.directional_state
        backward = self._project_directional(state["grads"], state["u"])
        allow, _ = self._allowance_directional(screen=False)
        diff = (a - backward).abs()
        tol = 2 * allow
        ok = torch.isfinite(a) & (diff <= tol)
        none = torch.zeros_like(ok)
        verdict = Verdict(
            failed=~ok, kink=none, unchecked=none, numerical=backward, allowed=tol,
            ratio=torch.where(tol > 0, diff / tol.clamp_min(1e-300), torch.zeros_like(diff)), sharp_kink=none,
            left=backward, right=backward,
        )
        self._forward_detail = "directional, against the backward's v·J·u (verified element by element)"
        return self._record_directional("forward_ad", a, verdict, True)

    # ---------------------------------------------------------------------------------------------
    def second_order_check(self) -> None:
        if self.options["order"] == 1:
            return
        from gradcheck_kit._second_order import check_second_order

        check_second_order(self)


@dataclass
class _DirectionalNumerics:
    """``phi(t) = v_k·out_k(x + t·h·u)`` per output and direction: ``values`` ``(points + 1, n_out, d)`` in the
    stencil's order ``[0, +1, -1, +2, -2, ...]`` of which the first ``evaluated`` rows are known; ``fmag``
    (``(n_out, 1)``, ``sum |f(x)|·|v|``) sizes the noise model; ``estimates`` once the whole stencil ran."""

    values: torch.Tensor
    fmag: torch.Tensor
    evaluated: int
    center: bool = True  # row 0 (phi(0)) known: False until f(x) is, where the float64 probe was deferred
    estimates: Estimates | None = None


@dataclass
class _FullNumerics:
    """Raw stencil values of one (input, output) pair in full mode, ``(points, n_i, r)``, and what the
    estimates need besides: the noise of ``f``, each coordinate's step and |x|, and which entries are flat
    (every stencil value identical: f does not depend on that coordinate)."""

    values: torch.Tensor
    sigma: torch.Tensor
    step: torch.Tensor
    x_abs: torch.Tensor
    flat: torch.Tensor


@dataclass
class _Screen:
    """What the ±h screen of one input found: the stencil values, per output the entries where f moved
    (rows, columns, autograd's values there), and sums of squares of autograd's values."""

    known: dict
    candidates: dict = field(default_factory=dict)
    complete: bool = True  # autograd is zero wherever f did not move, for every output
    sumsq: dict = field(default_factory=dict)
    row_rms: dict = field(default_factory=dict)


@dataclass
class _JointScreen:
    """The ±h screen of several small inputs together: per input its stencil values; per output the
    entries where f moved, over the inputs' stacked matrices (``parts``: f(+h), f(-h), step, autograd,
    input position, column, stacked row), and per input the sums of squares and row rms of autograd's
    values (``parts`` and ``row_rms`` as numpy arrays)."""

    known: dict
    inputs: list
    dtype: torch.dtype
    complete: bool = True
    parts: dict = field(default_factory=dict)
    sumsq: dict = field(default_factory=dict)
    row_rms: dict = field(default_factory=dict)

    def screens(self) -> dict[int, "_Screen"]:
        """Per input a ``_Screen`` with its stencil values and sums of squares only (no candidates and no
        row rms: the forward-AD check reads those from the shared screen itself, ``_screen_candidates``)."""
        out = {}
        for p, i in enumerate(self.inputs):
            screen = _Screen(self.known[i])
            screen.sumsq = {k: v[p] for k, v in self.sumsq.items()}
            out[i] = screen
        return out


_CONDITIONING_NOTE = (
    "the float32 directional derivatives differ from float64 autograd's by more than 64 eps, and by no more "
    "than 4 times how far the float64 ones move when the inputs move by 64 float32 roundings: their allowance "
    "was raised to that (an ill-conditioned expression rounds its float32 derivatives that much)"
)


def _relist(verdict: Verdict, entries: torch.Tensor, numerical, tol, diff) -> None:
    """Entries of ``verdict`` judged again against a better numerical value (``_resample``, ``_refine``)."""
    verdict.numerical[entries] = numerical
    verdict.allowed[entries] = tol
    verdict.ratio[entries] = diff / tol.clamp_min(1e-300)


def _approximate_label(out: torch.Tensor, lhs: str, kind: str, x: torch.Tensor, name: str, j: int, r: int) -> str:
    """``d out[2] / d x[0, 1]`` (``d (v·out) / d x[..]`` for a projected row)."""
    index, _ = coord_index(j, x.shape, x.is_complex())
    if kind == "jacobian":
        lhs += format_index(coord_index(r, out.shape, out.is_complex())[0])
    else:
        lhs = f"(v·{lhs})"
    return f"d {lhs} / d {name}{format_index(index)}"


def _alternating(n: int, dtype: torch.dtype) -> torch.Tensor:
    """+1, -1, +1, ... (n values)."""
    return 1.0 - 2.0 * (torch.arange(n) % 2).to(dtype)


def _nudged(t: torch.Tensor, rel: float) -> torch.Tensor:
    """``t`` with each real coordinate moved by ``rel·max(|c|, 1)``, signs alternating (a new tensor)."""
    c = coords(t)
    moved = c + c.abs().clamp_min(1.0) * rel * _alternating(c.numel(), c.dtype).to(c.device)
    return from_coords(moved.unsqueeze(0), t.shape, t.is_complex())[0].to(t.dtype)


def _move_diagonal(points: torch.Tensor, offset: int, steps: torch.Tensor) -> None:
    """``points``: ``(npts, b, n)`` copies of x; moves coordinate ``offset + c`` of ``points[m, c]`` by
    ``steps[m, c]`` (the sum in float64, rounded once to the points' dtype)."""
    moved = points.diagonal(offset=offset, dim1=1, dim2=2)  # (npts, b)
    moved.copy_(moved.to(torch.float64) + steps.to(moved.device))


def _sum_squares(t: torch.Tensor) -> float:
    """Sum of squares of the finite entries (one pass where every entry is finite)."""
    total = float(torch.linalg.vector_norm(t)) ** 2
    if not math.isfinite(total):
        total = float(t.nan_to_num(0.0, posinf=0.0, neginf=0.0).square().sum())
    return total


#: per float dtype: the integer type of its bits, their number, the significand's bits, and 1.0's bits
_FLOAT_BITS = {
    torch.float64: (torch.int64, 64, 52, 0x3FF0000000000000),
    torch.float32: (torch.int32, 32, 23, 0x3F800000),
}


def _rademacher(x: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    """``(d, n)`` ``±scale_of(x)`` in x's dtype (float32 or float64) with independent fair signs, from bit
    operations on the float representation: ``2^round(log2(max(|x|, 1)))`` is the exponent of |x| rounded at
    the significand sqrt(2), floored at 1, and each random word of ``bits`` bits gives that many signs (bit
    ``b`` of word ``w`` the sign of element ``b·m + w``, so that blocks of elements take their signs in one
    operation). One full-size buffer; float32 inputs get float32 directions (powers of two: exact), half the
    memory of float64 ones and no conversion for a float32 forward-mode pass."""
    itype, bits, significand, one = _FLOAT_BITS[x.dtype]
    sign_bit = -(1 << (bits - 1))
    mantissa = (1 << significand) - 1
    # added to the bits of |x| it carries into the exponent exactly when the significand is >= sqrt(2)
    round_up = (1 << significand) - round((math.sqrt(2.0) - 1.0) * 2.0**significand)
    n = x.numel()
    scale = x.view(itype).bitwise_and(~sign_bit).add_(round_up).bitwise_and_(~mantissa)
    scale.clamp_min_(one)  # non-negative floats order like their bits
    u = scale.unsqueeze(0) if d == 1 else scale.expand(d, n).clone()
    flat = u.view(-1)
    total = d * n
    m = -(-total // bits)
    words = _random_words(m, itype, gen)
    for b in range(0, bits, _SIGN_BITS_PER_BLOCK):
        start, stop = b * m, min((b + _SIGN_BITS_PER_BLOCK) * m, total)
        if start >= stop:
            break
        shifts = torch.arange(b, b + _SIGN_BITS_PER_BLOCK, dtype=itype).unsqueeze(1)
        signs = (words.unsqueeze(0) << shifts).bitwise_and_(sign_bit).view(-1)
        flat[start:stop].bitwise_or_(signs[: stop - start])
    return u.view(x.dtype)


def _uniform_vector(shape: Sequence[int], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Independent values ``(2k + 1)/2^16`` for uniform 16-bit integers ``k`` in ``[-2^15, 2^15)``: symmetric,
    never zero, exact in float32 and float64, from 2 random bytes per element (a float32 ``randn`` costs 3x
    as much at 10^6 elements, and any continuous-enough vector serves as v: two equal errors cancel in
    ``v·e`` only where ``|v_i| = |v_j|``, probability 2^-15, against 0 for a Gaussian)."""
    n = math.prod(shape)
    words = _random_words(-(-n // 4), torch.int64, gen)
    v = words.view(torch.int16)[:n].to(dtype)
    return v.mul_(2.0**-15).add_(2.0**-16).view(tuple(shape))  # (2k + 1)/2^16, each step exact


#: from this many random words on, ``_random_words`` draws them from numpy's SFC64 (seeded from ``gen``)
_NUMPY_WORDS = 1 << 12


def _random_words(m: int, itype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """``m`` uniformly random words of integer type ``itype`` (int32 or int64), every bit a fair coin, all
    determined by ``gen``. Many words come from numpy's SFC64 generator, seeded with two words of ``gen``:
    torch's CPU generator (mt19937) takes 1.8 ms for the 250,000 64-bit words of a 10^6-element vector,
    SFC64 0.55 ms; below ``_NUMPY_WORDS`` words its seeding costs more than it saves."""
    info = torch.iinfo(itype)
    if m < _NUMPY_WORDS:
        return torch.randint(info.min, info.max, (m,), generator=gen, dtype=itype)
    seed = torch.randint(0, 2**62, (2,), generator=gen, dtype=torch.int64).tolist()
    per_raw = 64 // info.bits
    raw = np.random.SFC64(seed).random_raw(-(-m // per_raw))  # uint64
    words = torch.from_numpy(raw.view(np.int64 if info.bits == 64 else np.int32))
    return words[:m]


#: sign bits applied per operation in ``_rademacher`` (a temporary of this many words per random word)
_SIGN_BITS_PER_BLOCK = 8
#: elements per chunk of a reduction that would otherwise need a full-size temporary
_CHUNK = 1 << 18


def _scaled_square_sum(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum((g·s)²)`` with NaN counted as 0 and ±inf as the largest float (``nan_to_num``), in chunks (no
    full-size temporary); the cleanup pass runs only where the plain sum is not finite."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, g.numel(), _CHUNK):
        gs = g[start : start + _CHUNK] * s[start : start + _CHUNK].to(torch.float64)
        total += torch.dot(gs, gs)
    if bool(torch.isfinite(total)):
        return total
    return (g * s.to(torch.float64)).nan_to_num_(0.0).square_().sum()


def _size_sq(t: torch.Tensor) -> float:
    """``t·t`` of a flat real vector, as a size (the natural scale's): summed in float32 or float64 as t is
    (float32's rounding of a size does not matter), in float64 where that overflows or t is of lower
    precision."""
    if t.dtype in (torch.float32, torch.float64):
        total = float(torch.dot(t, t))
        if math.isfinite(total):
            return total
    return float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2


def _size_abs_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``sum |a·b|`` of two flat real vectors of one dtype, as a size (the noise model's): like ``_size_sq``."""
    if a.dtype in (torch.float32, torch.float64):
        total = float(torch.mul(a, b).abs_().sum())
        if math.isfinite(total):
            return total
    return float(torch.mul(a.to(torch.float64), b.to(torch.float64)).abs_().sum())


def _dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a·b`` in float64 for flat real vectors of any float dtypes (float64 values of each, exactly), in
    chunks where one is of lower precision (no full-size float64 copy)."""
    if a.dtype == torch.float64 and b.dtype == torch.float64:
        return torch.dot(a, b)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, a.numel(), _CHUNK):
        total += torch.dot(a[start : start + _CHUNK].to(torch.float64), b[start : start + _CHUNK].to(torch.float64))
    return total


def _sum64(t: torch.Tensor) -> torch.Tensor:
    """The sum of a flat real vector in float64, converted chunk by chunk (``sum(dtype=float64)`` of a float32
    vector converts element by element in the reduction's inner loop: 0.95 ms at 10^6 elements, against
    0.5 ms in chunks of ``_CHUNK``)."""
    if t.dtype == torch.float64 or t.numel() <= _CHUNK:
        return t.sum(dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for start in range(0, t.numel(), _CHUNK):
        total += t[start : start + _CHUNK].to(torch.float64).sum()
    return total


def _dot_and_square_sum(u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``u·g`` and ``sum((u·g)²)`` in float64 for flat vectors, u of powers of two times ±1 (``_rademacher``);
    the sum of squares is ``None`` where it is not finite (``_scaled_square_sum`` then counts NaN and inf its
    own way).

    Where u and g share a dtype the products ``u_i·g_i`` are exact in it (a power of two at least 1 only
    moves the exponent; an overflow shows as a non-finite sum), so they are formed there and only summed in
    float64 (``_sum64``, no full-size float64 copy); the sum of squares, a scale, is summed in their dtype
    (float32's rounding of it does not matter). Otherwise one chunked pass in float64."""
    if u.dtype == g.dtype and u.dtype in (torch.float32, torch.float64) and u.device == g.device:
        p = u * g
        dot = _sum64(p)
        squares = torch.dot(p, p).to(torch.float64)
        if bool(torch.isfinite(dot)) and bool(torch.isfinite(squares)):
            return dot.cpu(), squares.cpu()
    dot = torch.zeros((), dtype=torch.float64)
    squares = torch.zeros((), dtype=torch.float64)
    for start in range(0, g.numel(), _CHUNK):
        p = u[start : start + _CHUNK].to(torch.float64) * g[start : start + _CHUNK]
        dot += p.sum()
        squares += torch.dot(p, p)
    return dot, (squares if bool(torch.isfinite(squares)) else None)


def _jvp_within(got, expected, scale2, u_norm, row_rms, extra, policy, measured, nondet_tol) -> bool:
    """Whether forward AD's ``J·u`` (``got``, ``(d, r)``) equals the checked backward Jacobian's ``J·u``
    (``expected``) within autograd's round-off allowance (twice it without a float64 run: both sides carry
    it) of each column's scale ``||u_i|| (row rms_i + extra_i)`` over inputs ``i`` plus
    ``sqrt(scale2)``, ``scale2 = sum (u b)²`` over the entries ``b``: ``|b| + c`` bounds an entry's scale as in
    the backward check, and ``|| u * (|b| + c) || <= || u * b || + c || u ||``. Torch tensors or numpy
    arrays alike."""
    xp = np if isinstance(got, np.ndarray) else torch
    with np.errstate(all="ignore"):
        scale = u_norm @ (row_rms + extra) + xp.sqrt(scale2)
        allow = policy.allowance(scale, measured) * (1.0 if measured is not None else 2.0)
        if nondet_tol:
            allow = allow + nondet_tol * scale.clip(min=1.0)
        return bool((abs(got - expected) <= allow).all())


def _nonfinite_count(t: torch.Tensor) -> int:
    """How many elements of ``t`` are NaN or ±inf. A finite sum proves there are none (a NaN makes the sum
    NaN, an inf makes it inf or NaN, in any order of summation): one reduction without a full-size
    temporary; the count runs only where the sum is not finite (overflow of finite values included)."""
    t = t.detach()
    try:
        if t.numel() == 0 or bool(torch.isfinite(t.sum())):
            return 0
    except Exception:  # noqa: BLE001 - a layout without sum: count directly
        pass
    return int((~torch.isfinite(t)).sum().item())


def _real_of(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _to_double(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            return t.detach().to(torch.complex128).contiguous()
        if t.is_floating_point():
            return t.detach().to(torch.float64).contiguous()
        return t.detach().clone()
    return t
