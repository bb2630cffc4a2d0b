"""The command line's inputs: ``MODULE:FUNCTION``, ``--input SHAPE[:DTYPE]``, ``--kwarg``, ``--wrt``, and the
random tensors drawn for them. Each problem is a :class:`~gradcheck_kit._text.UsageError` naming the flag,
raised before any work."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import sys
from typing import Any, Callable, Sequence

from gradcheck_kit._text import UsageError
from gradcheck_kit.options import FLOATING_DTYPES

__all__ = [
    "DTYPES",
    "FLOATING",
    "InputSpec",
    "parse_input_spec",
    "parse_kwarg",
    "parse_wrt",
    "resolve_function",
    "one_line",
    "prepare_target",
    "check_size",
    "check_call",
    "check_builtin_call",
    "make_input",
    "make_inputs",
]

#: dtype names accepted in ``--input SHAPE:DTYPE`` (aliases as torch spells them)
DTYPES: dict[str, str] = {
    "float64": "float64",
    "double": "float64",
    "f64": "float64",
    "float32": "float32",
    "float": "float32",
    "f32": "float32",
    "float16": "float16",
    "half": "float16",
    "f16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "complex128": "complex128",
    "cdouble": "complex128",
    "complex64": "complex64",
    "cfloat": "complex64",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}
FLOATING = frozenset(FLOATING_DTYPES)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One ``--input``: a shape (``None`` marks a ``?`` that Hypothesis chooses) and a dtype name."""

    shape: tuple[int | None, ...]
    dtype: str = "float64"

    @property
    def free(self) -> bool:
        return any(side is None for side in self.shape)

    def __str__(self) -> str:
        shape = ",".join("?" if s is None else str(s) for s in self.shape) or "()"
        return f"{shape}:{self.dtype}"


def parse_input_spec(text: str, *, allow_free: bool = False, default_dtype: str = "float64") -> InputSpec:
    """Parse ``SHAPE[:DTYPE]``: ``4,8:float32``, ``(4, 8)``, ``():float64`` or ``:float32`` (a scalar).

    With ``allow_free``, a side written ``?`` is left for Hypothesis to choose (``fuzz``).
    Raises :class:`UsageError` with a message that names the spec.
    """
    raw = text.strip()
    shape_text, sep, dtype_text = raw.rpartition(":") if ":" in raw else (raw, "", "")
    dtype_text = dtype_text.strip()
    if sep and not dtype_text:
        raise UsageError(f"--input {text!r}: missing dtype after ':' (e.g. {shape_text or '4,8'}:float32)")
    dtype = default_dtype
    if dtype_text:
        name = dtype_text.lower().removeprefix("torch.")
        if name not in DTYPES:
            close = difflib.get_close_matches(name, list(DTYPES), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(_canonical_dtypes())}"
            raise UsageError(f"--input {text!r}: unknown dtype {dtype_text!r}{hint}")
        dtype = DTYPES[name]
    body = shape_text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1].strip()
    elif body.startswith("[") and body.endswith("]"):
        body = body[1:-1].strip()
    if not body:
        return InputSpec((), dtype)
    parts = [part.strip() for part in body.replace("x", ",").split(",")]
    if parts and parts[-1] == "" and len(parts) > 1:  # a trailing comma, as in (4,)
        parts.pop()
    shape: list[int | None] = []
    for part in parts:
        if part == "?":
            if not allow_free:
                raise UsageError(f"--input {text!r}: '?' sizes are for 'fuzz'; 'check' needs every size")
            shape.append(None)
            continue
        try:
            side = int(part)
        except ValueError:
            raise UsageError(
                f"--input {text!r}: bad shape {shape_text.strip()!r}; write sizes separated by commas, "
                "e.g. 4,8:float32 (a scalar is () or empty)"
            ) from None
        if side < 0:
            raise UsageError(f"--input {text!r}: negative size {side}")
        shape.append(side)
    return InputSpec(tuple(shape), dtype)


def _canonical_dtypes() -> list[str]:
    return sorted(set(DTYPES.values()))


