"""The command line's output: the verdict line, exit statuses, and ``--json`` files (probed before the work)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from gradcheck_kit._text import Style, UsageError

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_FN_FAILED", "EXIT_INTERNAL", "CommandFailed", "FunctionFailed",
    "check_json_path", "write_json", "json_default", "verdict_line", "report_status",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FN_FAILED = 3
EXIT_INTERNAL = 4


class CommandFailed(Exception):
    """The check could not run to a report: one line on stderr, exit status 1."""


class FunctionFailed(Exception):
    """The checked function itself failed (raised, called ``sys.exit``, returned no tensors) where the
    check could not report it: one line on stderr, exit status 3."""


def write_json(path: str, payload: Any) -> str | None:
    """Write ``payload``; returns why a file could not be written (None when it was)."""
    text = json.dumps(payload, indent=2, default=json_default, allow_nan=True)
    if path == "-":
        sys.stdout.write(text + "\n")
        return None
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        return f"--json {path!r}: could not write the results: {exc.strerror or exc} (the report is above)"
    return None


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_VERDICTS = {EXIT_OK: ("PASSED", "green"), EXIT_FAILED: ("FAILED", "red"), EXIT_FN_FAILED: ("ERROR", "red")}


def verdict_line(style: Style, status: int, text: str) -> str:
    word, colour = _VERDICTS[status]
    if status == EXIT_FN_FAILED:
        text += "  (the function failed)"
    return style(f"{word} {text}", colour)


def report_status(report: Any) -> int:
    """The exit status for a report: 0 ok, 3 when fn itself failed, 1 otherwise."""
    if report.ok:
        return EXIT_OK
    return EXIT_FN_FAILED if getattr(report, "fn_failed", False) else EXIT_FAILED


def check_json_path(path: str | None) -> None:
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
