"""The audit's output for people: progress on stderr, the closing table, failures and a summary line."""

from __future__ import annotations

from typing import TextIO

import torch

from gradcheck_kit._text import Style, format_ratio, format_table
from gradcheck_kit.audit._run import AuditResult, AuditRow
from gradcheck_kit.audit._types import COLOURS, VERDICTS, AuditOp

__all__ = ["Progress", "format_results"]


class Progress:
    """Progress on stderr: one rewritten line on a terminal, one line per op and dtype otherwise."""

    def __init__(self, stream: TextIO, style: Style):
        self.stream = stream
        self.style = style
        isatty = getattr(stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.width = 0

    def start(self, index: int, total: int, op: AuditOp, dtype: str) -> None:
        self.prefix = f"[{index:>{len(str(total))}}/{total}] {op.name} {dtype}"
        if self.live:
            self.stream.write(f"\r\x1b[K{self.prefix} ...")
            self.stream.flush()

    def done(self, row: AuditRow) -> None:
        colour = COLOURS[row.verdict]
        line = f"{self.prefix}: {self.style(row.verdict, colour)} ({row.elapsed:.2f} s)"
        if self.live:
            self.stream.write(f"\r\x1b[K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def format_results(result: AuditResult, style: Style) -> str:
    """The closing table, the failures' reports, and a summary line."""
    headers = ["op", "family", "dtype", "checks", "verdict", "worst err/allowed", "time"]
    rows = [
        [r.op, r.family, r.dtype, r.checks_cell(), r.verdict, format_ratio(r.worst_ratio), f"{r.elapsed:.2f}s"]
        for r in result.rows
    ]
    colours = COLOURS

    def colour(r: int, c: int, cell: str) -> str:
        if c == 4:
            return style(cell, colours[result.rows[r].verdict])
        return cell

    parts = [format_table(headers, rows, align="lllrlrr", colour=colour)]
    for r in result.rows:
        if r.verdict == "pass":
            continue
        parts.append("")
        reason = f" - {r.known_issue}" if r.verdict == "known" else ""
        parts.append(style(f"{r.verdict}: {r.op} ({r.dtype}){reason}", colours[r.verdict]))
        for detail in r.details:
            parts.append(_indent(_cap_lines(detail, 14)))
    noted = [name for name in dict.fromkeys(r.op for r in result.rows) if name in result.notes]
    if noted:
        parts.append("")
        parts.append("Notes:")
        parts.extend(f"  {name}: {result.notes[name]}" for name in noted)
    counts = {v: sum(1 for r in result.rows if r.verdict == v) for v in VERDICTS}
    n_ops = len(dict.fromkeys(r.op for r in result.rows))
    dtypes = ", ".join(dict.fromkeys(r.dtype for r in result.rows))
    summary = (
        f"{n_ops} ops x {dtypes}: {counts['pass']} passed, {counts['FAIL']} failed, "
        f"{counts['error']} errors{f', {n} known issues' if (n := counts['known']) else ''}"
        f" in {result.elapsed:.1f} s"
        f" (torch {torch.__version__}, seed {result.seed}{', quick' if result.quick else ''}"
        f"{'' if result.expressions_available else ', no random expressions in this build'})"
    )
    parts.append("")
    parts.append(style(summary, "green" if result.ok else "red"))
    return "\n".join(parts)


def _cap_lines(text: str, limit: int) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text
    return "\n".join([*lines[:limit], f"... ({len(lines) - limit} more lines; --json has the full report)"])


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