def parse_kwarg(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE a Python literal: ``dim=-1``, ``approximate='tanh'``, ``size=(2, 3)``."""
    import ast

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageError(f"--kwarg {text!r}: expected NAME=VALUE, e.g. dim=-1")
    try:
        return name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UsageError(
            f"--kwarg {text!r}: {value.strip()!r} is not a Python literal; quote a string: {name}='{value.strip()}'"
        ) from None


def parse_wrt(text: str) -> list[int]:
    """``--wrt 0`` or ``--wrt 0,2``: indices of the inputs to differentiate."""
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected input indices separated by commas (e.g. 0 or 0,2), got {text!r}") from None
    return indices


def resolve_function(target: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted: ``torch:linalg.solve``).

    ``MODULE`` may also be a path to a ``.py`` file. The current directory is importable, as with
    ``python -m``. Raises :class:`UsageError` naming what could not be found, with close matches.
    """
    module_name, sep, attr_path = target.rpartition(":")
    if not sep:
        module_name, _, attr_path = target.rpartition(".")
    if not module_name or not attr_path or ":" in module_name:
        raise UsageError(
            f"{target!r}: expected MODULE:FUNCTION with one ':', e.g. torch.nn.functional:gelu "
            "(a dotted name goes after it: torch:linalg.solve)"
        )
    module = _import_module(module_name)
    obj: Any = module
    owner = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("__")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"{owner!r} has no attribute {part!r}{hint}") from None
        except Exception as exc:  # a property that raises, say
            raise UsageError(f"getting {part!r} from {owner!r} failed: {type(exc).__name__}: {exc}") from None
        owner = f"{owner}.{part}" if owner != module_name else f"{module_name}:{part}"
    if not callable(obj):
        raise UsageError(f"{target!r} is a {type(obj).__name__}, not a function")
    return obj


