"""Inputs: which are differentiated, what they are called, and copies that keep the caller's layout.

A complex tensor is handled through its real coordinates (``view_as_real``: re, im per element), so
every derivative the kit compares is a real number; see ``coords`` / ``from_coords``.
"""

from __future__ import annotations

import inspect
import math
import types
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from gradcheck_kit.report import InputInfo
from gradcheck_kit.errors import InvalidArgument

__all__ = [
    "function_name",
    "parameter_names",
    "input_names",
    "display_names",
    "default_wrt",
    "wrt_index",
    "resolve_wrt",
    "layout_clone",
    "describe_layout",
    "is_differentiable",
    "coords",
    "coords64",
    "n_coords",
    "from_coords",
    "coord_index",
    "input_infos",
]


def is_differentiable(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())


def function_name(fn: Any) -> str:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return f"{owner.__name__}.apply"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    module = getattr(fn, "__module__", None) or ""
    short = getattr(fn, "__name__", name)
    if name.startswith("_VariableFunctionsClass.") or module == "torch":
        return f"torch.{short}"
    if module in ("torch.nn.functional", "torch._C._nn"):
        return f"F.{short}"
    if module in ("torch.linalg", "torch._C._linalg"):
        return f"torch.linalg.{short}"
    if module.startswith("torch.") and "." not in name:
        return f"{module.replace('torch._C._', 'torch.')}.{short}"
    return name


