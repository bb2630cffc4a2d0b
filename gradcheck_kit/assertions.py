"""Assertions: the only place the kit raises because a gradient is wrong."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._engine.evaluate import as_outputs, describe_exception, is_none_output
from gradcheck_kit._grad_outputs import reject_nonfinite
from gradcheck_kit._inputs import default_wrt, function_name, input_names, layout_clone
from gradcheck_kit._ranges import GradientRange
from gradcheck_kit.report import format_index
from gradcheck_kit._reproduce import reproduce_line
from gradcheck_kit._state import outside_inference, recording
from gradcheck_kit._supported import check_grad_outputs, refuse_unsupported, unsupported_kind
from gradcheck_kit.checkers import check_gradients
from gradcheck_kit.errors import FunctionError, GradientMismatch, InvalidArgument
from gradcheck_kit.options import CheckOptions

__all__ = ["assert_gradients_close", "assert_grad_equals", "DEFAULT_TOLERANCES"]

#: (rtol, atol) per dtype for comparing autograd with a formula, as torch.testing.assert_close does
DEFAULT_TOLERANCES = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}
LISTED = 8


def assert_gradients_close(fn: Callable, *inputs: Any, **options: Any):
    """:func:`check_gradients`, raising :class:`GradientMismatch` when it finds a wrong gradient, or
    :class:`FunctionError` (chained to fn's exception) when fn itself failed.

    Returns the report when the gradients are right.
    """
    __tracebackhide__ = True
    report = check_gradients(fn, *inputs, **options)
    raise_for_report(report)
    return report


def raise_for_report(report) -> None:
    """Raise what a failed report means: :class:`FunctionError` from fn's exception where fn failed,
    else :class:`GradientMismatch`; nothing for a pass."""
    __tracebackhide__ = True
    if report.ok:
        return
    if report.function_failed:
        raise FunctionError(str(report), report) from report.function_error
    raise GradientMismatch(str(report), report) from None


def assert_grad_equals(
    fn: Callable,
    inputs: Any,
    expected: Any,
    *,
    grad_outputs: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> tuple:
    """Assert that autograd's gradient of ``fn(*inputs)`` equals ``expected``.

    ``inputs``: a tensor or a tuple of tensors (and other values); the differentiated inputs are those
    that require grad, or every floating tensor when none does. ``expected``: a tensor, a tuple of
    tensors (one per differentiated input), or a callable taking the inputs and returning them.
    ``grad_outputs``: the vector passed to ``backward`` for a non-scalar output. Returns autograd's
    gradients (a tuple, one per differentiated input). Inputs and their ``.grad`` are left untouched.
    """
    __tracebackhide__ = True
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs) if isinstance(inputs, (tuple, list)) else None
    if args is None:
        raise InvalidArgument(f"inputs={inputs!r} must be a tensor or a tuple of tensors")
    options = CheckOptions(atol=atol, rtol=rtol)
    for i, a in enumerate(args):
        refuse_unsupported(a, f"inputs[{i}]")
    check_grad_outputs(grad_outputs)
    reject_nonfinite(grad_outputs)
    args = tuple(outside_inference(args))  # made in inference mode: ordinary copies
    wrt = default_wrt(args)
    if not wrt:
        raise InvalidArgument(f"inputs={inputs!r} contain no floating-point tensor to differentiate")
    names = input_names(fn, len(args), None)
    expected = _expected_gradients(expected, args, wrt, names)
    with recording():  # whatever the caller's grad or inference mode
        grads, problem = _autograd(fn, args, wrt, grad_outputs)
    failures: list[str] = []
    for pos, i in enumerate(wrt):
        failures.extend(_gradient_failures(grads[pos], expected[pos], args[i], i, names[i], problem, options))
    if failures:
        line = _reproduce_grad_equals(fn, args, names, expected, grad_outputs, options)
        raise GradientMismatch("\n".join(failures) + f"\nReproduce: {line}", None)
    return tuple(grads)


def _expected_gradients(expected: Any, args: tuple, wrt: list[int], names: list[str]) -> tuple:
    """``expected`` as a tuple of tensors, one per differentiated input (a callable is called with the
    inputs, detached, without grad); an :class:`InvalidArgument` where it is none of that."""
    if callable(expected) and not isinstance(expected, torch.Tensor):
        try:
            with torch.no_grad():
                expected = expected(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
        except Exception as exc:  # noqa: BLE001 - the expectation's own failure, named as such
            raise InvalidArgument(
                f"expected={function_name(expected)} raised {describe_exception(exc)} when called with the inputs"
            ) from exc
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    if not isinstance(expected, (tuple, list)) or not all(isinstance(e, torch.Tensor) for e in expected):
        raise InvalidArgument(
            f"expected={type(expected).__name__} must be a tensor, a tuple of tensors, or a callable returning them"
        )
    refuse_unsupported(tuple(expected), "expected")
    if len(expected) != len(wrt):
        raise InvalidArgument(
            f"expected has {len(expected)} tensor(s) but {len(wrt)} input(s) are differentiated "
            f"({', '.join(names[i] for i in wrt)})"
        )
    return tuple(expected)


def _gradient_failures(
    got: Any, expected: torch.Tensor, arg: torch.Tensor, i: int, name: str, problem: str, options: CheckOptions
) -> list[str]:
    """The lines that say how autograd's gradient ``got`` of input ``i`` differs from ``expected`` (none
    where they agree)."""
    want = expected.detach()
    label = f"input {i} ({name}, shape {tuple(arg.shape)}, {str(arg.dtype).replace('torch.', '')})"
    if got is None:
        if want.abs().sum() == 0:
            return []
        flows = problem or "autograd gave no gradient (the output does not depend on it through the graph)"
        return [f"no gradient flows to input {i} ({name}): {flows}"]
    if tuple(want.shape) != tuple(got.shape):
        return [
            f"Gradient of {label}: expected has shape {tuple(want.shape)}, autograd's gradient has shape "
            f"{tuple(got.shape)}"
        ]
    ranged = isinstance(expected, GradientRange)
    if ranged:  # at a kink: anything between the one-sided values
        want = _nearest_in_range(got, expected)
    found = _compare_tensors(got, want, label, name, options.atol, options.rtol)
    if found and ranged:
        found.append("  (expected is a GradientRange: at kinks, any value in [low, high]; shown is the nearest)")
    return found


def _reproduce_grad_equals(
    fn: Callable, args: tuple, names: list[str], expected: tuple, grad_outputs: Any, options: CheckOptions
) -> str:
    named = [*zip(names, args), ("expected", tuple(e.detach() for e in expected))]
    keywords = [f"{key}={value!r}" for key, value in (("atol", options.atol), ("rtol", options.rtol)) if value is not None]
    if grad_outputs is not None:
        named.append(("grad_outputs", grad_outputs))
        keywords.append("grad_outputs=grad_outputs")
    n = len(args)
    return reproduce_line(
        fn, "assert_grad_equals", named, lambda bound: f"({', '.join(bound[:n])},), {bound[n]}", keywords
    )


def _autograd(fn, args, wrt, grad_outputs) -> tuple[list, str]:
    call = list(args)
    leaves = []
    for i in wrt:
        leaf = layout_clone(args[i]).requires_grad_(True)
        call[i] = leaf
        leaves.append(leaf)
    for i, a in enumerate(call):
        if i not in wrt and isinstance(a, torch.Tensor):
            call[i] = a.detach()
    try:
        with torch.enable_grad():
            outs = as_outputs(fn(*call))
    except FunctionError as exc:
        raise FunctionError(f"assert_grad_equals: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise FunctionError(f"assert_grad_equals: fn raised {describe_exception(exc)}") from exc
    for k, kind in enumerate(map(unsupported_kind, outs)):
        if kind is not None:
            raise FunctionError(f"assert_grad_equals: output {k} of fn is {kind}: only strided tensors can be checked")
    if grad_outputs is None:
        non_scalar = [k for k, o in enumerate(outs) if o.numel() != 1 and not is_none_output(o)]
        if non_scalar:
            k = non_scalar[0]
            raise InvalidArgument(
                f"grad_outputs=None but output {k} of fn has shape {tuple(outs[k].shape)}; pass grad_outputs "
                "(the vector given to backward) for a non-scalar output"
            )
        grad_outputs = tuple(torch.ones_like(o) for o in outs)
    elif isinstance(grad_outputs, torch.Tensor):
        grad_outputs = (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outs):
        raise InvalidArgument(f"grad_outputs has {len(grad_outputs)} tensor(s) but fn returned {len(outs)} output(s)")
    pairs = [(o, g) for o, g in zip(outs, grad_outputs) if o.requires_grad]
    if not pairs:
        return [None] * len(wrt), (
            "the output does not require grad (detached, computed under torch.no_grad(), "
            "or the input had requires_grad_(False))"
        )
    try:
        grads = torch.autograd.grad(
            [o for o, _ in pairs], leaves, grad_outputs=[g.to(o.dtype) for o, g in pairs], allow_unused=True
        )
    except Exception as exc:  # noqa: BLE001
        raise FunctionError(f"assert_grad_equals: backward raised {describe_exception(exc)}") from exc
    return [None if g is None else g.detach() for g in grads], ""


def _nearest_in_range(got: torch.Tensor, expected: "GradientRange") -> torch.Tensor:
    """The value of ``[expected.low, expected.high]`` nearest to autograd's (NaN stays NaN): compared like a
    plain expectation, autograd passes within the range and its distance from the range is what is shown."""
    low, high = expected.low.to(got.device), expected.high.to(got.device)
    g = got.detach().to(low.dtype)
    inside = torch.minimum(torch.maximum(g, low), high)
    return torch.where(torch.isnan(g), expected.as_subclass(torch.Tensor).to(got.device), inside)


def _compare_tensors(got: torch.Tensor, want: torch.Tensor, label: str, name: str, atol, rtol) -> list[str]:
    default_rtol, default_atol = DEFAULT_TOLERANCES.get(got.dtype, (1e-7, 1e-7))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    g = got.to("cpu", torch.complex128 if got.is_complex() or want.is_complex() else torch.float64)
    w = want.to("cpu", g.dtype)  # compared on the host, wherever autograd and the expectation ran
    diff = (g - w).abs()
    allowed = atol + rtol * w.abs()
    bad = ~(diff <= allowed)
    bad |= torch.isnan(g) != torch.isnan(w)
    both_nan = torch.isnan(g) & torch.isnan(w)
    bad &= ~both_nan
    n_bad = int(bad.sum())
    if not n_bad:
        return []
    lines = [f"Gradient of {label} differs from expected: {n_bad} of {got.numel()} elements"]
    flat = bad.reshape(-1).nonzero().reshape(-1)
    order = torch.argsort(diff.reshape(-1)[flat].nan_to_num(math.inf), descending=True)[:LISTED]
    rows = []
    for pos in flat[order].tolist():
        index = _unravel(pos, got.shape)
        rows.append(
            [
                f"{name}{format_index(index)}",
                f"autograd={_fmt(g.reshape(-1)[pos].item())}",
                f"expected={_fmt(w.reshape(-1)[pos].item())}",
                f"|diff|={float(diff.reshape(-1)[pos]):.1e}",
                f"allowed {float(allowed.reshape(-1)[pos]):.1e}",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    if n_bad > LISTED:
        lines.append(f"  ... and {n_bad - LISTED} more")
    rel = diff / w.abs().clamp_min(torch.finfo(torch.float64).tiny)
    worst_abs = int(diff.reshape(-1).nan_to_num(math.inf).argmax())
    worst_rel = int(rel.reshape(-1).nan_to_num(math.inf).argmax())
    lines.append(
        f"  greatest absolute difference {float(diff.reshape(-1)[worst_abs]):.2e} at {name}"
        f"{format_index(_unravel(worst_abs, got.shape))}, greatest relative difference "
        f"{float(rel.reshape(-1)[worst_rel]):.2e} at {name}{format_index(_unravel(worst_rel, got.shape))} "
        f"(allowed: atol={atol:g} + rtol={rtol:g}·|expected|)"
    )
    return lines


def _fmt(value) -> str:
    if isinstance(value, complex):
        return f"{value.real:.6g}{value.imag:+.6g}j"
    return f"{value:.6g}"


def _unravel(pos: int, shape: Sequence[int]) -> tuple:
    index = []
    for size in reversed(tuple(shape)):
        pos, r = divmod(pos, size)
        index.append(r)
    return tuple(reversed(index))
