"""The command line: ``gradcheck-kit check | fuzz | audit`` (also ``python -m gradcheck_kit``).

::

    gradcheck-kit check torch.nn.functional:gelu --input 4,8:float32
    gradcheck-kit fuzz mypkg.ops:fused_gelu --input ?,8:float32 --min-value -5 --max-value 5
    gradcheck-kit audit --ops tanh,softmax,layer_norm --json audit.json

Exit status: 0 when every check passes, 1 when a gradient is wrong (or the checked function fails),
2 on bad usage (unknown module or function, bad shape or dtype, bad option), always with a one-line
error on stderr and never a traceback.

This module imports only the standard library at start-up, so ``gradcheck-kit --help`` is fast;
torch and Hypothesis are imported inside the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import json
import os
import sys
from typing import Any, Callable, Iterable, Sequence, TextIO

__all__ = ["main", "InputSpec", "parse_input_spec", "resolve_function", "format_table", "UsageError"]

PROG = "gradcheck-kit"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

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
FLOATING = frozenset({"float64", "float32", "float16", "bfloat16", "complex128", "complex64"})


class UsageError(Exception):
    """Bad usage: reported as one line on stderr, exit status 2."""


class CommandFailed(Exception):
    """The check could not run to a report (the function failed in a way the checker raised for):
    one line on stderr, exit status 1."""


# --------------------------------------------------------------------------------------------
# input specs: SHAPE[:DTYPE]


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
    """``NAME=VALUE`` with VALUE a Python literal (``dim=-1``, ``approximate='tanh'``) or a bare word."""
    import ast

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageError(f"--kwarg {text!r}: expected NAME=VALUE, e.g. dim=-1")
    try:
        return name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return name, value.strip()


# --------------------------------------------------------------------------------------------
# MODULE:FUNCTION


def resolve_function(target: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted: ``torch:linalg.solve``).

    ``MODULE`` may also be a path to a ``.py`` file. The current directory is importable, as with
    ``python -m``. Raises :class:`UsageError` naming what could not be found, with close matches.
    """
    module_name, sep, attr_path = target.rpartition(":")
    if not sep:
        module_name, _, attr_path = target.rpartition(".")
    if not module_name or not attr_path:
        raise UsageError(f"{target!r}: expected MODULE:FUNCTION, e.g. torch.nn.functional:gelu")
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
    except Exception as exc:
        raise UsageError(f"importing {name!r} failed: {type(exc).__name__}: {_one_line(exc)}") from None


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
    except Exception as exc:
        raise UsageError(f"importing {path!r} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# output for people: colour, tables


class Style:
    """ANSI colour when writing to a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""

    CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO, choice: str = "auto") -> Style:
        if choice == "always":
            return cls(True)
        if choice == "never" or os.environ.get("NO_COLOR"):
            return cls(False)
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty and isatty()) and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, colour: str) -> str:
        if not self.enabled or not text:
            return text
        return f"\x1b[{self.CODES[colour]}m{text}\x1b[0m"


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    align: str | None = None,
    colour: Callable[[int, int, str], str] | None = None,
) -> str:
    """Columns padded to their widest cell; ``align`` is one ``l``/``r`` per column.

    ``colour(row, column, padded_cell)`` may wrap a cell in colour codes after padding, so colour
    never disturbs the alignment.
    """
    rows = [[str(cell) for cell in row] for row in rows]
    align = align or "l" * len(headers)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str], r: int | None) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i])
            if colour is not None and r is not None:
                padded = colour(r, i, padded)
            out.append(padded)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers, None), rule, *(line(row, r) for r, row in enumerate(rows))])


def format_ratio(ratio: float | None) -> str:
    """``worst |error| / allowed`` for a table: ``0.031`` or ``12.5`` or ``-`` when nothing was compared."""
    if ratio is None:
        return "-"
    if ratio != ratio:  # nan
        return "nan"
    if ratio == float("inf"):
        return "inf"
    if ratio == 0:
        return "0"
    if ratio < 1e-3 or ratio >= 1e4:
        return f"{ratio:.1e}"
    return f"{ratio:.3g}"


# --------------------------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prove PyTorch gradients right or wrong: finite differences with error estimates "
        "against autograd, Hypothesis fuzzing, and an audit of torch operations.",
        epilog="Exit status: 0 all checks pass, 1 a gradient is wrong, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{check,fuzz,audit}", parser_class=_Parser)

    common = _Parser(add_help=False)
    common.add_argument(
        "--color",
        "--colour",
        dest="color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the output: auto (on a terminal, unless NO_COLOR is set), always, never",
    )

    target = _Parser(add_help=False)
    target.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. torch.nn.functional:gelu")
    target.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword argument passed to the function (a Python literal), e.g. --kwarg dim=-1",
    )
    target.add_argument("--seed", type=int, default=0, help="seed of the private generator (default 0)")
    target.add_argument("--min-value", type=_float, default=None, help="smallest input value")
    target.add_argument("--max-value", type=_float, default=None, help="largest input value")
    target.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON ('-': stdout)")

    checker = _Parser(add_help=False)
    checker.add_argument("--mode", choices=["auto", "full", "directional"], default="auto")
    checker.add_argument("--order", type=int, choices=[1, 2], default=1, help="2 also checks second derivatives")
    checker.add_argument(
        "--forward-ad",
        choices=["auto", "true", "false"],
        default="auto",
        help="check forward-mode AD too (auto: where the function supports it)",
    )
    checker.add_argument("--atol", type=_nonnegative_float, default=None, help="absolute tolerance (default: derived)")
    checker.add_argument("--rtol", type=_nonnegative_float, default=None, help="relative tolerance (default: derived)")
    checker.add_argument("--strict", action="store_true", help="entries that agree only approximately fail")

    p_check = sub.add_parser(
        "check",
        parents=[target, checker, common],
        help="check one function's gradients on random inputs",
        description="Check the gradients of MODULE:FUNCTION on random inputs of the given shapes.",
        epilog="example: gradcheck-kit check torch.nn.functional:gelu --input 4,8:float32",
    )
    p_check.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        required=True,
        metavar="SHAPE[:DTYPE]",
        help="one per positional argument: 4,8:float32, () for a scalar; dtype default float64",
    )
    p_check.set_defaults(handler=_cmd_check)

    p_fuzz = sub.add_parser(
        "fuzz",
        parents=[target, checker, common],
        help="search for inputs where the gradients are wrong (Hypothesis)",
        description="Search with Hypothesis for inputs where MODULE:FUNCTION's gradients are wrong, "
        "and print the shrunk counterexample.",
        epilog="example: gradcheck-kit fuzz mypkg.ops:fused_gelu --input ?,8:float32 --min-value -5 --max-value 5",
    )
    p_fuzz.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        required=True,
        metavar="SHAPE[:DTYPE]",
        help="as for check; a ? lets Hypothesis choose that size: ?,8:float32",
    )
    p_fuzz.add_argument("--examples", type=_positive_int, default=100, help="examples to try (default 100)")
    p_fuzz.add_argument("--max-side", type=_positive_int, default=5, help="largest size chosen for a ? (default 5)")
    p_fuzz.add_argument(
        "--layout",
        choices=["any", "contiguous", "noncontiguous"],
        default="any",
        help="memory layouts to draw (default any: contiguous and strided views)",
    )
    p_fuzz.set_defaults(handler=_cmd_fuzz)

    p_audit = sub.add_parser(
        "audit",
        parents=[common],
        help="check a built-in catalogue of torch operations",
        description="Check the gradients of a catalogue of torch operations (elementwise, reductions, "
        "linear algebra, normalisation, convolution, losses) in float32 and float64.",
        epilog="example: gradcheck-kit audit --ops tanh,softmax,layer_norm --json audit.json",
    )
    p_audit.add_argument("--ops", default=None, metavar="NAMES", help="comma-separated op names, as torch spells them")
    p_audit.add_argument("--dtypes", default="float32,float64", metavar="DTYPES", help="default float32,float64")
    p_audit.add_argument("--quick", action="store_true", help="a fast subset with fewer checks (under a minute)")
    p_audit.add_argument("--examples", type=int, default=None, help="random expressions per elementwise op and dtype")
    p_audit.add_argument(
        "--order", type=int, choices=[1, 2], default=None,
        help="highest derivative order (default: 2 where torch has double backward; 1 with --quick)",
    )
    p_audit.add_argument(
        "--strict", action="store_true", help="count failures listed as known torch issues as failures"
    )
    p_audit.add_argument("--seed", type=int, default=0)
    p_audit.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON ('-': stdout)")
    p_audit.add_argument("--list", action="store_true", help="list the catalogue and exit")
    p_audit.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p_audit.set_defaults(handler=_cmd_audit)
    return parser


def _version() -> str:
    from gradcheck_kit import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 pass, 1 a gradient is wrong, 2 bad usage)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.handler(args))
    except UsageError as exc:
        command = f"{PROG}" if not argv or argv[0] not in ("check", "fuzz", "audit") else f"{PROG} {argv[0]}"
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        command = f"{PROG} {argv[0]}" if argv else PROG
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, not a traceback (unless asked for)
        if os.environ.get("GRADCHECK_KIT_TRACEBACK"):
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(set GRADCHECK_KIT_TRACEBACK=1 to see the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except BrokenPipeError:  # | head
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK


# --------------------------------------------------------------------------------------------
# check


def _forward_ad(value: str) -> bool | str:
    return {"auto": "auto", "true": True, "false": False}[value]


def _checker_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": args.mode,
        "order": args.order,
        "forward_ad": _forward_ad(args.forward_ad),
        "atol": args.atol,
        "rtol": args.rtol,
        "seed": args.seed,
        "strict": args.strict,
    }


def _prepare_target(args: argparse.Namespace, *, allow_free: bool) -> tuple[Callable[..., Any], list[InputSpec]]:
    _check_json_path(args.json)
    specs = [parse_input_spec(text, allow_free=allow_free) for text in args.inputs]
    kwargs = dict(parse_kwarg(text) for text in args.kwarg)
    if args.min_value is not None and args.max_value is not None and args.min_value > args.max_value:
        raise UsageError(f"--min-value {args.min_value} is greater than --max-value {args.max_value}")
    fn = resolve_function(args.target)
    if kwargs:
        import functools

        fn = functools.wraps(fn)(functools.partial(fn, **kwargs))
    return fn, specs


def make_input(spec: InputSpec, generator: Any, *, min_value: float | None = None, max_value: float | None = None):
    """A random tensor for ``spec`` drawn from ``generator`` (never the global RNG).

    Floating inputs are standard normal (uniform in ``[min_value, max_value]`` when a bound is given)
    and require grad; integer inputs are uniform in ``[min_value or 0, max_value or 5)``.
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
        return values.to(dtype).requires_grad_(True)
    if spec.dtype == "bool":
        return torch.rand(shape, generator=generator) < 0.5
    lo = int(min_value) if min_value is not None else 0
    hi = int(max_value) if max_value is not None else max(lo + 5, 5)
    return torch.randint(lo, max(hi, lo + 1), shape, generator=generator, dtype=dtype)


def _write_json(path: str, payload: Any) -> None:
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=True)
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        raise UsageError(f"--json {path!r}: {exc.strerror or exc}") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _verdict_line(style: Style, ok: bool, text: str) -> str:
    return style(("PASSED " if ok else "FAILED ") + text, "green" if ok else "red")