def input_names(fn: Any, n: int, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        names = list(given)
        if len(names) != n or not all(isinstance(s, str) and s for s in names):
            raise InvalidArgument(f"input_names={given!r} must be {n} non-empty strings, one per input")
        return names
    names = parameter_names(fn)[:n]
    if n == 1 and not names:
        names = ["x"]
    while len(names) < n:
        names.append(f"input{len(names)}")
    if len(set(names)) != len(names):
        names = [f"input{i}" for i in range(n)]
    return names


def display_names(fn: Any, count: int, taken: Iterable[str] = ()) -> list[str]:
    """Names of ``count`` positional arguments of ``fn``, one by one: its parameter's name, or ``input{i}``
    where it has none or the name is ``taken`` (a module's parameter paths) or used already."""
    positional = parameter_names(fn)
    taken = set(taken)
    names: list[str] = []
    for i in range(count):
        candidate = positional[i] if i < len(positional) else f"input{i}"
        if candidate in taken or candidate in names:
            candidate = f"input{i}"
        names.append(candidate)
    return names


def parameter_names(fn: Any) -> list[str]:
    """The names of ``fn``'s positional parameters (up to ``*args``)."""
    if isinstance(fn, types.FunctionType) and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__"):
        code = fn.__code__  # a plain function: its code object says it (inspect.signature costs far more)
        return list(code.co_varnames[: code.co_argcount])
    key = _signature_key(fn)
    if key is not None and key in _SIGNATURES:
        return list(_SIGNATURES[key])
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            break
    if key is not None:
        if len(_SIGNATURES) >= 256:
            _SIGNATURES.clear()
        _SIGNATURES[key] = tuple(names)
    return names


#: parameter names of builtins (``torch.sin``), of methods bound to a class (``Function.apply``) and of
#: instances of classes with a Python ``__call__`` (a wrapper counting calls, a module), whose
#: ``inspect.signature`` costs as much as a small check's backward
_SIGNATURES: dict = {}


def _signature_key(fn: Any) -> Any:
    if isinstance(fn, types.BuiltinFunctionType):
        return fn
    if isinstance(fn, types.MethodType):
        return (fn.__func__, fn.__self__) if isinstance(fn.__self__, type) else None
    if isinstance(fn, (type, types.FunctionType)):
        return None
    call = getattr(type(fn), "__call__", None)
    if isinstance(call, types.FunctionType) and not any(hasattr(fn, a) for a in _OWN_SIGNATURE):
        return (type(fn), call)  # an instance of a class with a Python __call__: the class decides
    return None


#: attributes through which an object (not its class's ``__call__``) gives ``inspect.signature`` its answer
_OWN_SIGNATURE = ("__signature__", "__wrapped__", "__text_signature__", "_partialmethod", "__code__")


def default_wrt(inputs: Sequence[Any]) -> list[int]:
    """The inputs differentiated when ``wrt`` is not given: the floating and complex tensors that require
    grad, or every one of them when none does (empty when there is none)."""
    tensors = [i for i, t in enumerate(inputs) if is_differentiable(t)]
    return [i for i in tensors if inputs[i].requires_grad] or tensors


def wrt_index(wrt: Any, i: Any, inputs: Sequence[Any]) -> int:
    """Item ``i`` of ``wrt``, an index of a differentiable input (negative counts from the end), as an index
    in ``range(len(inputs))``; otherwise an :class:`InvalidArgument` naming ``wrt``."""
    if not isinstance(i, int) or isinstance(i, bool):
        raise InvalidArgument(f"wrt={wrt!r} must hold input indices (ints), got {i!r}")
    if not -len(inputs) <= i < len(inputs):
        raise InvalidArgument(f"wrt={wrt!r}: index {i} is out of range for {len(inputs)} input(s)")
    i = i % len(inputs)
    t = inputs[i]
    if not isinstance(t, torch.Tensor):
        raise InvalidArgument(f"wrt={wrt!r}: input {i} is a {type(t).__name__}, not a tensor")
    if not is_differentiable(t):
        raise InvalidArgument(
            f"wrt={wrt!r}: input {i} is a {t.dtype} tensor; only floating-point and complex tensors have gradients"
        )
    return i


def resolve_wrt(inputs: Sequence[Any], wrt: Any) -> list[int]:
    """``wrt`` (``None``, an index or a sequence of indices) -> the differentiated inputs' indices, in order
    and without repeats."""
    if wrt is None:
        chosen = default_wrt(inputs)
        if not chosen:
            kinds = ", ".join(type(t).__name__ if not isinstance(t, torch.Tensor) else str(t.dtype) for t in inputs)
            raise InvalidArgument(
                f"inputs=({kinds}) contain no floating-point or complex tensor to differentiate"
            )
        return chosen
    if isinstance(wrt, int) and not isinstance(wrt, bool):
        wrt = [wrt]
    try:
        indices = list(wrt)
    except TypeError:
        raise InvalidArgument(f"wrt={wrt!r} must be an input index or a sequence of indices") from None
    if not indices:
        raise InvalidArgument(f"wrt={wrt!r} is empty: name at least one input to differentiate")
    return list(dict.fromkeys(wrt_index(wrt, i, inputs) for i in indices))


def describe_layout(t: torch.Tensor) -> str:
    if t.is_contiguous() and t.storage_offset() == 0:
        return "contiguous"
    parts = []
    if t.dim() >= 2 and not t.is_contiguous() and t.transpose(-1, -2).is_contiguous():
        parts.append("transposed")
    elif not t.is_contiguous():
        parts.append(f"strided (strides {tuple(t.stride())})")
    if t.storage_offset():
        parts.append(f"storage offset {t.storage_offset()}")
    return ", ".join(parts) or "contiguous"


def layout_clone(t: torch.Tensor) -> torch.Tensor:
    """A detached copy with the same sizes, strides and storage offset, in storage of its own."""
    t = t.detach()
    if t.is_contiguous() and t.storage_offset() == 0:
        return t.clone(memory_format=torch.contiguous_format)
    if any(s < 0 for s in t.stride()) or t.numel() == 0:
        return t.clone()
    extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    offset = t.storage_offset()
    start = 0
    if offset + extent > 4 * t.numel() + 4096:  # a small view of a huge buffer: keep strides, shrink the offset
        start = offset - min(offset, 16)
    # copy the caller's storage around the view too, so a kernel that reads outside its view sees what it
    # would see on the caller's tensor (not uninitialised memory)
    region = torch.as_strided(t, (offset + extent - start,), (1,), start)
    buffer = region.clone()
    view = buffer.as_strided(t.shape, t.stride(), offset - start)
    return view


def n_coords(t: torch.Tensor) -> int:
    return t.numel() * (2 if t.is_complex() else 1)


def coords(t: torch.Tensor) -> torch.Tensor:
    """Real coordinates of a tensor as a flat vector (complex: re, im per element)."""
    t = t.detach()
    if t.is_complex():
        return torch.view_as_real(t.resolve_conj().contiguous()).reshape(-1)
    return t if t.dim() == 1 else t.reshape(-1)


def coords64(t: torch.Tensor) -> torch.Tensor:
    """``coords`` in float64 (exact for every float dtype) on the CPU: what the numerics and comparisons use
    (fn and autograd run on the inputs' device; the kit's arithmetic on the host)."""
    return coords(t).to("cpu", torch.float64)


def batched_coords(t: torch.Tensor) -> torch.Tensor:
    """``(B, *shape)`` -> ``(B, n_coords)``."""
    if t.is_complex():
        return torch.view_as_real(t.resolve_conj().contiguous()).reshape(t.shape[0], -1)
    return t.reshape(t.shape[0], -1)


def from_coords(c: torch.Tensor, shape: Sequence[int], complex_: bool) -> torch.Tensor:
    """``(B, n_coords)`` real -> ``(B, *shape)`` (complex when ``complex_``)."""
    if complex_:
        return torch.view_as_complex(c.reshape(c.shape[0], *shape, 2).contiguous())
    return c.reshape(c.shape[0], *shape)


def coord_index(j: int, shape: Sequence[int], complex_: bool) -> tuple[tuple, str]:
    part = ""
    if complex_:
        j, r = divmod(j, 2)
        part = "real part" if r == 0 else "imaginary part"
    index = []
    for size in reversed(tuple(shape)):
        j, r = divmod(j, size)
        index.append(r)
    return tuple(reversed(index)), part


def input_infos(inputs: Sequence[Any], names: Sequence[str], wrt: Sequence[int]) -> list[InputInfo]:
    infos = []
    for i, (t, name) in enumerate(zip(inputs, names)):
        if isinstance(t, torch.Tensor):
            infos.append(
                InputInfo(i, name, tuple(t.shape), str(t.dtype).replace("torch.", ""), i in wrt, describe_layout(t))
            )
        else:
            infos.append(InputInfo(i, name, (), type(t).__name__, False, "-"))
    return infos


def scale_of(x_coords: torch.Tensor) -> torch.Tensor:
    """Power-of-two step scale per coordinate: 2^round(log2(max(|x|, 1)))."""
    mag = x_coords.abs().clamp(min=1.0)
    return torch.exp2(torch.round(torch.log2(mag)))


#: smallest tensors ``bitwise_equal`` compares (smaller ones go to torch.equal, faster there)
BITWISE_MIN_ELEMENTS = 1 << 14
#: integer dtypes of each element size, for comparing bits (``bitwise_equal``)
_BITS_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one shape and dtype hold the same bits: numpy's comparison of their integer
    views, several times faster than ``torch.equal`` on large CPU tensors (0.16 against 0.8 ms at 10^6
    float32 elements). False where it cannot tell (another device, dtype or shape, a complex or quantized
    dtype): callers then ask ``torch.equal``, so a True here is always a True there, or NaN in the same
    places. Below ``BITWISE_MIN_ELEMENTS`` elements it answers False at once: ``torch.equal`` takes about
    1 µs there, numpy's conversions 12."""
    if a.numel() < BITWISE_MIN_ELEMENTS:
        return False
    a, b = a.detach(), b.detach()
    if a.shape != b.shape or a.dtype != b.dtype or a.device.type != "cpu" or b.device.type != "cpu":
        return False
    if a.is_complex() or a.is_quantized or a.layout != torch.strided:
        return False
    itype = _BITS_OF_SIZE.get(a.element_size())
    if itype is None:
        return False
    try:
        return bool(np.array_equal(a.view(itype).numpy(), b.view(itype).numpy()))
    except (RuntimeError, TypeError):  # a view numpy cannot take: torch.equal decides
        return False


def safe_float(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        return math.nan
    return v
