"""Calling the checked function: safely, with its randomness fixed, batched through vmap when it can be.

Every call of ``fn`` starts from the same global RNG state (derived from the check's seed), so a
function that draws random numbers (dropout) is the same function at every point; the caller's RNG
state is restored by the checker afterwards (one check at a time across threads: ``_state``). Batched evaluation uses ``torch.func.vmap``; functions vmap
cannot run (custom ``autograd.Function`` without a vmap rule, ``.item()``) fall back to a
Python loop, and the report says which path ran.

Under vmap, random draws are made once per batch and shared by its points (``RANDOMNESS``): each point
sees the draws a call from that RNG state makes, as one call per point would (the first batch's first
point is compared with such a call, ``Evaluator._check_vmap_entry``; a function whose draws vmap cannot
share raises, and is evaluated point by point).

Numeric evaluations run without autograd. A function that differentiates internally (forces as the
gradient of an energy, a gradient penalty) cannot: when a call without grad raises, the same call is
tried once more with grad enabled and the differentiated inputs requiring grad, and where that runs, every
later call does so too (``Evaluator.grad_inside`` holds the first error, for the report). A call that
fails either way raises :class:`EvaluationFailed`, which the checker reports instead of crashing.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gradcheck_kit._engine.intermediates import input_rounding
from gradcheck_kit._engine.limits import NUMPY_ELEMENTS
from gradcheck_kit._engine.reasons import vmap_reason
from gradcheck_kit._inputs import batched_coords, coords64, from_coords, is_differentiable, layout_clone
from gradcheck_kit.errors import FunctionError
from gradcheck_kit._engine.tolerances import coarsest_precision, within_roundings

__all__ = [
    "Evaluator", "EvaluationFailed", "NONE_OUTPUT", "as_outputs", "describe_exception", "is_none_output",
    "seed_global_rng",
]


class EvaluationFailed(Exception):
    """fn raised, returned something other than tensors, or changed its outputs' shapes at a point the kit
    evaluated near the inputs. ``what``: that, in words (``"raised ValueError: ..."``); ``cause``: the
    exception fn raised (``None`` where it returned something wrong)."""

    def __init__(self, what: str, cause: BaseException | None = None):
        super().__init__(what)
        self.what = what
        self.cause = cause


def with_grad_inputs(args: Sequence[Any], positions: Sequence[int]) -> list:
    """``args`` with the floating-point tensors at ``positions`` as fresh leaves that require grad (sharing
    storage: for a function that differentiates internally)."""
    return [
        a.detach().requires_grad_(True)
        if j in positions and isinstance(a, torch.Tensor) and is_differentiable(a)
        else a
        for j, a in enumerate(args)
    ]


def seed_global_rng(seed: int) -> None:
    """Reset the global RNG the function draws from (cheap: ``torch.manual_seed`` also queues lazy
    seeding of every accelerator, which formats a stack trace on each call)."""
    torch.default_generator.manual_seed(seed)
    if _CUDA_BUILT and torch.cuda.is_initialized() and torch.cuda.is_available():  # the cheap tests first
        torch.cuda.manual_seed_all(seed)


#: whether this torch was built with CUDA (or ROCm): without, ``torch.cuda`` is never initialized
_CUDA_BUILT = torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None


def fresh_args(
    inputs: Sequence[Any], wrt: Sequence[int], requires_grad: Sequence[int] | None = None,
    convert: Callable[[torch.Tensor], torch.Tensor] = layout_clone, only_floating: bool = False,
) -> tuple[list, dict[int, torch.Tensor]]:
    """Arguments for one call of fn with grad, and its leaves at ``wrt``: each tensor (each floating or
    complex one where ``only_floating``; the others as given) through ``convert`` (a copy with the same
    layout, storage of its own), requiring grad at ``requires_grad`` (default ``wrt``)."""
    grad = set(wrt if requires_grad is None else requires_grad)
    args, leaves = [], {}
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and (not only_floating or t.is_floating_point() or t.is_complex()):
            clone = convert(t)
            if i in grad:
                clone = clone.detach().requires_grad_(True)
            if i in wrt:
                leaves[i] = clone
            args.append(clone)
        else:
            args.append(t)
    return args, leaves


#: vmap's first batch entry may differ from one plain call by this many roundings of the values' precision
VMAP_ROUNDINGS = 64

#: the package's directory (this module sits in its _engine): frames there are the kit's own
_PACKAGE_DIRS = {str(Path(__file__).parents[1]), str(Path(__file__).resolve().parents[1])}


def describe_exception(exc: BaseException) -> str:
    # the innermost frame outside this package: where fn is a builtin (torch.pdist) there is none, and
    # naming the kit's own call site would point the reader at the wrong code
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not any(d in f.filename for d in _PACKAGE_DIRS)
    ]
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return exception_text(exc) + where


def exception_text(exc: BaseException) -> str:
    """``"Type: first line of the message"``: what the exception says, without where it was raised."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"