def _cmd_check(args: argparse.Namespace) -> int:
    fn, specs = _prepare_target(args, allow_free=False)
    import torch

    import gradcheck_kit as gk

    generator = torch.Generator().manual_seed(args.seed)
    inputs = [make_input(s, generator, min_value=args.min_value, max_value=args.max_value) for s in specs]
    report = _run_check(gk, fn, inputs, _checker_options(args))
    to_stdout = args.json == "-"
    if args.json is not None:
        _write_json(args.json, report.to_dict())
    if not to_stdout:
        style = Style.for_stream(sys.stdout, args.color)
        print(str(report))
        shapes = ", ".join(str(s) for s in specs)
        print(_verdict_line(style, report.ok, f"{args.target}({shapes})  seed={args.seed}"))
    return EXIT_OK if report.ok else EXIT_FAILED


def _run_check(gk: Any, fn: Callable[..., Any], inputs: Sequence[Any], options: dict[str, Any]) -> Any:
    from gradcheck_kit.errors import FunctionError, InvalidArgument

    try:
        return gk.check_gradients(fn, *inputs, **options)
    except InvalidArgument as exc:
        raise UsageError(_one_line(exc)) from None
    except FunctionError as exc:
        raise CommandFailed(f"the function failed: {_one_line(exc)}") from None


