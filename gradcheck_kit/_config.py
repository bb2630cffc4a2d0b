"""Process-wide defaults for the checkers, and listeners that see every report.

The pytest plugin (and the command line) set defaults such as the seed or the mode for a block
of code with :func:`defaults` (validated as ``check_gradients`` validates its keywords, by
:mod:`gradcheck_kit.options`), and collect every :class:`GradientReport` the checkers produce with
:func:`add_report_listener`. Nothing here imports torch, pytest or Hypothesis.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import OPTION_NAMES, CheckOptions, check_option

__all__ = ["defaults", "current_defaults", "add_report_listener", "remove_report_listener", "notify_report"]

#: keywords of ``check_gradients`` whose default can be set here
CONFIGURABLE = frozenset(OPTION_NAMES)
BUILTIN_DEFAULTS: dict[str, Any] = CheckOptions().as_dict()

_DEFAULTS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "gradcheck_kit_defaults", default=BUILTIN_DEFAULTS
)
_LISTENERS: list[Callable[[Any], None]] = []


def current_defaults() -> dict[str, Any]:
    return dict(_DEFAULTS.get())


@contextlib.contextmanager
def defaults(**overrides: Any) -> Iterator[dict[str, Any]]:
    """Within the block, ``check_gradients`` keywords left unset take these values."""
    unknown = sorted(set(overrides) - CONFIGURABLE)
    if unknown:
        raise InvalidArgument(f"defaults: unknown keyword(s) {unknown}; known: {sorted(CONFIGURABLE)}")
    checked = {key: check_option(key, value) for key, value in overrides.items()}
    merged = {**_DEFAULTS.get(), **checked}
    token = _DEFAULTS.set(merged)
    try:
        yield merged
    finally:
        _DEFAULTS.reset(token)


def add_report_listener(listener: Callable[[Any], None]) -> None:
    """Call ``listener(report)`` after every ``check_gradients`` (and the checks built on it)."""
    _LISTENERS.append(listener)


def remove_report_listener(listener: Callable[[Any], None]) -> None:
    with contextlib.suppress(ValueError):
        _LISTENERS.remove(listener)


def notify_report(report: Any) -> None:
    for listener in list(_LISTENERS):
        listener(report)