#: stands for a ``None`` item of fn's outputs (``(loss, None)``): a tensor nothing differentiates
NONE_OUTPUT = torch.zeros(0, dtype=torch.bool)


def is_none_output(out: Any) -> bool:
    return out is NONE_OUTPUT


def as_outputs(result: Any) -> tuple:
    """The function's result as a tuple of tensors; ``None`` items become :data:`NONE_OUTPUT` (skipped,
    never differentiated); anything else is a :class:`FunctionError`."""
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, (tuple, list)) and result:
        bad = [i for i, r in enumerate(result) if not isinstance(r, torch.Tensor) and r is not None]
        if bad:
            i = bad[0]
            raise FunctionError(
                f"fn returned a {type(result).__name__} whose item {i} is a {type(result[i]).__name__}, not a tensor"
            )
        if all(r is None for r in result):
            raise FunctionError(f"fn returned a {type(result).__name__} of None only; it must return a tensor")
        return tuple(NONE_OUTPUT if r is None else r for r in result)
    raise FunctionError(
        f"fn returned {type(result).__name__}"
        + (" (empty)" if isinstance(result, (tuple, list)) else "")
        + "; it must return a tensor or a tuple/list of tensors"
    )


def _own_eps(t: torch.Tensor) -> float:
    """The rounding unit of ``t``'s dtype (0 for integers and booleans): at most ``_value_eps(t)``."""
    return torch.finfo(t.dtype).eps if t.is_floating_point() or t.is_complex() else 0.0


def _value_eps(t: torch.Tensor) -> float:
    """The rounding unit of ``t``'s values: its dtype's, or a lower precision's where every value is one
    (a float64 output computed in float32 inside)."""
    own = _own_eps(t)
    if not own:
        return 0.0
    real = torch.view_as_real(t) if t.is_complex() else t
    low = coarsest_precision([real], finer_than=own, finite_only=False)
    return own if low is None else torch.finfo(low).eps


#: vmap's treatment of random draws: one draw per batch, the same for every point (each point of a
#: batch starts from the same RNG state, as each call of fn does)
RANDOMNESS = "same"


def vmap_call(at: Callable, batches: Sequence[torch.Tensor]) -> tuple:
    """``torch.func.vmap(at, randomness=RANDOMNESS)(*batches)`` for tensors batched along their first dimension,
    all of one batch size, and an ``at`` returning a tuple of tensors: the batching calls that
    ``torch.func.vmap`` makes, without its argument checks and tree handling, which those facts make moot
    (they cost several times a small function's batched call)."""
    if len({b.shape[0] for b in batches}) != 1 or not lean_vmap_works() or _is_exporting():
        return torch.func.vmap(at, randomness=RANDOMNESS)(*batches)
    return _lean(at, batches)


def _lean(at: Callable, batches: Sequence[torch.Tensor]) -> tuple:
    """``torch._functorch.vmap._flat_vmap``'s calls, for ``vmap_call``."""
    _load_vmap_decompositions()
    size = batches[0].shape[0]
    level = _functorch._vmap_increment_nesting(size, RANDOMNESS)
    try:
        outs = at(*[_functorch._add_batch_dim(b, 0, level) for b in batches])
        return tuple(_functorch._remove_batch_dim(o, level, size, 0) for o in outs)
    finally:
        _functorch._vmap_decrement_nesting()


try:  # the batching calls behind torch.func.vmap
    from torch._C import _functorch
    from torch._functorch.vmap import lazy_load_decompositions as _load_vmap_decompositions
    from torch.compiler import is_exporting as _is_exporting  # torch.export traces vmap its own way
except ImportError:  # pragma: no cover - torch.func.vmap itself
    _functorch = None

_LEAN: list = []  # whether ``_lean`` gives what torch.func.vmap gives, once tried