def _check_json_path(path: str | None) -> None:
    """Fail before the work, not after it, when ``--json PATH`` cannot be written."""
    if path is None or path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--json {path!r}: no such directory {folder!r}")
    if os.path.isdir(path):
        raise UsageError(f"--json {path!r} is a directory")


# --------------------------------------------------------------------------------------------
# fuzz


def _cmd_fuzz(args: argparse.Namespace) -> int:
    fn, specs = _prepare_target(args, allow_free=True)
    try:
        importlib.import_module("gradcheck_kit._fuzz")
        from gradcheck_kit import strategies as gst
    except ImportError as exc:
        raise UsageError(f"fuzz is not available in this build ({_one_line(exc)})") from None
    import hypothesis.strategies as st
    import torch

    import gradcheck_kit as gk

    strategies = []
    for spec in specs:
        if spec.dtype not in FLOATING or spec.dtype.startswith("complex"):
            raise UsageError(f"--input {spec}: fuzz draws real floating tensors (float64, float32, ...)")
        shape: Any = (
            st.tuples(*(st.integers(1, args.max_side) if s is None else st.just(s) for s in spec.shape))
            if spec.free
            else tuple(spec.shape)
        )
        strategies.append(
            gst.tensors(
                shape=shape,
                dtype=getattr(torch, spec.dtype),
                min_value=args.min_value,
                max_value=args.max_value,
                layout=args.layout,
            )
        )
    options = _checker_options(args)
    seed = options.pop("seed")
    from gradcheck_kit.errors import InvalidArgument

    try:
        result = gk.fuzz_gradients(fn, strategies, max_examples=args.examples, seed=seed, **options)
    except InvalidArgument as exc:
        raise UsageError(_one_line(exc)) from None
    if args.json is not None:
        _write_json(args.json, _fuzz_to_dict(result))
    if args.json != "-":
        style = Style.for_stream(sys.stdout, args.color)
        print(str(result))
        shapes = ", ".join(str(s) for s in specs)
        examples = getattr(result, "examples", None)
        tried = f"{examples} examples" if examples is not None else f"up to {args.examples} examples"
        print(_verdict_line(style, result.ok, f"{args.target}({shapes})  {tried}, seed={args.seed}"))
    return EXIT_OK if result.ok else EXIT_FAILED


