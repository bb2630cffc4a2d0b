"""Plain-text helpers shared by the command line and the audit: styled output, tables, ratios, and the
usage error. Standard library only, so that neither the CLI's start-up nor the audit imports the other."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence, TextIO

__all__ = ["Style", "UsageError", "format_ratio", "format_table"]


class UsageError(Exception):
    """Bad usage: reported as one line on stderr, exit status 2."""


class Style:
    """ANSI colour when writing to a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""

    CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}
    #: the choices of ``--color``
    CHOICES = ("auto", "always", "never")

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