def lean_vmap_works() -> bool:
    """Whether this torch's batching calls take the arguments ``_lean`` passes and give torch.func.vmap's
    values, tried once on a two-output function of two batched tensors (one output not batched): a torch
    where they differ gets torch.func.vmap."""
    if not _LEAN:
        _LEAN.append(_try_lean())
    return _LEAN[0]


def _try_lean() -> bool:
    if _functorch is None:
        return False
    try:
        a = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]], dtype=torch.float64)
        b = torch.tensor([[2.0], [-1.0], [3.0]], dtype=torch.float64)
        at = lambda x, y: (x * y, (x + y).sum(), torch.ones(2, dtype=torch.float64))  # noqa: E731
        got, want = _lean(at, [a, b]), torch.func.vmap(at, randomness=RANDOMNESS)(a, b)
        return isinstance(got, tuple) and len(got) == 3 and all(
            g.shape == w.shape and torch.equal(g, w) for g, w in zip(got, want)
        )
    except Exception:  # noqa: BLE001 - any failure: torch.func.vmap
        return False


def within_own_roundings(got: torch.Tensor, want: torch.Tensor, extra: float) -> bool:
    """Whether ``got`` lies within ``VMAP_ROUNDINGS`` roundings of ``want``'s own dtype (``within_roundings``
    finds no bad element), in numpy for a small real float32/float64 pair on the CPU (a few numpy calls
    instead of a dozen torch ops), else through ``within_roundings``."""
    eps = _own_eps(want)
    if not (got.dtype == want.dtype and want.dtype in _HOST_DTYPES and want.device.type == "cpu"
            and got.device.type == "cpu" and want.numel() <= NUMPY_ELEMENTS):
        return not bool(within_roundings(got, want, eps, VMAP_ROUNDINGS, extra).bad.any())
    g = got.detach().resolve_neg().numpy().astype(np.float64)
    w = want.detach().resolve_neg().numpy().astype(np.float64)
    size = np.abs(w)
    scale = float(np.where(np.isfinite(size), size, 0.0).max()) if w.size else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        allowed = VMAP_ROUNDINGS * eps * (size + scale) + extra
        bad = ~(np.abs(g - w) <= allowed) & ~(np.isnan(g) & np.isnan(w))
    return not bool(bad.any())


_HOST_DTYPES = (torch.float32, torch.float64)


class _VmapMismatch(Exception):
    """Internal: fn under vmap gives other values than one call per point (its vmap rule)."""


