"""The command line: ``gradcheck-kit check | fuzz | audit`` (also ``python -m gradcheck_kit``).

::

    gradcheck-kit check torch.nn.functional:gelu --input 4,8:float32
    gradcheck-kit check torch.nn.functional:mse_loss --input 4,8 --input 4,8 --wrt 0
    gradcheck-kit fuzz mypkg.ops:fused_gelu --input ?,8:float32 --min-value -5 --max-value 5
    gradcheck-kit audit --ops tanh,softmax,layer_norm --json audit.json
    gradcheck-kit audit --ops tanh,mypkg.ops:my_sparsemax=4,8 --ops 'mypkg.ops:bilinear=3,4;4,5:float64'

Exit status: 0 when every check passes, 1 when a gradient is wrong, 2 on bad usage (unknown module or
function, bad shape or dtype, bad option, an unwritable ``--json`` target), 3 when the checked function
itself fails (raises, calls ``sys.exit``, returns no tensors), 4 on an internal error of gradcheck_kit;
errors are one line on stderr, never a traceback. A closed stdout (``| head``) ends quietly with 0.

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
from typing import Any, Callable, Sequence

from gradcheck_kit._text import Style, UsageError, format_ratio, format_table  # noqa: F401 - format_ratio re-exported

__all__ = ["main", "InputSpec", "parse_input_spec", "resolve_function", "format_table", "UsageError"]

PROG = "gradcheck-kit"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FN_FAILED = 3
EXIT_INTERNAL = 4

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




class CommandFailed(Exception):
    """The check could not run to a report: one line on stderr, exit status 1."""


class FunctionFailed(Exception):
    """The checked function itself failed (raised, called ``sys.exit``, returned no tensors) where the
    check could not report it: one line on stderr, exit status 3."""


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
    except (Exception, SystemExit) as exc:
        raise UsageError(f"importing {path!r} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# output for people: colour, tables








# --------------------------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


#: seeds the checker accepts (``check_gradients(seed=...)``)
SEED_LIMIT = 2**63


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = _float(text)
    except argparse.ArgumentTypeError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prove PyTorch gradients right or wrong: finite differences with error estimates "
        "against autograd, Hypothesis fuzzing, and an audit of torch operations.",
        epilog="Exit status: 0 all checks pass, 1 a gradient is wrong, 2 bad usage, 3 the checked function "
        "failed (raised or could not run), 4 an internal error of gradcheck_kit.",
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
    target.add_argument("--seed", type=_seed, default=0, help="seed of the private generator (default 0)")
    target.add_argument("--min-value", type=_float, default=None, help="smallest input value")
    target.add_argument("--max-value", type=_float, default=None, help="largest input value")
    target.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON ('-': stdout)")
    target.add_argument(
        "--wrt",
        type=parse_wrt,
        default=None,
        metavar="INDICES",
        help="the inputs to differentiate, by position: 0 or 0,2 (default: every floating input); "
        "the others are passed without requires_grad, e.g. a loss's target",
    )

    checker = _Parser(add_help=False)
    checker.add_argument("--mode", choices=["auto", "full", "directional"], default="auto")
    checker.add_argument(
        "--order", type=int, choices=[1, 2, 3, 4], default=1,
        help="2 also checks second derivatives, 3 third derivatives, ... (by composition)",
    )
    checker.add_argument(
        "--forward-ad",
        choices=["auto", "true", "false"],
        default="auto",
        help="check forward-mode AD too (auto: where the function supports it)",
    )
    checker.add_argument("--atol", type=_nonnegative_float, default=None, help="absolute tolerance (default: derived)")
    checker.add_argument("--rtol", type=_nonnegative_float, default=None, help="relative tolerance (default: derived)")
    checker.add_argument("--strict", action="store_true", help="entries that agree only approximately fail")
    checker.add_argument(
        "--batched", action="store_true", help="also check fn and its derivatives under vmap against one call per entry"
    )

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
    p_audit.add_argument(
        "--ops",
        action="append",
        default=None,
        metavar="NAMES",
        help="comma-separated op names, as torch spells them, and your own functions as MODULE:FUNCTION "
        "(inputs from --input) or MODULE:FUNCTION=SHAPE[:DTYPE][;SHAPE[:DTYPE]...]; may be repeated",
    )
    p_audit.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        default=[],
        metavar="SHAPE[:DTYPE]",
        help="inputs of the MODULE:FUNCTION entries of --ops that give none, one per positional argument; "
        "a floating input without a dtype follows --dtypes",
    )
    p_audit.add_argument("--dtypes", default="float32,float64", metavar="DTYPES", help="default float32,float64")
    p_audit.add_argument("--quick", action="store_true", help="a fast subset with fewer checks (under a minute)")
    p_audit.add_argument(
        "--examples", type=_nonnegative_int, default=None, help="random expressions per elementwise op and dtype"
    )
    p_audit.add_argument(
        "--order", type=int, choices=[1, 2], default=None,
        help="highest derivative order (default: 2 where torch has double backward; 1 with --quick)",
    )
    p_audit.add_argument(
        "--strict", action="store_true", help="count failures listed as known torch issues as failures"
    )
    p_audit.add_argument("--seed", type=_seed, default=0, help="seed of the private generators (default 0)")
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
    """Run the command line; returns the exit status (0 pass, 1 a gradient is wrong, 2 bad usage, 3 the
    checked function failed, 4 an internal error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = f"{PROG} {argv[0]}" if argv and argv[0] in ("check", "fuzz", "audit") else PROG
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            _flush_stdout()
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            status = int(args.handler(args))
        except SystemExit as exc:  # the checked function called sys.exit (imports are caught apart)
            raise FunctionFailed(f"the function called sys.exit({exc.code!r})") from None
        _flush_stdout()
        return status
    except BrokenPipeError:  # | head: stop quietly, as other Unix tools do
        _silence_stdout()
        return EXIT_OK
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except FunctionFailed as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_FN_FAILED
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
        return EXIT_INTERNAL


def _flush_stdout() -> None:
    """Flush now, so that a closed pipe surfaces here as BrokenPipeError and not at interpreter exit."""
    sys.stdout.flush()


def _silence_stdout() -> None:
    """Point stdout at devnull, so that the flush at interpreter exit does not fail again (the recipe of
    the Python docs, 'Note on SIGPIPE')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass


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
        "batched": args.batched,
    }


def _prepare_target(
    args: argparse.Namespace, *, allow_free: bool
) -> tuple[Callable[..., Any], list[InputSpec], list[int] | None]:
    """The function (keywords bound), its input specs and the ``--wrt`` indices; every usage error is
    raised here, before any work."""
    _check_json_path(args.json)
    specs = [parse_input_spec(text, allow_free=allow_free) for text in args.inputs]
    kwargs = dict(parse_kwarg(text) for text in args.kwarg)
    if args.min_value is not None and args.max_value is not None and args.min_value > args.max_value:
        raise UsageError(f"--min-value {args.min_value} is greater than --max-value {args.max_value}")
    wrt = _resolve_wrt(args.wrt, specs)
    for spec in specs:
        _check_size(spec)
    fn = resolve_function(args.target)
    _check_call(fn, args.target, len(specs), kwargs)
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


def _check_size(spec: InputSpec) -> None:
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


def _check_call(fn: Callable[..., Any], target: str, n_inputs: int, kwargs: dict[str, Any]) -> None:
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


def _check_builtin_call(fn: Callable[..., Any], target: str, inputs: Sequence[Any]) -> None:
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
                f"--input: {target} cannot be called with the {len(inputs)} input(s) given: {_one_line(exc)}"
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


def _make_inputs(
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
            raise UsageError(f"--input {spec}: cannot create the tensor: {_one_line(exc)}") from None
    return inputs


def _write_json(path: str, payload: Any) -> str | None:
    """Write ``payload``; returns why a file could not be written (None when it was)."""
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=True)
    if path == "-":
        sys.stdout.write(text + "\n")
        return None
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        return f"--json {path!r}: could not write the results: {exc.strerror or exc} (the report is above)"
    return None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_VERDICTS = {EXIT_OK: ("PASSED", "green"), EXIT_FAILED: ("FAILED", "red"), EXIT_FN_FAILED: ("ERROR", "red")}


def _verdict_line(style: Style, status: int, text: str) -> str:
    word, colour = _VERDICTS[status]
    if status == EXIT_FN_FAILED:
        text += "  (the function failed)"
    return style(f"{word} {text}", colour)


def report_status(report: Any) -> int:
    """The exit status for a report: 0 ok, 3 when fn itself failed, 1 otherwise."""
    if report.ok:
        return EXIT_OK
    return EXIT_FN_FAILED if getattr(report, "fn_failed", False) else EXIT_FAILED


def _cmd_check(args: argparse.Namespace) -> int:
    fn, specs, wrt = _prepare_target(args, allow_free=False)
    import torch

    import gradcheck_kit as gk

    generator = torch.Generator().manual_seed(args.seed)
    inputs = _make_inputs(specs, generator, args, wrt)
    _check_builtin_call(fn, args.target, inputs)
    options = _checker_options(args)
    if wrt is not None:
        options["wrt"] = wrt
    report = _run_check(gk, fn, inputs, options)
    status = report_status(report)
    json_error = None if args.json is None else _write_json(args.json, report.to_dict())
    if args.json != "-" or json_error:
        style = Style.for_stream(sys.stdout, args.color)
        print(str(report))
        shapes = ", ".join(str(s) for s in specs)
        extra = "" if wrt is None else f"  wrt={','.join(map(str, wrt))}"
        print(_verdict_line(style, status, f"{args.target}({shapes})  seed={args.seed}{extra}"))
    if json_error:
        raise UsageError(json_error)
    return status


def _run_check(gk: Any, fn: Callable[..., Any], inputs: Sequence[Any], options: dict[str, Any]) -> Any:
    from gradcheck_kit.errors import FunctionError, InvalidArgument

    try:
        return gk.check_gradients(fn, *inputs, **options)
    except InvalidArgument as exc:
        raise UsageError(_one_line(exc)) from None
    except FunctionError as exc:
        raise FunctionFailed(f"the function failed: {_one_line(exc)}") from None


def _check_json_path(path: str | None) -> None:
    """Fail before the work, not after it, when ``--json PATH`` cannot be written. A device or a pipe
    (``/dev/stdout``) is not probed: opening a pipe can block, and a probe write would reach it."""
    if path is None or path == "-":
        return
    if os.path.isdir(path):
        raise UsageError(f"--json {path!r} is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--json {path!r}: no such directory {folder!r}")
    try:
        if os.path.exists(path):
            if os.path.isfile(path):
                with open(path, "a", encoding="utf-8"):  # opens for writing, changes nothing
                    pass
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.remove(path)
    except OSError as exc:
        raise UsageError(f"--json {path!r}: cannot write there: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# fuzz


def _cmd_fuzz(args: argparse.Namespace) -> int:
    fn, specs, wrt = _prepare_target(args, allow_free=True)
    for spec in specs:
        if spec.dtype not in FLOATING or spec.dtype.startswith("complex"):
            raise UsageError(f"--input {spec}: fuzz draws real floating tensors (float64, float32, ...)")
    try:
        importlib.import_module("gradcheck_kit._fuzz")
        from gradcheck_kit import strategies as gst
    except ImportError as exc:
        raise UsageError(f"fuzz is not available in this build ({_one_line(exc)})") from None
    import hypothesis.strategies as st
    import torch

    import gradcheck_kit as gk

    strategies = []
    for i, spec in enumerate(specs):
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
                requires_grad=wrt is None or i in wrt,
            )
        )
    options = _checker_options(args)
    seed = options.pop("seed")
    if wrt is not None:
        options["wrt"] = wrt
    from gradcheck_kit.errors import InvalidArgument

    try:
        result = gk.fuzz_gradients(fn, strategies, max_examples=args.examples, seed=seed, **options)
    except InvalidArgument as exc:
        raise UsageError(_one_line(exc)) from None
    status = EXIT_OK if result.ok else report_status(result.report) if result.report is not None else EXIT_FAILED
    json_error = None if args.json is None else _write_json(args.json, _fuzz_to_dict(result))
    if args.json != "-" or json_error:
        style = Style.for_stream(sys.stdout, args.color)
        print(str(result))
        shapes = ", ".join(str(s) for s in specs)
        examples = getattr(result, "examples", None)
        tried = f"{examples} example{'' if examples == 1 else 's'}" if examples is not None else f"up to {args.examples} examples"
        extra = "" if wrt is None else f", wrt={','.join(map(str, wrt))}"
        print(_verdict_line(style, status, f"{args.target}({shapes})  {tried}, seed={args.seed}{extra}"))
    if json_error:
        raise UsageError(json_error)
    return status


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

    entries = _audit.split_ops(args.ops) if args.ops is not None else None
    names = None if entries is None else [e for e in entries if not _audit.is_function_entry(e)]
    functions = [] if entries is None else [e for e in entries if _audit.is_function_entry(e)]
    if args.inputs and not functions:
        raise UsageError("--input gives the inputs of MODULE:FUNCTION entries of --ops, and there is none")
    dtypes = []
    for name in (d.strip() for d in args.dtypes.split(",") if d.strip()):
        canonical = DTYPES.get(name.lower().removeprefix("torch."))
        if canonical not in ("float32", "float64"):
            raise UsageError(f"--dtypes: {name!r} is not float32 or float64")
        if canonical not in dtypes:
            dtypes.append(canonical)
    if not dtypes:
        raise UsageError("--dtypes: give float32, float64 or both")
    catalogue = _audit.catalogue()
    if args.list:
        rows = [(op.name, op.family, op.call, "yes" if op.quick else "") for op in catalogue]
        print(format_table(["op", "family", "checked as", "quick"], rows))
        return EXIT_OK
    ops = _audit.select(catalogue, names, quick=args.quick)  # UsageError for unknown names
    ops += [_function_entry(_audit, entry, args) for entry in functions]
    progress = None if args.quiet else _audit.Progress(sys.stderr, Style.for_stream(sys.stderr, args.color))
    result = _audit.run_audit(
        ops, dtypes=dtypes, quick=args.quick, examples=args.examples, seed=args.seed, order=args.order,
        strict=args.strict,
        progress=progress,
    )
    json_error = None if args.json is None else _write_json(args.json, result.to_dict())
    if args.json != "-" or json_error:
        print(_audit.format_results(result, Style.for_stream(sys.stdout, args.color)))
    if json_error:
        raise UsageError(json_error)
    if result.ok:
        return EXIT_OK
    if not any(row.verdict == "FAIL" for row in result.rows) and any(row.fn_failed for row in result.rows):
        return EXIT_FN_FAILED
    return EXIT_FAILED


def _function_entry(audit: Any, entry: str, args: argparse.Namespace) -> Any:
    """``MODULE:FUNCTION`` (inputs from ``--input``) or ``MODULE:FUNCTION=SHAPE[:DTYPE][;...]`` as an
    audit entry."""
    target, sep, shapes = entry.partition("=")
    target = target.strip()
    if sep:
        texts = [t for t in shapes.split(";") if t.strip()]
        if not texts:
            raise UsageError(f"--ops {entry!r}: no input shapes after '=' (e.g. {target}=4,8:float32)")
    else:
        texts = list(args.inputs)
        if not texts:
            raise UsageError(
                f"--ops {entry!r}: give the function's inputs, as --ops '{target}=4,8:float32' or --input 4,8:float32"
            )
    specs = []
    for text in texts:
        try:
            specs.append(parse_input_spec(text))
        except UsageError as exc:
            raise UsageError(f"--ops {entry!r}: {str(exc).removeprefix('--input ')}" if sep else str(exc)) from None
        _check_size(specs[-1])
    explicit = [":" in text for text in texts]
    fn = resolve_function(target)
    _check_call(fn, target, len(specs), {})
    return audit.function_op(target, fn, specs, explicit, make_input, order=args.order or 1)
