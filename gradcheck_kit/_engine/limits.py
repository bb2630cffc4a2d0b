"""Every size limit and fixed factor of the checker's pipeline, in one place.

``TUNING`` holds the switches that choose between equivalent computations (a shared ±h screen or one per
input, one vmap over several inputs or one each, functorch's batched rows or one backward per row): they
change how a verdict is computed, never which. Tests set them through :func:`tuned` and read
:attr:`Tuning.calls` to see which path ran.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

#: full mode compares every Jacobian entry up to this many entries, else projections d(v·out)/dx
JACOBIAN_ENTRIES = 1 << 20
#: auto mode uses full mode up to this many Jacobian entries and input coordinates
AUTO_ENTRIES = 1 << 20
AUTO_COORDS = 1 << 13
#: a failed full-mode entry gets a second opinion at steps h/8, h/64, ... (``settle.refine``): this many
#: levels (down to 8^-10 ~ 1e-9 of h), on at most this many coordinates of one input
REFINE_FACTOR = 8.0
REFINE_LEVELS = 10
REFINE_COORDS = 32
#: an estimate whose error estimate is at most this fraction of its value has converged
REFINE_PRECISION = 1e-2
#: a failed full-mode entry within this many tolerances of passing gets a second sample of f's rounding
#: (``settle.resample``): the same stencil at x moved by RESAMPLE_SHIFT of the step
RESAMPLE_RATIO = 64.0
RESAMPLE_SHIFT = 2.0**-10
#: calls of fn the second opinions after a failed comparison may always make (``budget``), however few
#: the rest of the check made: smaller steps down to h / 8^7 along one coordinate (4 calls a level)
SECOND_OPINION_FLOOR = 28
#: ... and as many as take this many seconds (one call timed as the check's plain calls took on average):
#: a cheap fn gets every second opinion, the bound is for expensive ones
SECOND_OPINION_FLOOR_SECONDS = 0.05
#: after a failed directional check, auto mode narrows down inputs up to this many coordinates
NARROW_COORDS = 1 << 16
#: the same where fn cannot run under vmap (one call of fn per point and coordinate)
NARROW_LOOP_COORDS = 1 << 13
#: elements of one batch of perturbed evaluations (inputs + outputs, per point)
EVALUATION_BATCH_ELEMENTS = 1 << 23
#: elements up to which a CPU tensor's small arithmetic (a test, a norm, a scaling) runs in numpy, whose calls
#: cost a fraction of torch's at that size
NUMPY_ELEMENTS = 1 << 12
#: bytes of memory for full mode's points kept between checks, per thread and dtype (``workspace``)
WORKSPACE_BYTES = 1 << 24
#: elements (rows x input coordinates) one batched backward may produce (``analytic``)
BACKWARD_BATCH_ELEMENTS = 1 << 24
#: elements (4 rows x input coordinates) up to which linearity's and zero_grad_output's backwards are one
#: batched backward (``one_vector.batched_passes``); on larger inputs four rows cost more than four passes
STRUCTURAL_BATCH_ELEMENTS = 1 << 14
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
#: point and f(x) in float64 to where it is needed (``setup.choose_numeric_dtype``)
DEFERRED_PROBE_COORDS = 1 << 16
#: full mode computes autograd's rows through vmap over torch.func.vjp up to this many elements (rows x
#: input coordinates), from ``Tuning.functorch_rows`` rows on
FUNCTORCH_ELEMENTS = 1 << 16
#: the ±h screen: one-sided slopes at h differing by this fraction of D(h) may be a kink
KINK_SUSPECT = 1e-2


@dataclass
class Tuning:
    """Switches between equivalent computations; the defaults are the fastest ones."""

    #: inputs whose Jacobians have at most this many entries together (float64, no user rtol) share one ±h
    #: screen: one set of tensor operations over their stacked matrices instead of one per input
    joint_screen_entries: int = 1 << 18
    #: auto mode: a fn that cannot run under vmap is checked along directions (``plan``) where that takes at
    #: most this fraction of a full check's calls (0: never), by the full check where the directions fail
    auto_plan_fraction: float = 0.5
    #: ... found out by one evaluation through vmap, made only where the calls the plan would save take longer
    #: than this many seconds (timed by the forward at the inputs): a vmapped evaluation's own overhead
    auto_plan_probe_seconds: float = 1e-3
    #: the shared ±h screen evaluates its vector and matrix inputs through one vmap up to this many
    #: elements of batched input values (points x coordinates); above it one vmap per input is cheaper, as
    #: it writes and reads only that input's points; see ``stencil.screen_stencil``
    together_elements: int = 1 << 18
    #: full mode computes autograd's rows through vmap over torch.func.vjp from this many rows on (one more
    #: forward, then functorch's batching rules; slower than is_grads_batched for a few rows)
    functorch_rows: int = 64
    #: full mode's ±h screen (``screen``): off, every input runs the whole stencil
    full_screen: bool = True
    #: full mode's entries the ±h screen left open judged on their coordinates alone
    #: (``screen.screen_split``): off, their input runs the whole stencil
    open_entries: bool = True
    #: the directional ±h screen (``screen.screen``): off, every direction runs the whole stencil
    directional_screen: bool = True
    #: the forward-AD check's sums over the screen's nonzero entries (``screen.screen_candidates``): off,
    #: it sums over the dense matrices
    sparse_forward: bool = True
    #: the paths taken, in order, as ``(path, inputs)``: ``"together"`` (one vmap over several inputs),
    #: ``"sparse_forward"`` (the forward-AD check over the screen's nonzero entries); for tests
    calls: list = field(default_factory=list)

    def record(self, path: str, inputs: list) -> None:
        self.calls.append((path, inputs))

    def paths(self, path: str) -> list:
        """The inputs of each time ``path`` was taken."""
        return [inputs for taken, inputs in self.calls if taken == path]


TUNING = Tuning()


@contextmanager
def tuned(**changes) -> Iterator[Tuning]:
    """``TUNING`` with ``changes`` (and an empty call count) inside the block; restored after it."""
    global TUNING
    saved = TUNING
    TUNING = dataclasses.replace(saved, calls=[], **changes)
    try:
        yield TUNING
    finally:
        TUNING = saved
#: ``forward_ad="auto"`` leaves forward AD out of a graph of more than this many of torch's built-in operations
#: and no custom Function (``forward_ad.resolve``)
AUTO_FORWARD_BUILTIN_NODES = 8
