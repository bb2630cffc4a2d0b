"""The state one gradient check carries from stage to stage (:class:`Run`), what the full and the
directional backward leave for the checks after them (:class:`FullState`, :class:`DirectionalState`), and
the results a stage returns (:class:`Results`).

Every attribute of a :class:`Run` is declared in ``__init__``; the stages (``setup``, ``full``,
``directional``, ``forward_ad``, ...) are free functions of it. A stage never writes to a report: it adds
check results, group summaries, mismatches and notes to ``run.out``, the :class:`Results` of the stage the
pipeline (``first_order``) opened, and the pipeline assembles the report from them at the end.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import torch

from gradcheck_kit._engine import approximate, graph
from gradcheck_kit._engine.analytic import DualMemo
from gradcheck_kit._engine.budget import Budget
from gradcheck_kit._engine.evaluate import Evaluator
from gradcheck_kit._engine.tolerances import Stencil
from gradcheck_kit._inputs import is_differentiable


class Failure(Exception):
    """Stop the check and report this message as an error; ``function_failed`` where fn (or its backward)
    raised or returned no tensors, ``cause`` the exception it raised."""

    def __init__(self, message: str, cause: BaseException | None = None, function_failed: bool = False):
        super().__init__(message)
        self.cause = cause
        self.function_failed = function_failed or cause is not None


class NoFloat64(Exception):
    """A deferred float64 probe found that fn does not compute in float64 (or fails) at its point."""


@dataclass
class Results:
    """What a stage found: check results, group summaries, mismatches and notes, in the order found."""

    checks: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    resolution: float | None = None

    def check(self, name: str):
        return next((c for c in self.checks if c.name == name), None)

    def extend(self, other: "Results") -> None:
        self.checks.extend(other.checks)
        self.groups.extend(other.groups)
        self.mismatches.extend(other.mismatches)
        self.notes.extend(other.notes)
        self.errors.extend(other.errors)
        if other.resolution is not None:
            self.resolution = other.resolution


@dataclass
class FullState:
    """What a full backward check leaves for the checks after it: per output the kind of rows, per input
    the numerics (``None`` where the ±h screen settled it), autograd's rows, the float64 reference's, the
    scales added to each entry's, whether each input passed, and the screens; per input whose open entries
    were judged on their coordinates (``settle.judge_open``), those coordinates and f at the stencil's
    points beyond ±h there (per output ``(points, b, r)``)."""

    rows: dict
    analytic: dict
    reference: dict | None
    extra: dict
    prepared: dict
    joint: Any
    estimates: dict = field(default_factory=dict)
    input_passed: dict = field(default_factory=dict)
    screened: list = field(default_factory=list)
    outer: dict = field(default_factory=dict)
    rounding_probe: dict = field(default_factory=dict)  # allowance.cancellation's float64 probe, once made


@dataclass
class DirectionalState:
    """What a directional backward check leaves: the directions ``u``, the numerics along them, autograd's
    ``v·J`` (and the float64 run's, once made), autograd's own gradients, its ``(n_out, d)`` projections
    ``v·J·u`` the verdict compared, the conditioning once computed."""

    u: dict
    numerics: Any
    grads: dict
    raw_grads: dict
    projections: torch.Tensor | None = None
    grads_ref: dict | None = None
    reference_ran: bool = False
    conditioning_ran: bool = False
    conditioning: torch.Tensor | None = None
    ties_split: bool = False  # fn is not differentiable along some tie of the directions, or a tie failed
    tie_decisive: bool = False  # the group rule failed at an exact tie (no narrowed check overrides it)

    @property
    def at_ties(self) -> bool:
        """Whether the ties leave the verdict to a narrowed full check (near-ties: ``tie_groups``)."""
        return self.ties_split and not self.tie_decisive


@dataclass(frozen=True)
class Setup:
    """What one check is given, fixed for its whole run (the stages read it through :class:`Run`, never
    write it): fn, the inputs, which are differentiated and their names, the caller's grad_outputs, the
    resolved options, and what follows from these alone: the inputs that require grad in every call with
    grad enabled (the differentiated ones and those the caller made require grad: a fn that differentiates
    internally may need them to) and the seeds."""

    fn: Callable
    inputs: list
    wrt: list
    names: list
    user_grad_outputs: Any
    options: Mapping
    grad_positions: list
    seed: int
    rng_seed: int

    @classmethod
    def of(cls, fn, inputs, wrt, names, grad_outputs, options) -> "Setup":
        caller_flags = [isinstance(t, torch.Tensor) and t.requires_grad and is_differentiable(t) for t in inputs]
        grad_positions = sorted(set(wrt) | {i for i, flag in enumerate(caller_flags) if flag})
        seed = options["seed"]
        # the lists keep the types the stages compare with (a reproduce line compares ``wrt`` with a list)
        return cls(
            fn, list(inputs), wrt, names, grad_outputs, MappingProxyType(dict(options)), grad_positions, seed,
            (seed * 2654435761 + 97) % (2**63),
        )


def _given(name: str) -> property:
    return property(attrgetter(f"setup.{name}"), doc=f"``setup.{name}`` (read-only)")


class Run:
    """One first-order check of ``fn`` at ``inputs``: its :class:`Setup` (read-only here), then what the
    stages establish and the caches they share."""

    fn = _given("fn")
    inputs = _given("inputs")
    wrt = _given("wrt")
    names = _given("names")
    user_grad_outputs = _given("user_grad_outputs")
    options = _given("options")
    grad_positions = _given("grad_positions")
    seed = _given("seed")
    rng_seed = _given("rng_seed")

    def __init__(self, fn, inputs, wrt, names, grad_outputs, options):
        self.setup = Setup.of(fn, inputs, wrt, names, grad_outputs, options)
        self.gen = torch.Generator().manual_seed(self.seed)  # the random words' generator (it advances)
        self.out = Results()  # the results of the stage that runs now (``stage``)
        # autograd's forward at the inputs (``first_order.forward``)
        self.leaves: dict[int, torch.Tensor] = {}
        self.analytic_args: list = []
        self.mutates_inputs = False
        self.forward_seconds = 0.0
        self.outs: tuple = ()
        self.out_idx: list[int] | None = None  # differentiable outputs; None until the forward ran
        self.output_names: list[str] = []
        self.nonfinite: dict = {}
        self.n_in = self.n_out = 0
        self.mode = ""
        # numerics (``setup``)
        self.extra_evaluations = 0
        self.budget = Budget()  # evaluations of second opinions after a failed comparison (``budget``)
        self.reference = False  # numerics in float64 at low-precision inputs, a float64 autograd run
        self.reference_pending = False  # the float64 probe deferred to the first point
        self.reference_deferred = False  # ... and f(x) in float64 not yet compared with the low-precision outputs
        self.no_reference_reason = ""
        self.low_dtype_name = ""
        self.f0_cache: list | None = None
        self.num_dtype = torch.float64
        self.stencil: Stencil | None = None
        self.evaluator: Evaluator | None = None
        self.v: dict[int, torch.Tensor] = {}
        self.drawn_vectors: dict[int, torch.Tensor] = {}  # v as drawn, in the output's dtype and shape
        self.out_vectors: dict[int, torch.Tensor] = {}  # v as drawn or given, in the output's dtype and shape
        self.quantized: torch.dtype | None = None  # fn's outputs' precision, where a recheck used it
        self.staircase = False  # a recheck found a staircase inside a float64 function
        self.precision_probed = False  # fn's precision inside was looked for (``first_order.own_precision``)
        self.forward_rounding: tuple[float, ...] = ()  # per output: |f64 - low| at x (reference_differs)
        self.coarse: float | None = None  # setup.coarse_eps's result (None: not computed)
        # caches
        self.rms_cache: dict = {}  # rms of inputs and outputs, for the natural derivative scale
        self.natural_parts: dict = {}  # (input, output): the natural scale in each derivative scale
        self.steps: dict[int, torch.Tensor] = {}  # finite-difference step per coordinate, per input
        self.mult_cache: dict[tuple, torch.Tensor] = {}  # stencil multipliers as (points, 1) tensors
        self.probed_batch: dict = {}  # per input or inputs: (points, f there) of the vmap probe (``stencil``)
        self.along_cache: dict = {}  # stencil.stencil_along's evaluations per (input, column, points)
        self.tie_scans: dict = {}  # input -> tie_groups.Ties (or None): directional mode's scan for ties
        self.directional_allowance: dict = {}  # "screen"/"full" -> (allowance, scale): backward and jvp share them
        self.directional_square_sums: dict = {}  # (i, k) -> sum((g·u)²) of autograd's gradient, when finite
        self.conditioning_rows: dict | None | bool = False  # allowance.conditioning's result (False: not computed)
        # what the backward found
        self.not_evaluable: dict[int, int] = {}  # per input: derivatives no stencil could evaluate
        self.zero_grad_rows: dict | None = None  # full mode: the zero grad_output's gradient (structural)
        self.signed_rows: dict | None = None  # full mode: b(c) and b(-c) batched with the rows (``one_vector``)
        self.full: FullState | None = None
        self.directional: DirectionalState | None = None
        self.n_directions = 0
        self.jvp_projections: Any = None  # forward AD's v·J·u, computed with the directional backward
        self.jvp_joint_low = False  # ... by one pass for every input in low precision (``autograd_rows.jvp_projection``)
        self.dual = DualMemo()  # what forward-mode passes found out (``analytic.DualMemo``)
        self.dual_calls = -1  # fn's evaluations (``evaluator.calls``) when ``dual`` kept its outputs
        self.refined_resolved = False  # a second opinion at a smaller step passed some entry (settle.refine)
        self.tie_failures: list[tuple[int, list[int], str]] = []  # (input, members, text) of ties judged wrong
        self.cost_plan = False  # auto mode chose directional for its fewer calls (``plan``): full on failure
        self.tier_screen = False  # ... whose directions failed within the approximate tier (``screen.tier_screens``)
        self.tier_pending: dict[int, list] = {}  # per input: what its ±h screen passed within that tier (``screen``)
        self.directional_superseded = False  # auto mode's narrowed full check overrode the directional failure
        self.forward_detail: str | None = None
        self.forward_ad: bool | str = self.options["forward_ad"]  # as resolved for fn's graph (``forward_ad.resolve``)
        self.forward_ad_builtin = 0  # the built-in operations of fn's graph where "auto" left forward AD out
        self.forward_ad_without_jvp: list[str] = []  # custom Functions without a jvp for which "auto" left it out
        self.approximate = approximate.Tally()  # derivatives within the approximate tier (one note)
        self.graph_cache: graph.Facts | None = None

    @property
    def graph(self) -> graph.Facts:
        """What the graph of autograd's forward at the inputs holds (its differentiable outputs'), walked once."""
        if self.graph_cache is None:
            self.graph_cache = graph.facts([self.outs[k] for k in self.out_idx or ()])
        return self.graph_cache

    @property
    def f0(self) -> list[torch.Tensor]:
        """f(x) per differentiable output (float64 coordinates) in the numerics' dtype; where the float64 probe
        was deferred, evaluated on first need (a screened directional pass never needs it)."""
        if self.f0_cache is None:
            self.f0_cache = self.evaluator.outputs_at({})
        return self.f0_cache

    @contextmanager
    def stage(self, start: Results | None = None) -> Iterator[Results]:
        """Collect what the code inside the block finds in a fresh :class:`Results` (or after ``start``'s),
        which the caller keeps, replaces or drops; where the block raises, what it found so far joins the
        enclosing results."""
        saved, self.out = self.out, (Results() if start is None else start)
        try:
            yield self.out
        except BaseException:
            saved.extend(self.out)
            raise
        finally:
            self.out = saved