class Evaluator:
    """Evaluates ``fn`` on numeric copies of the inputs (no autograd), one point or a batch of points."""

    def __init__(
        self,
        fn: Callable,
        base_args: Sequence[Any],
        output_indices: Sequence[int],
        rng_seed: int,
        fresh_copies: bool = False,
        borrowed: Sequence[int] = (),
        grad_inputs: Sequence[int] = (),
        out_shapes: Sequence[tuple] | None = None,
        grad_inside: str | None = None,
    ):
        self.fresh_copies = fresh_copies  # fn modifies its inputs: give every call its own copy
        # positions whose base tensor is the caller's own (read here, never handed to fn: a call that would
        # pass it unchanged gets a copy)
        self.borrowed = frozenset(borrowed)
        self.fn = fn
        self.base_args = list(base_args)
        self.output_indices = list(output_indices)
        self.rng_seed = rng_seed
        self.evaluations = 0
        self.calls = 0  # calls of fn: one per point in a loop, one per batch under vmap
        self.fastest_call = float("inf")  # seconds of the shortest plain call (``call``)
        self.vmap_failed: str | None = None
        # vmap of fn checked against one plain call (on first use); what differed, where it did
        self.vmap_checked = False
        self.vmap_mismatch: str | None = None
        self.nondet_tol = 0.0  # how far two calls at one point may differ (the check's nondet_tol)
        self.used_vmap = False
        self.used_loop = False
        # inputs that require grad in a call with grad enabled (the differentiated ones)
        self.grad_inputs = frozenset(grad_inputs)
        # shapes of the differentiable outputs at the inputs as given (a point giving others fails)
        self.out_shapes = None if out_shapes is None else [tuple(s) for s in out_shapes]
        # why calls run with grad enabled (fn raised without it), or None while they need not
        self.grad_inside = grad_inside

    def _fresh(self, args: Sequence[Any], keep: Sequence[int] = ()) -> list:
        """``args`` for a call of fn: copies of every tensor when fn modifies its inputs, else copies of the
        borrowed base tensors still among them; positions in ``keep`` are replaced by the caller."""
        if not self.fresh_copies and not self.borrowed:
            return list(args)
        return [
            a.clone()
            if isinstance(a, torch.Tensor)
            and j not in keep
            and (self.fresh_copies or (j in self.borrowed and a is self.base_args[j]))
            else a
            for j, a in enumerate(args)
        ]

    def call(self, args: Sequence[Any]) -> tuple:
        """fn's outputs at ``args``; :class:`EvaluationFailed` where it fails there."""
        started = time.perf_counter()
        try:
            return self._call(args)
        finally:
            self.calls += 1
            self.fastest_call = min(self.fastest_call, time.perf_counter() - started)

    def _call(self, args: Sequence[Any]) -> tuple:
        if self.grad_inside is None:
            seed_global_rng(self.rng_seed)
            try:
                if torch.is_grad_enabled():
                    with torch.no_grad():
                        result = self.fn(*self._fresh(args))
                else:  # (a loop of calls under one no_grad: ``batched``)
                    result = self.fn(*self._fresh(args))
            except Exception as exc:  # noqa: BLE001 - maybe it differentiates internally: once more with grad
                try:
                    result = self._call_with_grad(args)
                except Exception:  # noqa: BLE001 - it fails either way: what it said first
                    raise EvaluationFailed(f"raised {describe_exception(exc)}", exc) from None
                self.grad_inside = describe_exception(exc)
        else:
            try:
                result = self._call_with_grad(args)
            except Exception as exc:  # noqa: BLE001
                raise EvaluationFailed(f"raised {describe_exception(exc)}", exc) from None
        try:
            outs = as_outputs(result)
        except FunctionError as exc:  # "returned NoneType", "returned a tuple whose item 1 is a int, ..."
            raise EvaluationFailed(str(exc).removeprefix("fn ").split("; it must")[0]) from None
        if self.grad_inside is not None:
            outs = tuple(o.detach() for o in outs)
        if len(outs) <= max(self.output_indices, default=-1):
            raise EvaluationFailed(f"returned {len(outs)} output(s), fewer than at the inputs as given")
        self._check_shapes([outs[k].shape for k in self.output_indices])
        return outs

    def _call_with_grad(self, args: Sequence[Any]) -> Any:
        seed_global_rng(self.rng_seed)
        with torch.enable_grad():
            return self.fn(*with_grad_inputs(self._fresh(args), self.grad_inputs))

    def _check_shapes(self, shapes: Sequence[tuple], batched: bool = False) -> None:
        if self.out_shapes is None:
            return
        for k, got, want in zip(self.output_indices, shapes, self.out_shapes):
            got = tuple(got)[1:] if batched else tuple(got)
            if got != want:
                raise EvaluationFailed(f"returned output {k} of shape {got} (at the inputs as given: {want})")

    def outputs_at(self, replacements: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """Real coordinates (float64, flat) of the differentiable outputs at one point."""
        outs = self.raw_outputs_at(replacements)
        return [coords64(outs[k]) for k in self.output_indices]

    def raw_outputs_at(self, replacements: dict[int, torch.Tensor]) -> tuple:
        """fn's outputs at one point (the base arguments with ``replacements``), as it returned them."""
        args = list(self.base_args)
        for i, t in replacements.items():
            args[i] = t
        outs = self.call(args)
        self.evaluations += 1
        return outs

    def batched(self, i: int, points: torch.Tensor, shape: Sequence[int], complex_: bool) -> list[torch.Tensor]:
        """``points``: ``(B, n_coords)`` values of input ``i`` (moved to its device); returns per output
        ``(B, n_out_coords)`` float64 on the CPU."""
        batch = from_coords(points, shape, complex_).to(self.base_args[i].device)
        self.evaluations += batch.shape[0]
        if self.vmap_failed is None and self.grad_inside is None:
            try:
                result = self._vmapped([i], [batch], self._fresh(self.base_args, keep=(i,)))
                self.used_vmap = True
                return result
            except Exception as exc:  # noqa: BLE001 - any failure of vmap means: use the loop
                self.vmap_failed = vmap_reason(exception_text(exc))
        self.used_loop = True
        rows = []
        with torch.no_grad():  # (a call that needs grad enables it itself: ``_call_with_grad``)
            for b in range(batch.shape[0]):
                args = list(self.base_args)
                args[i] = batch[b]
                outs = self.call(args)
                rows.append([coords64(outs[k]) for k in self.output_indices])
        return [torch.stack([r[o] for r in rows]) for o in range(len(self.output_indices))]

    def batched_together(self, inputs: Sequence[int], batches: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
        """``batches[p]``: ``(B, *shape)`` values of input ``inputs[p]`` at the same ``B`` points; ``f`` at
        each point through one vmap over all of them, per output ``(B, n_out_coords)``. ``None`` where vmap
        cannot run it so (the caller evaluates input by input then)."""
        if self.vmap_failed is not None or self.fresh_copies or self.grad_inside is not None:
            return None
        try:
            outs = self._vmapped(inputs, batches, self._fresh(self.base_args, keep=inputs))
        except Exception:  # noqa: BLE001 - input by input decides (and says why vmap cannot run fn)
            return None
        self.evaluations += batches[0].shape[0]
        self.used_vmap = True
        return outs

    def _at(self, inputs: Sequence[int], fixed: list) -> Callable:
        """fn of the values of ``inputs``, the other arguments ``fixed``: its differentiable outputs."""

        def at(*xs: torch.Tensor):
            args = list(fixed)
            for i, x in zip(inputs, xs):
                args[i] = x
            outs = as_outputs(self.fn(*args))
            return tuple(outs[k] for k in self.output_indices)

        return at

    def _vmapped(self, inputs: Sequence[int], batches: Sequence[torch.Tensor], fixed: list) -> list[torch.Tensor]:
        """``f`` through one vmap over ``batches`` (the values of ``inputs``), the other arguments ``fixed``."""

        at = self._at(inputs, fixed)
        seed_global_rng(self.rng_seed)
        self.calls += 1
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs = vmap_call(at, batches)
        self._check_shapes([o.shape for o in outs], batched=True)
        if not self.vmap_checked:
            self._check_vmap_entry(list(inputs), at, batches, outs)
        return [batched_coords(o).to("cpu", torch.float64) for o in outs]

    def _check_vmap_entry(
        self, inputs: list[int], at: Callable, batches: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]
    ) -> None:
        """The first vmapped batch's first entry against one plain call at that point: a custom Function
        whose vmap rule mixes batch entries must not become the numerical side's values."""
        self.vmap_checked = True
        plain = self._at(inputs, self._fresh(self.base_args, keep=()))  # fn may modify its inputs: copies

        seed_global_rng(self.rng_seed)
        with torch.no_grad():
            single = plain(*(b[0] for b in batches))
        self.evaluations += 1
        self.calls += 1
        for k, (got, want) in enumerate(zip(outs, single)):
            got, want = got[0].detach().to("cpu"), want.detach().to("cpu")
            if got.shape != want.shape:
                self.vmap_mismatch = f"output {k} of the first batch entry has shape {tuple(got.shape)}, not {tuple(want.shape)}"
                break
            if not want.numel() or torch.equal(got, want):  # the usual case: the same values
                continue
            # within the roundings of the output's own dtype (a batched matmul rounds other than one matmul):
            # agreed, as the allowance below only grows from there
            if within_own_roundings(got, want, self.nondet_tol):
                continue
            value_eps = _value_eps(want)
            inner = input_rounding([b[0] for b in batches], value_eps, VMAP_ROUNDINGS)
            agreement = within_roundings(got, want, value_eps, VMAP_ROUNDINGS, self.nondet_tol + inner)
            if bool(agreement.bad.any()):
                self.vmap_mismatch = (
                    f"output {k} of the first batch entry differs from one call at that point by "
                    f"{float(agreement.diff[agreement.bad].max()):.2g}"
                )
                break
        if self.vmap_mismatch is not None:
            self.vmap_failed = "fn under vmap gives other values than one call per point"  # no more vmap
            raise _VmapMismatch(self.vmap_mismatch)

    @property
    def path(self) -> str:
        if self.vmap_mismatch is not None:
            return "loop (fn under vmap gives other values than one call per point: evaluated point by point)"
        if self.vmap_failed is not None:
            return f"loop ({self.vmap_failed}: evaluated point by point)"
        if self.used_loop:  # vmap not tried: fn differentiates internally, which runs with grad, one call each
            return "loop (fn differentiates internally)"
        return "vmap" if self.used_vmap else "direct"


def differentiable_output_indices(outs: Sequence[torch.Tensor]) -> list[int]:
    return [k for k, o in enumerate(outs) if is_differentiable(o)]