def _import_module(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    if name.endswith(".py") or os.sep in name or (os.altsep and os.altsep in name):
        return _import_path(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        if name == missing or name.startswith(missing + "."):
            raise UsageError(f"no module named {missing!r} (importing {name!r})") from None
        raise UsageError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None
    except (Exception, SystemExit) as exc:
        raise UsageError(f"importing {name!r} failed: {type(exc).__name__}: {one_line(exc)}") from None


def _import_path(path: str) -> Any:
    import importlib.util

    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path!r}")
    module_name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise UsageError(f"importing {path!r} failed: {type(exc).__name__}: {one_line(exc)}") from None
    return module


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def prepare_target(
    args: argparse.Namespace, *, allow_free: bool
) -> tuple[Callable[..., Any], list[InputSpec], list[int] | None]:
    """The function (keywords bound), its input specs and the ``--wrt`` indices; every usage error is
    raised here, before any work."""
    specs = [parse_input_spec(text, allow_free=allow_free) for text in args.inputs]
    kwargs = dict(parse_kwarg(text) for text in args.kwarg)
    if args.min_value is not None and args.max_value is not None and args.min_value > args.max_value:
        raise UsageError(f"--min-value {args.min_value} is greater than --max-value {args.max_value}")
    wrt = _resolve_wrt(args.wrt, specs)
    for spec in specs:
        check_size(spec)
    fn = resolve_function(args.target)
    check_call(fn, args.target, len(specs), kwargs)
    if kwargs:
        import functools

        fn = functools.wraps(fn)(functools.partial(fn, **kwargs))
    return fn, specs, wrt


def _resolve_wrt(indices: list[int] | None, specs: Sequence[InputSpec]) -> list[int] | None:
    """``--wrt`` checked against the inputs: in range, floating; negative indices count from the end."""
    if indices is None:
        return None
    text = ",".join(str(i) for i in indices)
    chosen: list[int] = []
    for i in indices:
        if not -len(specs) <= i < len(specs):
            raise UsageError(f"--wrt {text}: index {i} is out of range for {len(specs)} --input(s)")
        i %= len(specs)
        if specs[i].dtype not in FLOATING:
            raise UsageError(f"--wrt {text}: input {i} is {specs[i].dtype}; only floating inputs are differentiated")
        if i not in chosen:
            chosen.append(i)
    return chosen


#: element sizes in bytes, for the memory an ``--input`` needs
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
             "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


def check_size(spec: InputSpec) -> None:
    """An input too large for this machine is a usage error, raised before anything is allocated."""
    import math

    numel = math.prod(s for s in spec.shape if s is not None)
    needed = numel * max(_ITEMSIZE.get(spec.dtype, 8), 8)  # values are drawn in 64-bit first
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: torch's own error will say
        return
    if needed > memory // 2:
        raise UsageError(
            f"--input {spec}: {numel} elements need {needed / 2**30:.3g} GiB, more than half of this "
            f"machine's memory ({memory / 2**30:.3g} GiB)"
        )


def check_call(fn: Callable[..., Any], target: str, n_inputs: int, kwargs: dict[str, Any]) -> None:
    """The ``--input`` count and ``--kwarg`` names must fit fn's signature (where Python can read it)."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin: the call itself will tell
        return
    try:
        signature.bind_partial(**kwargs)
    except TypeError as exc:
        raise UsageError(f"--kwarg: {target}{signature} does not take it: {exc}") from None
    try:
        signature.bind(*range(n_inputs), **kwargs)
    except TypeError as exc:
        raise UsageError(
            f"--input: {n_inputs} given, but {target}{signature} cannot be called with them: {exc} "
            "(give one --input per positional argument)"
        ) from None


def check_builtin_call(fn: Callable[..., Any], target: str, inputs: Sequence[Any]) -> None:
    """For a builtin (no signature to read), one call: a TypeError raised by the call itself, not from
    inside the function, means the inputs do not fit it (``log() takes 1 positional argument but 2 were
    given``). Run without grad, on copies, with the global RNG restored; other failures are left to the
    check, which reports them."""
    import inspect

    import torch

    try:
        inspect.signature(fn)
        return
    except (TypeError, ValueError):
        pass
    copies = [x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            fn(*copies)
    except TypeError as exc:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            raise UsageError(
                f"--input: {target} cannot be called with the {len(inputs)} input(s) given: {one_line(exc)}"
            ) from None
    except Exception:  # noqa: BLE001 - the check reports what fn does
        pass


def make_input(
    spec: InputSpec,
    generator: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    requires_grad: bool = True,
):
    """A random tensor for ``spec`` drawn from ``generator`` (never the global RNG).

    Floating inputs are standard normal (uniform in ``[min_value, max_value]`` when a bound is given)
    and require grad (unless ``requires_grad=False``); integer inputs are uniform in
    ``[min_value or 0, max_value or 5)``.
    """
    import torch

    dtype = getattr(torch, spec.dtype)
    shape = tuple(int(s) for s in spec.shape)  # type: ignore[arg-type]
    if spec.dtype in FLOATING:
        real = torch.float64 if not dtype.is_complex else torch.complex128
        if min_value is None and max_value is None:
            values = torch.randn(shape, generator=generator, dtype=real)
        else:
            lo = min_value if min_value is not None else (max_value - 2.0)  # type: ignore[operator]
            hi = max_value if max_value is not None else lo + 2.0
            values = lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=real)
        return values.to(dtype).requires_grad_(requires_grad)
    if spec.dtype == "bool":
        return torch.rand(shape, generator=generator) < 0.5
    lo = int(min_value) if min_value is not None else 0
    hi = int(max_value) if max_value is not None else max(lo + 5, 5)
    return torch.randint(lo, max(hi, lo + 1), shape, generator=generator, dtype=dtype)


def make_inputs(
    specs: Sequence[InputSpec], generator: Any, args: argparse.Namespace, wrt: list[int] | None
) -> list[Any]:
    inputs = []
    for i, spec in enumerate(specs):
        try:
            inputs.append(
                make_input(
                    spec, generator, min_value=args.min_value, max_value=args.max_value,
                    requires_grad=wrt is None or i in wrt,
                )
            )
        except (RuntimeError, MemoryError, OverflowError, ValueError) as exc:
            raise UsageError(f"--input {spec}: cannot create the tensor: {one_line(exc)}") from None
    return inputs
