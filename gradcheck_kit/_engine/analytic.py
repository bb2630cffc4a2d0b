"""The autograd side: vector-Jacobian products (backward) and Jacobian-vector products (forward AD).

Rows of ``V·J`` are computed in batches through ``is_grads_batched`` or, for many rows, through
``vmap`` over ``torch.func.vjp`` (functorch has batching rules where ``is_grads_batched``'s older vmap
runs slowly, conv1d's backward among them); columns ``J·u`` through ``vmap(jvp)``. When torch cannot batch
a function (a custom ``autograd.Function`` without a vmap rule) the same products are computed one at a
time. ``is_grads_batched`` is never tried through a graph holding a custom ``autograd.Function`` (a
backward reading ``grad_output.data`` crashes the process there; see ``graph``), nor where the first
row's plain backward ran Python code (a hook): one backward per row.
``vmap`` over ``torch.func.vjp`` may still run such a Function, as functorch raises on ``.data`` and on
storage access instead of crashing (the rows then come one backward at a time). Results come back as real coordinates in float64, so a
complex input's gradient ``g`` reads as ``(Re g, Im g)`` per element (torch's convention: for a real
loss ``L``, ``g = dL/d(re) + i dL/d(im)``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD

from gradcheck_kit._engine.evaluate import (
    as_outputs, describe_exception, exception_text, seed_global_rng, with_grad_inputs,
)
from gradcheck_kit._engine.reasons import forward_ad_reason
from gradcheck_kit._engine.graph import PythonInBackward, python_function_nodes
from gradcheck_kit._inputs import batched_coords, coords, from_coords, layout_clone
from gradcheck_kit._engine.limits import BACKWARD_BATCH_ELEMENTS

try:  # the engine call behind torch.autograd.grad (torch >= 2.3), and the batching of its batched form
    from torch.autograd.graph import _engine_run_backward
    from torch import _vmap_internals
except ImportError:  # pragma: no cover - older torch: torch.autograd.grad itself
    _engine_run_backward = _vmap_internals = None

__all__ = [
    "plain_grad", "watched_grad", "batched_grad", "vjp_rows", "vjp_rows_functorch", "jvp_columns", "jvp_directions", "forward_pass", "ForwardADUnsupported",
    "rows_from_coords", "DualMemo",
]



class ForwardADUnsupported(RuntimeError):
    """The function cannot be differentiated in forward mode; ``reason`` says why in a few words."""

    def __init__(self, message: str | Callable[[], str], reason: str):
        super().__init__(message if isinstance(message, str) else "")
        self._message = message
        self.reason = reason

    def __str__(self) -> str:
        # a callable: the text built where it is read (the check reads ``reason`` only; walking the traceback
        # for where fn raised costs as much as a small function's forward-mode pass)
        return self._message if isinstance(self._message, str) else self._message()


@dataclass
class DualMemo:
    """What one check's forward-mode passes found out, for its later passes and checks: whether fn's pass
    needs grad (``True``: without grad it raised, or fn's numerical evaluations did; ``None``: not known),
    and fn's outputs at the inputs as given from the latest pass that keeps them (``keep``): their primal
    values, which a plain call there returns too."""

    grad: bool | None = None
    outputs: tuple | None = None


def rows_from_coords(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``(r, n_out_coords)`` float64 -> ``(r, *out.shape)`` in the output's dtype and on its device (complex
    rebuilt)."""
    shaped = from_coords(rows, out.shape, out.is_complex())
    return shaped.to(device=out.device, dtype=out.dtype)


def plain_grad(outputs: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor]):
    """``torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=True, allow_unused=True)``; where every
    tensor is a plain one and each ``grad_output`` has its output's shape, dtype and device (what
    ``torch.autograd.grad`` checks and converts before its engine call), the engine call alone: a small
    function's backward costs less than that argument handling."""
    outputs, leaves, grad_outputs = tuple(outputs), tuple(leaves), tuple(grad_outputs)
    return _grad(outputs, leaves, grad_outputs, _engine_ready(outputs, leaves, grad_outputs, 0))


def watched_grad(outputs: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor]):
    """``plain_grad`` watched for Python code the engine calls (``graph.PythonInBackward``): the gradients
    and whether such code ran. The arguments are checked before the watch starts (every Python call
    inside it is an event the watch handles)."""
    outputs, leaves, grad_outputs = tuple(outputs), tuple(leaves), tuple(grad_outputs)
    direct = _engine_ready(outputs, leaves, grad_outputs, 0)
    with PythonInBackward() as probe:
        grads = _grad(outputs, leaves, grad_outputs, direct)
    return grads, probe.ran