def _fuzz_to_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    report = getattr(result, "report", None)
    counterexample = getattr(result, "counterexample", None)
    return {
        "ok": bool(result.ok),
        "examples": getattr(result, "examples", None),
        "seed": getattr(result, "seed", None),
        "counterexample": None if counterexample is None else [_describe_value(x) for x in counterexample],
        "report": None if report is None else report.to_dict(),
    }


def _describe_value(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "stride"):
        return {
            "shape": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "stride": list(value.stride()),
            "storage_offset": value.storage_offset(),
            "values": value.detach().tolist(),
        }
    return _json_default(value)


# --------------------------------------------------------------------------------------------
# audit


def _cmd_audit(args: argparse.Namespace) -> int:
    _check_json_path(args.json)
    from gradcheck_kit import _audit

    catalogue = _audit.catalogue()
    if args.list:
        rows = [(op.name, op.family, op.call, "yes" if op.quick else "") for op in catalogue]
        print(format_table(["op", "family", "checked as", "quick"], rows))
        return EXIT_OK
    names = [n.strip() for n in args.ops.split(",") if n.strip()] if args.ops else None
    ops = _audit.select(catalogue, names, quick=args.quick)  # UsageError for unknown names
    dtypes = []
    for name in (d.strip() for d in args.dtypes.split(",") if d.strip()):
        canonical = DTYPES.get(name.lower().removeprefix("torch."))
        if canonical not in ("float32", "float64"):
            raise UsageError(f"--dtypes: {name!r} is not float32 or float64")
        if canonical not in dtypes:
            dtypes.append(canonical)
    if not dtypes:
        raise UsageError("--dtypes: give float32, float64 or both")
    if args.examples is not None and args.examples < 0:
        raise UsageError(f"--examples {args.examples}: must be >= 0")
    progress = None if args.quiet else _audit.Progress(sys.stderr, Style.for_stream(sys.stderr, args.color))
    result = _audit.run_audit(
        ops, dtypes=dtypes, quick=args.quick, examples=args.examples, seed=args.seed, order=args.order,
        strict=args.strict,
        progress=progress,
    )
    if args.json is not None:
        _write_json(args.json, result.to_dict())
    if args.json != "-":
        print(_audit.format_results(result, Style.for_stream(sys.stdout, args.color)))
    return EXIT_OK if result.ok else EXIT_FAILED
