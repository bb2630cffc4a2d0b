"""The argument parser: the options shared by the subcommands, and one sub-parser per command (each
command module adds its own). Standard library only, so ``gradcheck-kit --help`` stays fast.

Check options (``--mode``, ``--order``, ``--forward-ad``, ``--atol``, ``--rtol``, ``--seed``) take their
choices, defaults and validation from :mod:`gradcheck_kit.options`: a bad value is a usage error whose
text is the one ``check_gradients`` gives for the keyword (``--mode=fast is invalid: must be one of ...``).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from gradcheck_kit._text import Style, UsageError
from gradcheck_kit.cli._inputs import parse_wrt
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import FORWARD_AD, MODES, ORDERS, CheckOptions, check_choice, choice_texts, parse_option

__all__ = [
    "PROG",
    "COMMANDS",
    "COLOR_CHOICES",
    "Parser",
    "option_type",
    "choice_type",
    "number_type",
    "count_type",
    "color_parent",
    "target_parent",
    "checker_parent",
]

PROG = "gradcheck-kit"
COMMANDS = ("check", "fuzz", "audit")
COLOR_CHOICES = Style.CHOICES
#: the check options' defaults, as ``check_gradients`` has them
DEFAULTS = CheckOptions()


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def option_type(key: str, flag: str) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` for check option ``key``: a bad value raises :class:`UsageError` with
    :func:`gradcheck_kit.options.parse_option`'s message (argparse lets it through unchanged)."""

    def convert(text: str) -> Any:
        try:
            return parse_option(key, text, flag)
        except InvalidArgument as exc:
            raise UsageError(str(exc)) from None

    convert.__name__ = key
    return convert


def choice_type(flag: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An ``argparse`` ``type=`` for a choice that is not a check option (``--layout``, ``--color``): a bad
    value raises :class:`UsageError` with :func:`gradcheck_kit.options.check_choice`'s message."""

    def convert(text: str) -> str:
        try:
            return check_choice(flag, text, choices)
        except InvalidArgument as exc:
            raise UsageError(str(exc)) from None

    convert.__name__ = flag.lstrip("-")
    return convert


def number_type(text: str) -> float:
    """A finite number (``--min-value``, ``--max-value``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def count_type(least: int) -> Callable[[str], int]:
    """An int of at least ``least`` (``--examples``, ``--max-side``)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    convert.__name__ = "int"
    return convert


def color_parent() -> Parser:
    parent = Parser(add_help=False)
    parent.add_argument(
        "--color", "--colour", dest="color", type=choice_type("--color", COLOR_CHOICES), choices=COLOR_CHOICES,
        default="auto",
        help="colour the output: auto (on a terminal, unless NO_COLOR is set), always, never",
    )
    return parent


def target_parent() -> Parser:
    """``MODULE:FUNCTION`` and what shapes its inputs: for ``check`` and ``fuzz``."""
    parent = Parser(add_help=False)
    parent.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. torch.nn.functional:gelu")
    parent.add_argument(
        "--kwarg", action="append", default=[], metavar="NAME=VALUE",
        help="a keyword argument passed to the function (a Python literal), e.g. --kwarg dim=-1",
    )
    parent.add_argument(
        "--seed", type=option_type("seed", "--seed"), default=DEFAULTS.seed,
        help=f"seed of the private generator (default {DEFAULTS.seed})",
    )
    parent.add_argument("--min-value", type=number_type, default=None, help="smallest input value")
    parent.add_argument("--max-value", type=number_type, default=None, help="largest input value")
    parent.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON ('-': stdout)")
    parent.add_argument(
        "--wrt", type=parse_wrt, default=None, metavar="INDICES",
        help="the inputs to differentiate, by position: 0 or 0,2 (default: every floating input); "
        "the others are passed without requires_grad, e.g. a loss's target",
    )
    return parent


def _choices_metavar(key: str) -> str:
    return "{" + ",".join(choice_texts(key)) + "}"


def checker_parent() -> Parser:
    """The options of ``check_gradients`` that ``check`` and ``fuzz`` take."""
    parent = Parser(add_help=False)
    parent.add_argument(
        "--mode", type=option_type("mode", "--mode"), choices=MODES, default=DEFAULTS.mode,
        metavar=_choices_metavar("mode"),
    )
    parent.add_argument(
        "--order", type=option_type("order", "--order"), choices=ORDERS, default=DEFAULTS.order,
        metavar=_choices_metavar("order"),
        help="2 also checks second derivatives, 3 third derivatives, ... (by composition)",
    )
    parent.add_argument(
        "--forward-ad", type=option_type("forward_ad", "--forward-ad"), choices=FORWARD_AD,
        default=DEFAULTS.forward_ad, metavar=_choices_metavar("forward_ad"),
        help="check forward-mode AD too (auto: where the function supports it)",
    )
    for key in ("atol", "rtol"):
        parent.add_argument(
            f"--{key}", type=option_type(key, f"--{key}"), default=None,
            help=f"{'absolute' if key == 'atol' else 'relative'} tolerance (default: derived)",
        )
    parent.add_argument("--strict", action="store_true", help="entries that agree only approximately fail")
    parent.add_argument(
        "--batched", action="store_true", help="also check fn and its derivatives under vmap against one call per entry"
    )
    return parent
