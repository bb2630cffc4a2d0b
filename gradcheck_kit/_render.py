"""How a report reads: the text of ``str(report)``, ``report.details()`` and ``report.summary``, and the
plain data of ``report.to_dict()``. Pure string and dict building over the types of
``gradcheck_kit.report``, which call in here (so this module imports none of them)."""

from __future__ import annotations

import math
from typing import Any, Optional

from gradcheck_kit._orders import check_title

__all__ = [
    "check_line",
    "describe_derivative",
    "describe_input",
    "details",
    "format_index",
    "jsonable",
    "mismatch_dict",
    "ratio",
    "report_dict",
    "short_text",
    "summary",
]

#: rows listed per (check, input, output) group in ``report.details()``
LISTED_PER_GROUP = 8
#: rows listed per group in ``str(report)`` of a failure
LISTED_SHORT = 5
#: ``str(report)`` of a failure stops at this many lines (``report.details()`` has the rest)
SHORT_LINES = 13
#: notes shown in ``str(report)`` of a failure
SHORT_NOTES = 2
#: ``report.summary`` is cut to this many characters
SUMMARY_CHARS = 200

#: headings of a failed group, by check name (higher orders: ``_orders.check_title``)
CHECK_TITLES = {
    "backward": "Gradients are not close",
    "forward_ad": "Forward-mode AD (jvp) is not close",
    "second_order": "Second derivatives (backward of backward) are not close",
    "second_order_forward": "Second derivatives (forward over backward) are not close",
    "reentrant": "Repeated backward is not close",
}

#: what a group of each derivative kind counts
KIND_WORDS = {
    "jacobian": "Jacobian entries",
    "projected": "projected derivatives d(v·out)/dx",
    "directional": "directional derivatives",
}


# -- numbers ---------------------------------------------------------------------------------------
def format_index(index: Optional[tuple]) -> str:
    """``(1, 2)`` -> ``"[1, 2]"``; an empty or missing index -> ``""``."""
    if not index:
        return ""
    return "[" + ", ".join(str(i) for i in index) + "]"


def number(value: Optional[float], digits: int = 6) -> str:
    """A value for a table cell: fixed point where readable, else scientific; complex as ``a+bj``."""
    if value is None:
        return "-"
    if isinstance(value, complex):
        sign = "+" if value.imag >= 0 else "-"
        return f"{number(value.real, digits)}{sign}{number(abs(value.imag), digits)}j"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-4):
        return f"{value:.{digits - 1}e}"
    fixed = f"{value:.{digits}f}"
    return fixed.rstrip("0").rstrip(".") if "." in fixed else f"{value}"


def sci(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.1e}"


def jsonable(value: Any) -> Any:
    """A value JSON can hold: complex as ``[re, im]``, non-finite floats as strings."""
    if isinstance(value, complex):
        return [jsonable(value.real), jsonable(value.imag)]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return value


def finite(value: Any) -> bool:
    if isinstance(value, complex):
        return math.isfinite(value.real) and math.isfinite(value.imag)
    return value is not None and math.isfinite(value)


def ratio(abs_error: float, allowed: float) -> float:
    if allowed > 0:
        return abs_error / allowed
    return math.inf if abs_error > 0 else 0.0


def _plain(value: Any) -> Any:
    """An enum member as its plain ``str`` value (other values as they are)."""
    return str(value) if isinstance(value, str) else value


# -- parts -----------------------------------------------------------------------------------------
def describe_derivative(m: Any, output_name: str = "out") -> str:
    if m.kind == "directional":
        return f"d(v·{output_name}) along direction {m.index[0] if m.index else 0}"
    target = f"{m.input_name}{format_index(m.index)}"
    if m.kind == "projected" or m.output_element is None:
        return f"d(v·{output_name}) / d {target}"
    return f"d {output_name}{format_index(m.output_element)} / d {target}"


def check_line(c: Any) -> str:
    return f"{c.name}: {c.status}" + (f" ({c.detail})" if c.detail else "")


def describe_input(info: Any) -> str:
    layout = "" if info.layout == "contiguous" else f", {info.layout}"
    return f"{info.name}, shape {tuple(info.shape)}, {info.dtype}{layout}"


