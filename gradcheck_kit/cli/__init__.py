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

The package imports only the standard library at start-up, so ``gradcheck-kit --help`` is fast;
torch and Hypothesis are imported inside the commands.

Layout: ``_parser`` (the shared options, validated by :mod:`gradcheck_kit.options`), one module per command
(``_check``, ``_fuzz``, ``_audit_command``: each adds its sub-parser and runs it), ``_inputs`` (targets,
shapes, random inputs) and ``_output`` (exit statuses, verdict lines, ``--json``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from gradcheck_kit._text import Style, UsageError, format_ratio, format_table
from gradcheck_kit.cli import _audit_command, _check, _fuzz
from gradcheck_kit.cli._inputs import (
    DTYPES,
    FLOATING,
    InputSpec,
    make_input,
    one_line,
    parse_input_spec,
    parse_kwarg,
    parse_wrt,
    resolve_function,
)
from gradcheck_kit.cli._output import (
    EXIT_FAILED,
    EXIT_FN_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    FunctionFailed,
    report_status,
)
from gradcheck_kit.cli._parser import COMMANDS, PROG, Parser, checker_parent, color_parent, target_parent

__all__ = [
    "main",
    "build_parser",
    "InputSpec",
    "parse_input_spec",
    "parse_kwarg",
    "parse_wrt",
    "resolve_function",
    "make_input",
    "report_status",
    "format_table",
    "format_ratio",
    "Style",
    "UsageError",
    "DTYPES",
    "FLOATING",
    "PROG",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_FN_FAILED",
    "EXIT_INTERNAL",
]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each command module adds its own sub-parser."""
    parser = Parser(
        prog=PROG,
        description="Prove PyTorch gradients right or wrong: finite differences with error estimates "
        "against autograd, Hypothesis fuzzing, and an audit of torch operations.",
        epilog="Exit status: 0 all checks pass, 1 a gradient is wrong, 2 bad usage, 3 the checked function "
        "failed (raised or could not run), 4 an internal error of gradcheck_kit.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser)
    color, target, checker = color_parent(), target_parent(), checker_parent()
    _check.add_parser(sub, [target, checker, color])
    _fuzz.add_parser(sub, [target, checker, color])
    _audit_command.add_parser(sub, [color])
    return parser


def _version() -> str:
    from gradcheck_kit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 pass, 1 a gradient is wrong, 2 bad usage, 3 the
    checked function failed, 4 an internal error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = f"{PROG} {argv[0]}" if argv and argv[0] in COMMANDS else PROG
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
            f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} "
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