def _grad(outputs: tuple, leaves: tuple, grad_outputs: tuple, direct: bool) -> tuple:
    """The engine call alone where ``direct``, else ``torch.autograd.grad``; retaining the graph, unused leaves
    given None."""
    if direct:
        return _engine(outputs, grad_outputs, leaves)
    return torch.autograd.grad(outputs, leaves, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True)


def _engine(outputs: tuple, grad_outputs: tuple, leaves: tuple) -> tuple:
    """``torch.autograd.grad``'s engine call (graph retained, unused leaves allowed, nothing accumulated)."""
    return _engine_run_backward(outputs, grad_outputs, True, False, leaves, True, accumulate_grad=False)


def batched_grad(outputs: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor]):
    """``torch.autograd.grad(..., retain_graph=True, allow_unused=True, is_grads_batched=True)`` (warnings
    silenced); the engine call under torch's batching alone where the arguments are what that call checks
    for (plain tensors, each ``grad_output`` of its output's dtype and device and shape after the batch
    dimension)."""
    outputs, leaves, grad_outputs = tuple(outputs), tuple(leaves), tuple(grad_outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _engine_ready(outputs, leaves, grad_outputs, 1) and len({g.shape[0] for g in grad_outputs}) == 1:
            return _batched_engine(outputs, leaves, grad_outputs)
        return torch.autograd.grad(
            outputs, leaves, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True, is_grads_batched=True,
        )


def _batched_engine(outputs: tuple, leaves: tuple, grad_outputs: tuple) -> tuple:
    """The engine call under torch's batching, as ``torch.autograd.grad(..., is_grads_batched=True)`` makes it."""
    if _BATCH_DIMS:  # what torch's batching (``_vmap_internals._vmap``) does for a tuple of tensors
        size = grad_outputs[0].shape[0]
        level = torch._C._vmapmode_increment_nesting()
        try:
            batched = tuple(torch._add_batch_dim(g, 0, level) for g in grad_outputs)
            grads = _engine(outputs, batched, leaves)
            return tuple(None if g is None else torch._remove_batch_dim(g, level, size, 0) for g in grads)
        finally:
            torch._C._vmapmode_decrement_nesting()

    def vjp(grad_output):
        return _engine(outputs, grad_output, leaves)

    return _vmap_internals._vmap(vjp, 0, 0, allow_none_pass_through=True)(grad_outputs)


_BATCH_DIMS = all(hasattr(torch._C, n) for n in ("_vmapmode_increment_nesting", "_vmapmode_decrement_nesting")) and all(
    hasattr(torch, n) for n in ("_add_batch_dim", "_remove_batch_dim")
)


def _engine_ready(outputs: tuple, leaves: tuple, grad_outputs: tuple, batch: int) -> bool:
    """Whether the engine may be called directly: what ``torch.autograd.grad`` checks and converts holds."""
    return (
        bool(leaves) and len(outputs) == len(grad_outputs)
        and all(type(t) in _PLAIN for t in (*outputs, *leaves, *grad_outputs))
        and all(
            g.shape[batch:] == o.shape and g.dim() == o.dim() + batch and g.dtype == o.dtype and g.device == o.device
            for o, g in zip(outputs, grad_outputs)
        )
        and direct_calls_work()
    )


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_DIRECT: list = []  # whether the direct engine calls work, once tried


def direct_calls_work() -> bool:
    """Whether this torch's private engine entry points give what ``torch.autograd.grad`` gives, tried once
    on a two-element graph, plain and batched: a torch whose entry points differ gets the public calls."""
    if not _DIRECT:
        _DIRECT.append(_try_direct_calls())
    return _DIRECT[0]


def _try_direct_calls() -> bool:
    if _engine_run_backward is None or _vmap_internals is None:
        return False
    try:
        with torch.enable_grad():
            x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
            y = x * x
            g = torch.tensor([[1.0, 3.0], [-2.0, 0.5]], dtype=torch.float64)
            (plain,) = _engine((y,), (g[0],), (x,))
            (batched,) = _batched_engine((y,), (x,), (g,))
        return x.grad is None and plain.tolist() == [2.0, 12.0] and batched.tolist() == [[2.0, 12.0], [-4.0, 2.0]]
    except Exception:  # noqa: BLE001 - any failure: the public calls
        return False


def vjp_rows(
    output: torch.Tensor,
    leaves: Sequence[torch.Tensor],
    rows: torch.Tensor,
) -> tuple[list[torch.Tensor], list[bool], str]:
    """``rows``: ``(r, n_out_coords)``. Returns per leaf ``(r, n_leaf_coords)`` float64, whether any
    gradient flowed to each leaf, and the path used (``batched``, ``single`` or ``loop``, with why where the
    graph holds a custom ``autograd.Function`` or a Python hook: never batched through them, see ``graph``)."""
    r = rows.shape[0]
    if not output.requires_grad:
        zeros = [torch.zeros(r, _n(leaf), dtype=torch.float64) for leaf in leaves]
        return zeros, [False] * len(leaves), "none"
    per_leaf_cols = sum(_n(leaf) for leaf in leaves)
    chunk = max(1, min(r, BACKWARD_BATCH_ELEMENTS // max(per_leaf_cols, 1)))
    results: list[list[torch.Tensor]] = [[] for _ in leaves]
    flowed = [False] * len(leaves)
    path = "batched"
    if r == 1:
        path = "single"
    else:
        custom = python_function_nodes([output])
        if custom:  # a batched backward could crash the process there (``graph``): one row at a time
            path = f"loop (custom autograd.Function in the graph: {', '.join(custom[:3])})"
    start = 0
    if path == "batched" and output.device.type == "cpu":
        # the first row through one plain backward, watched for Python code the engine calls (a hook
        # could crash a batched backward the same way: ``graph``)
        first, ran = watched_grad([output], leaves, [rows_from_coords(rows[:1], output)[0]])
        _add_block(results, flowed, [None if g is None else g.unsqueeze(0) for g in first], leaves, 1)
        start = 1
        if ran:
            path = "loop (Python code runs in the backward: a hook)"
        elif r <= chunk:  # one batched call takes every row, the first again: no concatenation of the blocks
            results, start = [[] for _ in leaves], 0
    while start < r:
        block = rows[start : start + chunk]
        grad_outputs = rows_from_coords(block, output)
        grads = None
        if path == "batched":
            try:
                grads = batched_grad([output], leaves, [grad_outputs])
            except Exception:  # noqa: BLE001 - torch could not batch this backward: loop instead
                pass
        if grads is None:
            if path == "batched":
                path = "loop"
            # ``plain_grad`` per row, its argument check made once: every row has the same shape, dtype, device
            outs_t, leaves_t = (output,), tuple(leaves)
            direct = _engine_ready(outs_t, leaves_t, (grad_outputs[0],), 0)
            per_row = [_grad(outs_t, leaves_t, (grad_outputs[b],), direct) for b in range(block.shape[0])]
            grads = [
                None if all(g[k] is None for g in per_row)
                else torch.stack([g[k] if g[k] is not None else torch.zeros_like(leaves[k]) for g in per_row])
                for k in range(len(leaves))
            ]
        _add_block(results, flowed, grads, leaves, block.shape[0])
        start += chunk
    return [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in results], flowed, path


def _add_block(results: list, flowed: list, grads: Sequence, leaves: Sequence[torch.Tensor], n_rows: int) -> None:
    """Per leaf: ``n_rows`` rows of the gradients ``grads`` (``(n_rows, *leaf.shape)`` or ``None``, no
    gradient flowed) appended to ``results`` as float64 coordinates; ``flowed`` updated."""
    for k, g in enumerate(grads):
        if g is None:
            results[k].append(torch.zeros(n_rows, _n(leaves[k]), dtype=torch.float64))
        else:
            flowed[k] = True
            _check_grad_meta(g, leaves[k])
            if g._is_zerotensor():  # autograd's immutable zero (the second derivative of abs): a plain one
                results[k].append(torch.zeros(n_rows, _n(leaves[k]), dtype=torch.float64))
                continue
            results[k].append(batched_coords(g.detach()).to("cpu", torch.float64))


def vjp_rows_functorch(
    fn: Callable,
    args: Sequence[Any],
    wrt: Sequence[int],
    outs: Sequence[torch.Tensor],
    rows: dict[int, torch.Tensor],
    rng_seed: int,
) -> dict[int, tuple[list[torch.Tensor], list[bool]]] | None:
    """``vjp_rows`` for every output ``k`` of ``rows`` (``(r_k, n_out_coords)``) through ``vmap`` over
    ``torch.func.vjp``: one more forward of ``fn`` under functorch, then batched backward passes.

    ``outs``: the outputs of the call whose graph the caller holds. Returns ``None`` when functorch cannot
    run ``fn`` or its backward, or when the functorch forward does not reproduce ``outs`` exactly (the
    caller uses ``vjp_rows`` then). Whether a gradient flows to an input whose rows are all zero is read
    from the caller's graph (one plain backward of that output), as ``vjp_rows`` reports it.
    """
    order = list(rows)
    leaves = [args[i] for i in wrt]
    primals = [leaf.detach() for leaf in leaves]

    def f(*xs):
        call_args = list(args)
        for i, x in zip(wrt, xs):
            call_args[i] = x
        result = as_outputs(fn(*call_args))
        return tuple(result[k] for k in order)

    try:
        seed_global_rng(rng_seed)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again, vjp_fn = torch.func.vjp(f, *primals)
        if any(not torch.equal(a.detach(), outs[k].detach()) for a, k in zip(again, order)):
            return None  # not the same function values: the rows would not belong to the caller's graph
        result = {}
        per_leaf_cols = max(sum(_n(leaf) for leaf in leaves), 1)
        for pos, k in enumerate(order):
            out = outs[k]
            if not out.requires_grad:  # zeros, no gradient flowed
                result[k] = vjp_rows(out, leaves, rows[k])[:2]
                continue
            r = rows[k].shape[0]
            chunk = max(1, min(r, BACKWARD_BATCH_ELEMENTS // per_leaf_cols))
            parts: list[list[torch.Tensor]] = [[] for _ in leaves]
            for start in range(0, r, chunk):
                block = rows_from_coords(rows[k][start : start + chunk], out)
                cotangents = tuple(
                    block if q == pos else torch.zeros_like(o).expand(block.shape[0], *o.shape)
                    for q, o in enumerate(again)
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    grads = torch.func.vmap(vjp_fn)(cotangents)
                for q, (g, leaf) in enumerate(zip(grads, leaves)):
                    _check_grad_meta(g, leaf)
                    parts[q].append(batched_coords(g.detach()).to("cpu", torch.float64))
            per_leaf = [p[0] if len(p) == 1 else torch.cat(p) for p in parts]
            flowed = [True] * len(leaves)  # a nonzero gradient flowed; for all-zero rows the graph decides
            if not all(bool(p.any()) for p in per_leaf):
                first = rows_from_coords(rows[k][:1], out)[0]
                plain = torch.autograd.grad(out, leaves, grad_outputs=first, retain_graph=True, allow_unused=True)
                flowed = [g is not None for g in plain]
            # no path from the output to an input: its rows are zeros, as the caller's graph says
            per_leaf = [p if fl else torch.zeros_like(p) for p, fl in zip(per_leaf, flowed)]
            result[k] = (per_leaf, flowed)
        return result
    except Exception:  # noqa: BLE001 - functorch could not run fn or its backward (or gave a malformed
        return None  # gradient, which the caller's own path reports as autograd gives it)


class GradientMetaError(RuntimeError):
    pass


def _check_grad_meta(g: torch.Tensor, leaf: torch.Tensor) -> None:
    if tuple(g.shape[1:]) != tuple(leaf.shape):
        raise GradientMetaError(f"gradient has shape {tuple(g.shape[1:])}, input has shape {tuple(leaf.shape)}")
    if g.dtype != leaf.dtype:
        raise GradientMetaError(f"gradient has dtype {g.dtype}, input has dtype {leaf.dtype}")
    if g.device != leaf.device:
        raise GradientMetaError(f"gradient is on {g.device}, input is on {leaf.device}")


def _n(t: torch.Tensor) -> int:
    return t.numel() * (2 if t.is_complex() else 1)


def jvp_columns(
    fn: Callable,
    args: Sequence[Any],
    i: int,
    tangents: torch.Tensor,
    output_indices: Sequence[int],
    rng_seed: int,
    fresh_copies: bool = False,
    vmap: bool = True,
    memo: DualMemo | None = None,
) -> tuple[list[torch.Tensor], str]:
    """Forward-mode ``J·t`` for tangents ``(B, n_coords)`` of input ``i`` (as given, layout kept); through
    vmap unless ``vmap`` is false (fn is known not to run under it). One pass per tangent otherwise: as
    autograd's forward ran (grad enabled), or with a ``memo``, as ``forward_pass`` runs them (without grad
    unless fn needs it).

    Returns per differentiable output ``(B, n_out_coords)`` float64 and the path used.
    Raises :class:`ForwardADUnsupported` when the function has no forward-mode derivative.
    """
    primal = args[i]
    shaped = from_coords(tangents, primal.shape, primal.is_complex()).to(device=primal.device, dtype=primal.dtype)
    try:
        if vmap:
            return _jvp_vmapped(fn, args, i, shaped, output_indices, rng_seed), "batched"
    except ForwardADUnsupported:
        raise
    except Exception:  # noqa: BLE001 - vmap could not run it: one jvp at a time
        pass
    per_col = []
    for b in range(shaped.shape[0]):
        call_args = args
        if fresh_copies:  # fn modifies its inputs: each pass starts from the original values
            call_args = [layout_clone(a) if isinstance(a, torch.Tensor) and j != i else a for j, a in enumerate(args)]
        if memo is not None:
            cols = forward_pass(fn, call_args, {i: shaped[b]}, output_indices, rng_seed, False, memo)
        else:  # as autograd's forward ran it (requires_grad kept): forward-over-reverse where fn is a derivative
            cols = _dual_pass(fn, call_args, {i: shaped[b]}, output_indices, rng_seed, fresh_copies=False, grad=True)
        per_col.append(cols)
    return [torch.stack([c[o] for c in per_col]).to(torch.float64) for o in range(len(output_indices))], "loop"


def _jvp_vmapped(fn, args, i, tangents, output_indices, rng_seed) -> list[torch.Tensor]:
    primal = args[i].detach()

    def single(t):
        def g(x):
            call_args = list(args)
            call_args[i] = x
            outs = as_outputs(fn(*call_args))
            return tuple(outs[k] for k in output_indices)

        _, tangent_out = torch.func.jvp(g, (primal,), (t,))
        return tangent_out

    seed_global_rng(rng_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = torch.func.vmap(single, randomness="error")(tangents)
    return [batched_coords(o.detach()).to("cpu", torch.float64) for o in outs]


def jvp_directions(
    fn: Callable,
    args: Sequence[Any],
    tangents: dict[int, torch.Tensor],
    output_indices: Sequence[int],
    rng_seed: int,
    fresh_copies: bool = False,
    memo: DualMemo | None = None,
    keep: bool = False,
) -> tuple[list[torch.Tensor], str]:
    """Forward-mode ``sum_i J_i·t_i`` with every input ``i`` of ``tangents`` moving at once.

    ``tangents[i]``: ``(d, n_coords_i)`` float64, ``d`` directions. Returns per differentiable output
    ``(d, n_out_coords)`` float64 and the path used (``direct``: one forward-mode pass per direction).
    Raises :class:`ForwardADUnsupported` when the function has no forward-mode derivative. ``memo`` and
    ``keep``: as ``forward_pass`` takes them (the last pass's outputs kept).
    """
    order = list(tangents)
    shaped = {
        i: from_coords(t, args[i].shape, args[i].is_complex()).to(device=args[i].device, dtype=args[i].dtype)
        for i, t in tangents.items()
    }
    d = next(iter(tangents.values())).shape[0]
    # A few directions: one forward-mode pass each (cheaper than vmap's set-up for small functions, and no
    # slower for large ones)
    per_dir = [
        forward_pass(fn, args, {i: shaped[i][b] for i in order}, output_indices, rng_seed, fresh_copies, memo,
                     keep and b == d - 1)
        for b in range(d)
    ]
    return [torch.stack([r[o] for r in per_dir]).to(torch.float64) for o in range(len(output_indices))], "direct"


def forward_pass(
    fn: Callable,
    args: Sequence[Any],
    tangents: dict[int, torch.Tensor],
    output_indices: Sequence[int],
    rng_seed: int,
    fresh_copies: bool = False,
    memo: DualMemo | None = None,
    keep: bool = False,
) -> list[torch.Tensor]:
    """One forward-mode pass with ``tangents[i]`` (shaped like ``args[i]``, its dtype and device) on input
    ``i``: per differentiable output the tangent's real coordinates, flat, in the output's dtype, on the CPU.

    It runs without grad on detached inputs: recording the tangents' graph as well would double the cost
    of a large pass. Where that raises, fn may differentiate internally, so it runs once more as autograd's
    forward did (grad enabled, ``args``' differentiated inputs requiring grad); that pass's error is the one
    raised. :class:`ForwardADUnsupported` where fn has no forward-mode derivative. ``memo``: the check's
    :class:`DualMemo` (a pass that needs grad runs with grad at once; with ``keep``, the outputs kept).
    """
    if memo is None or not memo.grad:
        try:
            return _dual_pass(fn, [a.detach() if isinstance(a, torch.Tensor) else a for a in args], tangents,
                              output_indices, rng_seed, fresh_copies, grad=False, memo=memo if keep else None)
        except ForwardADUnsupported:
            raise
        except Exception:  # noqa: BLE001 - with grad, as autograd's forward ran it
            if memo is not None:
                memo.grad = True
    return _dual_pass(fn, args, tangents, output_indices, rng_seed, fresh_copies, grad=True,
                      memo=memo if keep else None)


def _dual_pass(fn, args, tangents, output_indices, rng_seed, fresh_copies, grad, memo=None) -> list[torch.Tensor]:
    call_args = list(args)
    if fresh_copies:  # fn modifies its inputs: each pass starts from the original values
        call_args = [layout_clone(a) if isinstance(a, torch.Tensor) else a for a in call_args]
        if grad:
            call_args = with_grad_inputs(
                call_args, [j for j, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
            )
    seed_global_rng(rng_seed)
    _load_forward_decompositions()
    # (torch's forward-mode decompositions warn about torch.jit: not the user's)
    with _dual_level() as level, torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, t in tangents.items():
            call_args[i] = _make_dual(call_args[i], t, level)
        try:
            outs = as_outputs(fn(*call_args))
        except (NotImplementedError, RuntimeError) as exc:
            text = str(exc)
            if "forward AD" in text or "forward-mode" in text or "jvp" in text or "forward mode" in text:
                text = exception_text(exc)
                raise ForwardADUnsupported(lambda exc=exc: describe_exception(exc), forward_ad_reason(text)) from None
            raise
        result = []
        kept = list(outs)
        for k in output_indices:
            primal, tangent_out = _unpack_dual(outs[k], level)
            kept[k] = primal.detach()
            # on the host, where the kit's comparisons run (a no-op for CPU tensors)
            result.append(coords(torch.zeros_like(primal) if tangent_out is None else tangent_out).cpu())
        if memo is not None:
            memo.outputs = tuple(kept)
        return result


_RAW_DUAL = hasattr(torch, "_make_dual") and hasattr(torch, "_unpack_dual")
_DECOMPOSITIONS = []  # one entry once torch's forward-mode decompositions are loaded


def _load_forward_decompositions() -> None:
    """What ``fwAD.make_dual`` does on every call: load torch's forward-mode decompositions (once)."""
    if _DECOMPOSITIONS:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loader = getattr(fwAD, "_maybe_load_decompositions", None)
        if loader is not None:
            loader()
    _DECOMPOSITIONS.append(True)


@contextmanager
def _dual_level():
    """``fwAD.dual_level()`` as a generator (the level number is what ``_make_dual`` needs); torch's own
    entry and exit keep ``fwAD``'s current level as fn's own forward-mode calls read it."""
    level = fwAD.enter_dual_level()
    try:
        yield level
    finally:
        fwAD.exit_dual_level(level=level)


def _make_dual(primal: torch.Tensor, tangent: torch.Tensor, level: int) -> torch.Tensor:
    """``fwAD.make_dual`` without its argument checks where the arguments are plain floating tensors of one
    shape (torch's own call checks the rest)."""
    if (
        not _RAW_DUAL or type(primal) not in _PLAIN or type(tangent) not in _PLAIN
        or not (primal.is_floating_point() or primal.is_complex())
        or not (tangent.is_floating_point() or tangent.is_complex())
    ):
        return fwAD.make_dual(primal, tangent, level=level)
    return torch._make_dual(primal, tangent, level=level)


def _unpack_dual(tensor, level: int) -> tuple:
    if not _RAW_DUAL or type(tensor) not in _PLAIN:
        return tuple(fwAD.unpack_dual(tensor, level=level))
    return torch._unpack_dual(tensor, level=level)