# -- summary ---------------------------------------------------------------------------------------
def summary(report: Any) -> str:
    if report.ok:
        return f"ok, worst error/allowed {report.worst_ratio:.2g}"
    if report.errors:
        first = report.errors[0].splitlines()[0]
        return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 3] + "..."
    if report.failed:
        return _mismatch_summary(report)
    failing = [c for c in report.checks if c.failing]
    if failing:
        return f"{failing[0].name}: {failing[0].detail or failing[0].status}"
    return "failed"


def _mismatch_summary(report: Any) -> str:
    failed_groups = [g for g in report.groups if g.failed]
    rows = [m for m in report.mismatches if any(g.holds(m) for g in failed_groups)]
    nonfinite = [m for m in rows if not finite(m.analytic) and finite(m.numerical)]
    head = f"{report.failed} mismatch(es)"
    if nonfinite and len(nonfinite) == len(rows):
        return f"{head}: autograd's value is non-finite (NaN or inf) where the numerical one is finite"
    worst = max((m.ratio for m in rows if math.isfinite(m.ratio)), default=report.worst_ratio)
    return f"{head}, worst error {worst:.3g} x allowed" + (f" ({len(nonfinite)} non-finite)" if nonfinite else "")


# -- text ------------------------------------------------------------------------------------------
def pass_line(report: Any) -> str:
    return (
        f"Gradients are close: {report.function}, {report.compared} derivatives compared "
        f"({report.mode} mode), worst error/allowed {report.worst_ratio:.2g}"
    )


def short_text(report: Any) -> str:
    """``str(report)``: one line for a pass; for a failure the worst rows, two notes, and how to reproduce."""
    notes = report.notes
    if report.ok:
        counted = f" ({len(notes)} note{'s' if len(notes) != 1 else ''}: report.details())" if notes else ""
        return pass_line(report) + counted
    lines = failure_lines(report, LISTED_SHORT)
    if report.method:
        lines.append(f"Numerical: {report.method}")
    shown = list(notes[:SHORT_NOTES])
    lines.extend(f"Note: {n}" for n in shown)
    if len(notes) > len(shown):
        lines.append(f"({len(notes) - len(shown)} more note(s) and every check's detail: report.details())")
    if len(lines) > SHORT_LINES:
        lines = lines[: SHORT_LINES - 1] + ["... (the rest: report.details())"]
    if report.reproduce:
        lines.append(f"Reproduce: {report.reproduce}")
    return "\n".join(lines)


def details(report: Any) -> str:
    lines = [pass_line(report)] if report.ok else failure_lines(report, LISTED_PER_GROUP)
    if report.checks:
        lines.append("Checks:")
        lines.extend(f"  {c}" for c in report.checks)
    if report.method:
        lines.append(f"Numerical: {report.method}")
    if report.path:
        lines.append(f"Evaluation: {report.path}")
    if report.resolution is not None:
        lines.append(f"Resolution: relative errors below {report.resolution:.1e} of a derivative could go unseen")
    lines.append(f"Evaluations of fn: {report.evaluations}, {report.elapsed:.2f}s")
    lines.extend(f"Note: {n}" for n in report.notes)
    if not report.ok and report.reproduce:
        lines.append(f"Reproduce: {report.reproduce}")
    return "\n".join(lines)


def failure_lines(report: Any, listed: int) -> list[str]:
    lines: list[str] = []
    if report.errors and not report.failed:
        if len(report.errors) == 1 and report.function_failed:
            lines.append(f"Gradient check of {report.function} could not be completed: {report.errors[0]}")
        else:
            lines.append(f"Gradient check of {report.function} could not be completed:")
            lines.extend(f"  {e}" for e in report.errors)
        return lines
    for group in report.groups:
        if group.failed:
            lines.extend(group_lines(report, group, listed))
    grouped = {g.check for g in report.groups if g.failed}
    failed_checks = [c for c in report.checks if c.failing and c.name not in grouped]
    if failed_checks:
        if not report.failed:
            lines.append(f"Gradient check of {report.function} failed:")
        lines.extend(f"  {c.name}: {c.detail or c.status}" for c in failed_checks)
    lines.extend(f"Error: {e}" for e in report.errors)
    return lines


