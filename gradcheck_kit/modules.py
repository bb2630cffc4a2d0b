"""Gradient checks for ``torch.nn.Module`` objects, and gradient-flow assertions.

``check_module_gradients`` turns a module into a pure function of its inputs and its
parameters with ``torch.func.functional_call`` and hands it to the core checker, so a
mismatch names the parameter element (``0.weight[3, 1]``).  The module is never changed:
parameters are passed as copies, buffers as fresh copies on every evaluation (so BatchNorm
running statistics neither leak out nor drift between evaluations), the training mode is
kept, and every evaluation sees the same random numbers (a dropout mask is the same on the
analytic and the numerical side).

``assert_gradient_flow`` runs one forward and one backward (``torch.autograd.grad``, so no
``.grad`` is written) and names every parameter or input that requires grad but gets no
gradient, a non-finite one, or an all-zero one.

Naming: a parameter is named by its dotted path as ``named_parameters()`` spells it
(``weight``, ``0.weight``, ``encoder.layers.1.bias``), prefixed by ``name=`` when given
(``name="net"`` gives ``net.0.weight``).  An input is named by the matching positional
parameter of ``forward`` (``input``, ``x``), or ``input{i}`` when there is none.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradcheck_kit import _state
from gradcheck_kit._inputs import default_wrt, display_names, is_differentiable, wrt_index
from gradcheck_kit.errors import GradientMismatch, InvalidArgument

__all__ = [
    "check_module_gradients",
    "assert_module_gradients",
    "assert_gradient_flow",
    "check_gradient_flow",
    "GradientFlowReport",
    "FlowEntry",
]

_PROJECTION_SEED = 0


# --------------------------------------------------------------------------- naming


def _short(value: Any) -> str:
    """A one-line ``repr`` for messages (modules print as their class name)."""
    if isinstance(value, nn.Module):
        return f"<{type(value).__name__} module>"
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}, {value.dtype}>"
    text = repr(value)
    if "\n" in text or len(text) > 80:
        text = f"<{type(value).__name__} object>"
    return text


def _check_name(name: Any) -> str:
    if name is None:
        return ""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"name={name!r} is not a non-empty string (the prefix of parameter names)")
    return name + "."


def _input_names(fn: Callable, inputs: Sequence[Any], given: Any, taken: set[str]) -> list[str]:
    if given is None:
        return display_names(fn, len(inputs), taken)
    if isinstance(given, str) or not isinstance(given, Sequence) or not all(isinstance(n, str) for n in given):
        raise InvalidArgument(f"input_names={given!r} is not a sequence of strings")
    if len(given) != len(inputs):
        raise InvalidArgument(
            f"input_names={given!r} has {len(given)} names for {len(inputs)} module inputs "
            "(parameters are named after their dotted path; use name= to prefix them)"
        )
    return list(given)


# --------------------------------------------------------------------------- module checks


def _resolve_wrt(
    wrt: Any,
    module: nn.Module,
    inputs: Sequence[Any],
    input_names: list[str],
    params: dict[str, nn.Parameter],
    prefix: str,
) -> tuple[list[int], list[str]]:
    """``wrt`` -> (module input indices, parameter paths), both in a stable order."""
    if wrt is None:
        return default_wrt(inputs), [path for path, p in params.items() if p.requires_grad]
    if isinstance(wrt, (int, str)):
        items: list[Any] = [wrt]
    else:
        try:
            items = list(wrt)
        except TypeError:
            raise InvalidArgument(
                f"wrt={wrt!r} is not an input index, a parameter name, or a list of them"
            ) from None
    input_idx: set[int] = set()
    paths: set[str] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise InvalidArgument(f"wrt={wrt!r}: {item!r} is neither an input index nor a parameter name")
        if isinstance(item, int):
            input_idx.add(wrt_index(wrt, item, inputs))
        elif item in input_names:
            input_idx.add(wrt_index(wrt, input_names.index(item), inputs))
        else:
            paths.update(_matching_parameters(wrt, item, module, params, prefix))
    return sorted(input_idx), [path for path in params if path in paths]


def _matching_parameters(wrt: Any, pattern: str, module: nn.Module, params: Mapping[str, Any], prefix: str) -> list[str]:
    """The parameter paths ``pattern`` names (an ``fnmatch`` pattern, with or without the ``name`` prefix)."""
    matched = [
        path for path in params if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(prefix + path, pattern)
    ]
    if not matched:
        known = ", ".join(prefix + path for path in params) or "none"
        raise InvalidArgument(
            f"wrt={wrt!r}: {pattern!r} matches no input name and no parameter of "
            f"{type(module).__name__} (parameters: {known})"
        )
    return matched


def check_module_gradients(
    module: nn.Module,
    *inputs: Any,
    name: str | None = None,
    wrt: Any = None,
    input_names: Sequence[str] | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    **check_keywords: Any,
):
    """Check the gradients of ``module(*inputs)`` w.r.t. its parameters and its differentiable inputs.

    Returns the core checker's :class:`~gradcheck_kit.GradientReport`; a mismatch is named after
    the parameter (``0.weight[3, 1]``, or ``net.0.weight[3, 1]`` with ``name="net"``) or the input
    (the name of ``forward``'s positional parameter, e.g. ``x[0, 2]``).

    - ``wrt``: ``None`` checks every parameter with ``requires_grad`` plus the inputs that require
      grad (every floating input when none does, as ``check_gradients`` does). Otherwise an int, a
      string or a list of them: an int is the index of a module input; a string is an input name,
      or a parameter path or ``fnmatch`` pattern (``"0.weight"``, ``"*.bias"``, with or without
      the ``name`` prefix). Parameters named explicitly are checked even when frozen.
    - ``input_names``: display names of the module inputs (one per input).
    - ``forward_kwargs``: keyword arguments for ``forward``, passed through, never differentiated.
    - every other keyword (``mode``, ``atol``, ``rtol``, ``seed``, ``order``...) goes to
      :func:`gradcheck_kit.check_gradients`.

    The module is left as it was: the parameters, their ``.grad`` and the buffers are never written
    (each evaluation gets fresh copies of the buffers), the training mode is kept (call ``.eval()``
    first to check inference behaviour). The checker seeds the RNG from ``seed`` before every
    evaluation, so dropout in training mode draws the same mask on the analytic and the numerical
    side; the caller's RNG state is restored.
    """
    from gradcheck_kit.checkers import check_gradients

    if not isinstance(module, nn.Module):
        raise InvalidArgument(f"module={_short(module)} is not a torch.nn.Module")
    prefix = _check_name(name)
    if forward_kwargs is None:
        forward_kwargs = {}
    elif not isinstance(forward_kwargs, Mapping):
        raise InvalidArgument(f"forward_kwargs={_short(forward_kwargs)} is not a mapping of keyword arguments")

    params = dict(module.named_parameters())
    display = {path: prefix + path for path in params}
    names = _input_names(module.forward, inputs, input_names, taken=set(display.values()))
    input_idx, selected = _resolve_wrt(wrt, module, inputs, names, params, prefix)
    if not input_idx and not selected:
        raise InvalidArgument(
            f"wrt={wrt!r} selects nothing to differentiate: {type(module).__name__} has no parameter "
            "that requires grad and no floating input"
        )

    function, copies = _pure_function(module, inputs, params, selected, forward_kwargs)
    n_inputs = len(inputs)
    report = check_gradients(
        function,
        *inputs,
        *copies,
        wrt=[*input_idx, *range(n_inputs, n_inputs + len(copies))],
        input_names=[*names, *(display[path] for path in selected)],
        **check_keywords,
    )
    if not report.ok:
        from gradcheck_kit._reproduce import reproduce_line

        extras = _reproduce_keywords(name, wrt, input_names, forward_kwargs, check_keywords, report.seed)
        subject = name if name and name.isidentifier() else "module"
        report.reproduce = reproduce_line(
            module, "assert_module_gradients", list(zip(names, inputs)), ", ".join, extras, subject=subject
        )
    return report


def _pure_function(
    module: nn.Module,
    inputs: Sequence[Any],
    params: Mapping[str, nn.Parameter],
    selected: list[str],
    forward_kwargs: Mapping[str, Any],
) -> tuple[Callable, list[torch.Tensor]]:
    """``module`` as a function of its inputs followed by the ``selected`` parameters, and
    copies of those parameters to call it with. Parameters not selected stay fixed (detached, never
    differentiated); buffers are fresh copies on every call, so nothing can reach the originals."""
    fixed = {path: p.detach() for path, p in params.items() if path not in selected}
    copies = [params[path].detach().clone().requires_grad_(True) for path in selected]
    buffers = {path: b.detach().clone() for path, b in module.named_buffers()}
    dtypes = [x.dtype if isinstance(x, torch.Tensor) else None for x in (*inputs, *copies)]
    n_inputs = len(inputs)

    def module_function(*args: Any) -> Any:
        # When the checker evaluates at higher precision (float32 inputs cast to float64), the fixed
        # parameters and the buffers follow, so BatchNorm's running stats match the input dtype.
        cast = {
            old: arg.dtype
            for old, arg in zip(dtypes, args)
            if old is not None and old.is_floating_point and isinstance(arg, torch.Tensor) and arg.dtype != old
        }
        state: dict[str, torch.Tensor] = {path: _cast(p, cast) for path, p in fixed.items()}
        state.update(zip(selected, args[n_inputs:]))
        state.update((path, _cast(b, cast).clone()) for path, b in buffers.items())
        return torch.func.functional_call(module, state, tuple(args[:n_inputs]), dict(forward_kwargs))

    module_function.__name__ = module_function.__qualname__ = type(module).__name__
    return module_function, copies


def _cast(tensor: torch.Tensor, dtypes: dict[torch.dtype, torch.dtype]) -> torch.Tensor:
    target = dtypes.get(tensor.dtype)
    return tensor if target is None or not target.is_floating_point else tensor.to(target)


def _reproduce_keywords(
    name: Any, wrt: Any, input_names: Any, forward_kwargs: Mapping[str, Any], check_keywords: Mapping[str, Any], seed: int
) -> list[str]:
    """The keywords of the reproduce line of a failed module check, as ``key=value`` strings."""
    extras = [f"name={name!r}"] if name is not None else []
    extras += [f"wrt={wrt!r}"] if wrt is not None else []
    extras += [f"input_names={list(input_names)!r}"] if input_names is not None else []
    extras += [f"forward_kwargs={dict(forward_kwargs)!r}"] if forward_kwargs else []
    extras += [f"{key}={value!r}" for key, value in check_keywords.items() if key != "seed" and value is not None]
    extras.append(f"seed={seed}")
    return extras


def assert_module_gradients(module: nn.Module, *inputs: Any, **check_keywords: Any):
    """:func:`check_module_gradients`, returning the report or raising :class:`GradientMismatch`
    (:class:`FunctionError`, chained to the module's exception, where the module itself failed)."""
    __tracebackhide__ = True
    report = check_module_gradients(module, *inputs, **check_keywords)
    from gradcheck_kit.assertions import raise_for_report

    raise_for_report(report)
    return report


# --------------------------------------------------------------------------- gradient flow


@dataclass(frozen=True)
class FlowEntry:
    """What one backward gave one tensor that requires grad.

    ``status`` is ``"ok"``, ``"unused"`` (not used in the forward pass), ``"detached"`` (used,
    but no differentiable path reaches the output), ``"undefined"`` (reached by the graph, but
    a backward returned ``None`` for it), ``"non-finite"`` or ``"zero"``.
    """

    name: str
    kind: str  # "parameter" or "input"
    shape: tuple[int, ...]
    status: str
    reason: str
    norm: float | None  # 2-norm of the gradient; None when there is none

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class GradientFlowReport:
    """Outcome of :func:`check_gradient_flow`: one :class:`FlowEntry` per tensor that requires grad."""

    entries: tuple[FlowEntry, ...]
    loss: str  # what was differentiated, in words

    @property
    def ok(self) -> bool:
        return all(entry.ok for entry in self.entries)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failures(self) -> list[FlowEntry]:
        return [entry for entry in self.entries if not entry.ok]

    @property
    def norms(self) -> dict[str, float | None]:
        return {entry.name: entry.norm for entry in self.entries}

    def __str__(self) -> str:
        failures = self.failures
        if not failures:
            return (
                f"Gradient flow is fine: all {len(self.entries)} tensors that require grad get a finite, "
                f"nonzero gradient\nBackward of: {self.loss}"
            )
        width = max(len(entry.name) for entry in failures)
        lines = [
            f"Gradient flow is broken: {len(failures)} of {len(self.entries)} tensors that require grad "
            "get no usable gradient"
        ]
        lines += [f"  {entry.name + ':':<{width + 1}} {entry.reason}" for entry in failures]
        lines.append(f"Backward of: {self.loss}")
        return "\n".join(lines)


class _UseTracker(TorchFunctionMode):
    """Records which watched tensors took part in an operation that produced a tensor."""

    def __init__(self, watched: set[int]):
        super().__init__()
        self.watched = watched
        self.used: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        # Metadata reads (.shape, .dtype, .size()) return no tensor and do not count as a use.
        if any(True for _ in _tensors_in(result)):
            self.used.update(id(t) for t in _tensors_in((args, kwargs)) if id(t) in self.watched)
        return result


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors_in(item)


def _graph(root: torch.Tensor) -> tuple[set[int], set[Any]]:
    """(ids of the leaf tensors, the nodes) reachable backwards from ``root``."""
    leaves: set[int] = set()
    nodes: set[Any] = set()
    stack = [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node in nodes:
            continue
        nodes.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return leaves, nodes


def _scalar_loss(output: Any, loss: Callable | None, owner: Any) -> tuple[torch.Tensor, str]:
    if loss is not None:
        value = loss(output)
        if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
            raise InvalidArgument(
                f"loss={_short(loss)} returned {_short(value)}, not a real floating tensor with one element"
            )
        return value.reshape(()), "loss(output)"
    tensors = [t for t in _tensors_in(output) if is_differentiable(t)]
    if not tensors:
        raise InvalidArgument(
            f"module_or_fn={_short(owner)} returned {_short(output)}, which holds no floating tensor; "
            "pass loss= to reduce the output to a scalar"
        )
    if len(tensors) == 1 and tensors[0].dim() == 0 and tensors[0].is_floating_point():
        return tensors[0], "the output (a scalar)"
    # A fixed random weighting, not .sum(): the sum of a softmax or of a normalized output is a
    # constant, so .sum() would report a perfectly fine gradient as all zero.
    generator = torch.Generator().manual_seed(_PROJECTION_SEED)
    total = None
    for t in tensors:
        real = torch.view_as_real(t) if t.is_complex() else t
        weight = torch.randn(real.shape, generator=generator, dtype=torch.float64)
        term = (real * weight.to(dtype=real.dtype, device=real.device)).sum()
        total = term if total is None else total + term
    what = "output" if len(tensors) == 1 else f"{len(tensors)} outputs"
    return total, f"sum(w * output) over the {what}, w a fixed random weighting (seed {_PROJECTION_SEED}; pass loss= to choose)"


def _assess(name: str, kind: str, tensor: torch.Tensor, grad: torch.Tensor | None, used: bool, reached: bool) -> FlowEntry:
    shape = tuple(tensor.shape)
    if grad is None:
        if reached:
            status, reason = "undefined", "no gradient (reached by the graph, but a backward returned None for it)"
        elif used:
            status, reason = "detached", (
                "no gradient (used in the forward pass but detached from the output: "
                ".detach(), .data, torch.no_grad() or a non-differentiable op)"
            )
        else:
            status, reason = "unused", "no gradient (not used in the forward pass)"
        return FlowEntry(name, kind, shape, status, reason, None)
    grad = grad.detach()
    nan = int(torch.isnan(grad).sum())
    inf = int(torch.isinf(grad).sum())
    norm = float(torch.linalg.vector_norm(grad.double() if not grad.is_complex() else grad.cdouble()))
    if nan or inf:
        counts = ", ".join(f"{n} {label}" for n, label in ((nan, "NaN"), (inf, "inf")) if n)
        return FlowEntry(name, kind, shape, "non-finite", f"non-finite gradient ({counts} of {grad.numel()} elements)", norm)
    if not bool(grad.any()):
        return FlowEntry(name, kind, shape, "zero", f"gradient is all zero ({grad.numel()} elements)", 0.0)
    return FlowEntry(name, kind, shape, "ok", "", norm)


def check_gradient_flow(
    module_or_fn: Callable, *inputs: Any, loss: Callable | None = None, name: str | None = None
) -> GradientFlowReport:
    """One forward and one backward; a :class:`GradientFlowReport` entry per tensor that requires grad.

    Watched: the parameters with ``requires_grad`` of ``module_or_fn`` when it is a module, and
    the positional inputs that are tensors with ``requires_grad``. The backward is of
    ``loss(output)`` when ``loss`` is given, of the output itself when it is a scalar, and otherwise
    of ``sum(w * output)`` with ``w`` a fixed random weighting (a plain ``.sum()`` has an exactly
    zero gradient through softmax and normalization layers). Nothing is left behind: the gradients
    come from ``torch.autograd.grad`` (no ``.grad`` is written), buffers are restored, and the
    caller's RNG state is restored.
    """
    if not callable(module_or_fn):
        raise InvalidArgument(f"module_or_fn={_short(module_or_fn)} is not a torch.nn.Module or a callable")
    if loss is not None and not callable(loss):
        raise InvalidArgument(f"loss={_short(loss)} is not callable")
    prefix = _check_name(name)
    module = module_or_fn if isinstance(module_or_fn, nn.Module) else None
    inputs = tuple(_state.outside_inference(inputs))  # made in inference mode: ordinary copies

    watched: list[tuple[str, str, torch.Tensor]] = []
    param_names: set[str] = set()
    if module is not None:
        for path, p in module.named_parameters():
            param_names.add(prefix + path)
            if p.requires_grad:
                watched.append((prefix + path, "parameter", p))
    forward = module.forward if module is not None else module_or_fn
    names = display_names(forward, len(inputs), taken=param_names)
    watched = [
        (names[i], "input", x) for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad
    ] + watched
    if not watched:
        raise InvalidArgument(
            f"module_or_fn={_short(module_or_fn)}: no parameter and no input requires grad, "
            "so there is no gradient flow to check"
        )
    tensors = [t for _, _, t in watched]
    tracker = _UseTracker({id(t) for t in tensors})

    # the lock first (_state): another thread's check of the same module restores its buffers before these
    # are saved; CUDA's RNG states too where a watched tensor is on a GPU
    cuda = True if any(t.device.type == "cuda" for t in tensors) else None
    with _state.rng_preserved(cuda=cuda), _state.buffers_restored(module), torch.inference_mode(False), \
            torch.enable_grad():
        with tracker:
            output = module_or_fn(*inputs)
            scalar, description = _scalar_loss(output, loss, module_or_fn)
        leaves, nodes = _graph(scalar)
        if scalar.requires_grad:
            grads = torch.autograd.grad(scalar, tensors, allow_unused=True)
        else:
            grads = (None,) * len(tensors)
        del output, scalar

    entries = tuple(
        _assess(
            entry_name,
            kind,
            tensor,
            grad,
            used=id(tensor) in tracker.used,
            reached=(id(tensor) in leaves) if tensor.grad_fn is None else (tensor.grad_fn in nodes),
        )
        for (entry_name, kind, tensor), grad in zip(watched, grads)
    )
    return GradientFlowReport(entries, description)


def assert_gradient_flow(
    module_or_fn: Callable, *inputs: Any, loss: Callable | None = None, name: str | None = None
) -> dict[str, float]:
    """Assert that every parameter and input that requires grad gets a finite, nonzero gradient.

    Runs :func:`check_gradient_flow`. On success returns ``{name: gradient 2-norm}`` (inputs first,
    then parameters in ``named_parameters()`` order); otherwise raises :class:`GradientMismatch`
    whose message names each failing tensor and why, one per line, and whose ``.report`` is the
    :class:`GradientFlowReport`.
    """
    __tracebackhide__ = True
    report = check_gradient_flow(module_or_fn, *inputs, loss=loss, name=name)
    if not report.ok:
        raise GradientMismatch(str(report), report) from None
    return {entry.name: entry.norm for entry in report.entries}