def group_lines(report: Any, group: Any, listed: int) -> list[str]:
    """A failed group: its heading, its worst ``listed`` rows as a table, and the rows' notes."""
    rows = sorted((m for m in report.mismatches if group.holds(m)), key=lambda m: -m.ratio)
    title = CHECK_TITLES.get(group.check) or check_title(group.check) or f"{group.check} is not close"
    what = KIND_WORDS.get(group.kind, "derivatives")
    lines = [
        f"{title}: {group.failed} of {group.compared} {what} of output {group.output_index} "
        f"with respect to {_target(report, group, rows)}"
    ]
    shown = rows[:listed]
    table = [_row(report, m) for m in shown]
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))] if table else []
    lines.extend("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table)
    if group.failed > len(shown):
        lines.append(f"  ... and {group.failed - len(shown)} more")
    lines.extend(note_lines(shown))
    return lines


def _target(report: Any, group: Any, rows: list) -> str:
    if group.all_inputs:
        names = rows[0].input_name.replace("+", ", ") if rows else ""
        return f"all differentiated inputs together ({names})"
    info = next((i for i in report.inputs if i.index == group.input_index), None)
    described = info.describe() if info else f"input {group.input_index}"
    return f"input {group.input_index} ({described})"


def _row(report: Any, m: Any) -> list[str]:
    value = "" if m.input_value is None or m.kind == "directional" else f"{m.input_name}={number(m.input_value, 4)}"
    return [
        m.describe_derivative(report.output_name(m.output_index)),
        value,
        f"autograd={number(m.analytic)}",
        f"numerical={number(m.numerical)}",
        f"|diff|={sci(m.abs_error)}",
        f"allowed {sci(m.allowed)}",
    ]


def note_lines(rows: list) -> list[str]:
    """The rows' notes, one line per distinct note: ``"x[1, 2]: note"``, or ``"8 entries of x: note"``."""
    by_note: dict[str, list] = {}
    for m in rows:
        if m.note:
            by_note.setdefault(m.note, []).append(m)
    lines = []
    for note, ms in by_note.items():
        if len(ms) == 1:
            lines.append(f"  note on {ms[0].input_name}{format_index(ms[0].index)}: {note}")
        else:
            names = ", ".join(dict.fromkeys(m.input_name for m in ms))
            lines.append(f"  note on {len(ms)} entries of {names}: {note}")
    return lines


# -- plain data ------------------------------------------------------------------------------------
def mismatch_dict(m: Any) -> dict:
    return {
        "check": _plain(m.check),
        "input_index": m.input_index,
        "input_name": m.input_name,
        "output_index": m.output_index,
        "index": list(m.index),
        "output_element": None if m.output_element is None else list(m.output_element),
        "kind": _plain(m.kind),
        "input_value": jsonable(m.input_value),
        "analytic": jsonable(m.analytic),
        "numerical": jsonable(m.numerical),
        "abs_error": jsonable(m.abs_error),
        "allowed": jsonable(m.allowed),
        "note": m.note,
    }


def input_dict(i: Any) -> dict:
    return {
        "index": i.index,
        "name": i.name,
        "shape": list(i.shape),
        "dtype": i.dtype,
        "differentiated": i.differentiated,
        "layout": i.layout,
    }


def report_dict(report: Any) -> dict:
    return {
        "function": report.function,
        "ok": report.ok,
        "mode": report.mode,
        "seed": report.seed,
        "inputs": [input_dict(i) for i in report.inputs],
        "outputs": list(report.outputs),
        "checks": [{"name": _plain(c.name), "status": _plain(c.status), "detail": c.detail} for c in report.checks],
        "compared": report.compared,
        "failed": report.failed,
        "worst_ratio": jsonable(report.worst_ratio),
        "evaluations": report.evaluations,
        "extra_evaluations": report.extra_evaluations,
        "elapsed": report.elapsed,
        "method": report.method,
        "path": report.path,
        "resolution": report.resolution,
        "errors": list(report.errors),
        "fn_failed": report.fn_failed,
        "notes": list(report.notes),
        "mismatches": [m.to_dict() for m in report.mismatches],
        "reproduce": report.reproduce,
        "function_failed": report.function_failed,
        "summary": report.summary,
        "note_codes": [_plain(code) for code in report.note_codes],
    }
