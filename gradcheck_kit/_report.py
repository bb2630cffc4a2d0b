"""What a gradient check found, and how it reads.

Pure data and string building: nothing here computes a derivative or raises a mismatch.
A :class:`GradientReport` collects :class:`Mismatch` rows (capped), one :class:`CheckResult` per
check that ran or was skipped, and per-group counts so a message can say "2 of 144 entries".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gradcheck_kit._orders import check_title

__all__ = ["Mismatch", "CheckResult", "InputInfo", "GroupSummary", "GradientReport", "Note", "format_index"]

#: rows listed per (check, input, output) group in ``report.details()``
LISTED_PER_GROUP = 8
#: rows listed per group in ``str(report)`` of a failure
LISTED_SHORT = 5
#: ``str(report)`` of a failure stops at this many lines (``report.details()`` has the rest)
SHORT_LINES = 13
#: notes shown in ``str(report)`` of a failure
SHORT_NOTES = 2


class Note(str):
    """A report note: its text, with a machine-readable ``code`` (``"unchecked_nonfinite"``, ...)."""

    code: str

    def __new__(cls, text: str, code: str) -> "Note":
        note = super().__new__(cls, text)
        note.code = code
        return note

    def __reduce__(self):
        return (Note, (str(self), self.code))


def format_index(index: Optional[tuple]) -> str:
    if not index:
        return ""
    return "[" + ", ".join(str(i) for i in index) + "]"


def _num(value: Optional[float], digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, complex):
        return f"{_num(value.real, digits)}{'+' if value.imag >= 0 else '-'}{_num(abs(value.imag), digits)}j"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-4):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{value:.{digits}f}" else f"{value}"


def _sci(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.1e}"


@dataclass(frozen=True)
class Mismatch:
    """One derivative that autograd got wrong (or could not produce).

    ``index`` is the element of input ``input_index``; ``output_element`` the element of output
    ``output_index`` (``None`` when the check compared a projection ``v·out`` instead of one entry).
    ``kind`` is ``"jacobian"`` (one entry), ``"projected"`` (``d(v·out)/dx[index]``) or
    ``"directional"`` (``d(v·out)/dt`` along a random direction; ``index`` is then ``()``).
    """

    check: str
    input_index: int
    output_index: int
    index: tuple
    analytic: float
    numerical: float
    abs_error: float
    allowed: float
    output_element: Optional[tuple] = None
    input_name: str = "x"
    input_value: Optional[float] = None
    kind: str = "jacobian"
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.allowed > 0:
            return self.abs_error / self.allowed
        return math.inf if self.abs_error > 0 else 0.0

    def describe_derivative(self, output_name: str = "out") -> str:
        if self.kind == "directional":
            return f"d(v·{output_name}) along direction {self.index[0] if self.index else 0}"
        target = f"{self.input_name}{format_index(self.index)}"
        if self.kind == "projected" or self.output_element is None:
            return f"d(v·{output_name}) / d {target}"
        return f"d {output_name}{format_index(self.output_element)} / d {target}"

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "input_index": self.input_index,
            "input_name": self.input_name,
            "output_index": self.output_index,
            "index": list(self.index),
            "output_element": None if self.output_element is None else list(self.output_element),
            "kind": self.kind,
            "input_value": _jsonable(self.input_value),
            "analytic": _jsonable(self.analytic),
            "numerical": _jsonable(self.numerical),
            "abs_error": _jsonable(self.abs_error),
            "allowed": _jsonable(self.allowed),
            "note": self.note,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return value


@dataclass(frozen=True)
class CheckResult:
    """One check of a report: ``status`` is ``passed``, ``failed``, ``skipped`` or ``error``."""

    name: str
    status: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.status}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class InputInfo:
    index: int
    name: str
    shape: tuple
    dtype: str
    differentiated: bool
    layout: str = "contiguous"

    def describe(self) -> str:
        layout = "" if self.layout == "contiguous" else f", {self.layout}"
        return f"{self.name}, shape {tuple(self.shape)}, {self.dtype}{layout}"


@dataclass
class GroupSummary:
    """Counts for one (check, input, output) pair: how many derivatives were compared and failed."""

    check: str
    input_index: int
    output_index: int
    kind: str
    compared: int = 0
    failed: int = 0
    worst_ratio: float = 0.0
    unchecked: int = 0
    kinks: int = 0


@dataclass
class GradientReport:
    """The result of a gradient check. ``bool(report)`` is ``report.ok``."""

    function: str = "fn"
    mode: str = "full"
    seed: int = 0
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    evaluations: int = 0
    elapsed: float = 0.0
    method: str = ""
    path: str = ""
    resolution: Optional[float] = None
    reproduce: str = field(default="", compare=False, repr=False)  # built on first read: see defer_reproduce
    options: dict = field(default_factory=dict)
    #: fn itself failed (raised, or returned no tensors), not its gradients: ``assert_*`` raise
    #: :class:`FunctionError` (chained to ``function_error``), the CLI exits with 3
    function_failed: bool = False
    #: the exception fn (or its backward) raised, where it raised; not printed nor serialised
    function_error: Optional[BaseException] = field(default=None, compare=False, repr=False)

    # -- derived -----------------------------------------------------------------------------
    @property
    def fn_failed(self) -> bool:
        """The same as :attr:`function_failed` (the CLI's JSON spells it so)."""
        return self.function_failed

    @property
    def ok(self) -> bool:
        return not self.errors and not any(c.status in ("failed", "error") for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    def defer_reproduce(self, build: Callable[[], str]) -> None:
        """``build()`` gives ``reproduce`` when it is first read (building may save the inputs to a file)."""
        self.__dict__["_reproduce"] = ""
        self.__dict__["_reproduce_build"] = build

    @property
    def compared(self) -> int:
        return sum(g.compared for g in self.groups)

    @property
    def failed(self) -> int:
        return sum(g.failed for g in self.groups)

    @property
    def worst_ratio(self) -> float:
        """Largest ``|autograd - numerical| / allowed`` over everything compared (0 when nothing was)."""
        return max((g.worst_ratio for g in self.groups), default=0.0)

    def check(self, name: str) -> Optional[CheckResult]:
        for result in self.checks:
            if result.name == name:
                return result
        return None

    def input_name(self, index: int) -> str:
        for info in self.inputs:
            if info.index == index:
                return info.name
        return f"input{index}"

    def output_name(self, index: int) -> str:
        return "out" if len(self.outputs) <= 1 else f"out{index}"

    # -- text ----------------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        """The verdict in one phrase: what failed and why (``"fn raised TypeError: ..."``,
        ``"autograd's value is non-finite ..."``), or how close a pass was."""
        if self.ok:
            return f"ok, worst error/allowed {self.worst_ratio:.2g}"
        if self.errors:
            first = self.errors[0].splitlines()[0]
            return first if len(first) <= 200 else first[:197] + "..."
        if self.failed:
            rows = [m for m in self.mismatches if any(
                g.failed and (g.check, g.input_index, g.output_index) == (m.check, m.input_index, m.output_index)
                for g in self.groups)]
            nonfinite = [m for m in rows if not _finite(m.analytic) and _finite(m.numerical)]
            head = f"{self.failed} mismatch(es)"
            if nonfinite and len(nonfinite) == len(rows):
                return f"{head}: autograd's value is non-finite (NaN or inf) where the numerical one is finite"
            worst = max((m.ratio for m in rows if math.isfinite(m.ratio)), default=self.worst_ratio)
            return f"{head}, worst error {worst:.3g} x allowed" + (
                f" ({len(nonfinite)} non-finite)" if nonfinite else ""
            )
        failed = [c for c in self.checks if c.status in ("failed", "error")]
        if failed:
            return f"{failed[0].name}: {failed[0].detail or failed[0].status}"
        return "failed"

    def _pass_line(self) -> str:
        return (
            f"Gradients are close: {self.function}, {self.compared} derivatives compared "
            f"({self.mode} mode), worst error/allowed {self.worst_ratio:.2g}"
        )

    def __str__(self) -> str:
        if self.ok:
            notes = f" ({len(self.notes)} note{'s' if len(self.notes) != 1 else ''}: report.details())" if self.notes else ""
            return self._pass_line() + notes
        lines = self._failure_lines(LISTED_SHORT)
        if self.method:
            lines.append(f"Numerical: {self.method}")
        shown = list(self.notes[:SHORT_NOTES])
        lines.extend(f"Note: {n}" for n in shown)
        if len(self.notes) > len(shown):
            lines.append(f"({len(self.notes) - len(shown)} more note(s) and every check's detail: report.details())")
        if len(lines) > SHORT_LINES:
            lines = lines[: SHORT_LINES - 1] + ["... (the rest: report.details())"]
        if self.reproduce:
            lines.append(f"Reproduce: {self.reproduce}")
        return "\n".join(lines)

    def details(self) -> str:
        """Everything: the failures (up to 8 rows a group), every check with its detail, the numerical
        method, the evaluation path, the resolution and every note."""
        lines = [self._pass_line()] if self.ok else self._failure_lines(LISTED_PER_GROUP)
        if self.checks:
            lines.append("Checks:")
            lines.extend(f"  {c}" for c in self.checks)
        if self.method:
            lines.append(f"Numerical: {self.method}")
        if self.path:
            lines.append(f"Evaluation: {self.path}")
        if self.resolution is not None:
            lines.append(
                f"Resolution: relative errors below {self.resolution:.1e} of a derivative could go unseen"
            )
        lines.append(f"Evaluations of fn: {self.evaluations}, {self.elapsed:.2f}s")
        lines.extend(f"Note: {n}" for n in self.notes)
        if not self.ok and self.reproduce:
            lines.append(f"Reproduce: {self.reproduce}")
        return "\n".join(lines)

    def _failure_lines(self, listed: int) -> list[str]:
        lines: list[str] = []
        if self.errors and not self.failed:
            if len(self.errors) == 1 and self.function_failed:
                lines.append(f"Gradient check of {self.function} could not be completed: {self.errors[0]}")
            else:
                lines.append(f"Gradient check of {self.function} could not be completed:")
                lines.extend(f"  {e}" for e in self.errors)
            return lines
        lines.extend(self._mismatch_lines(listed))
        failed_checks = [c for c in self.checks if c.status in ("failed", "error") and not any(
            g.failed and g.check == c.name for g in self.groups)]
        if failed_checks:
            if not self.failed:
                lines.append(f"Gradient check of {self.function} failed:")
            lines.extend(f"  {c.name}: {c.detail or c.status}" for c in failed_checks)
        if self.errors:
            lines.extend(f"Error: {e}" for e in self.errors)
        return lines

    def _mismatch_lines(self, listed: int = LISTED_PER_GROUP) -> list[str]:
        lines: list[str] = []
        for group in self.groups:
            if not group.failed:
                continue
            info = next((i for i in self.inputs if i.index == group.input_index), None)
            described = info.describe() if info else f"input {group.input_index}"
            what = {
                "jacobian": "Jacobian entries",
                "projected": "projected derivatives d(v·out)/dx",
                "directional": "directional derivatives",
            }.get(group.kind, "derivatives")
            title = _CHECK_TITLES.get(group.check) or check_title(group.check) or f"{group.check} is not close"
            rows = [
                m
                for m in self.mismatches
                if (m.check, m.input_index, m.output_index) == (group.check, group.input_index, group.output_index)
            ]
            if group.input_index < 0:  # a directional derivative along all differentiated inputs at once
                names = rows[0].input_name.replace("+", ", ") if rows else ""
                target = f"all differentiated inputs together ({names})"
            else:
                target = f"input {group.input_index} ({described})"
            lines.append(
                f"{title}: {group.failed} of {group.compared} {what} of output {group.output_index} "
                f"with respect to {target}"
            )
            rows.sort(key=lambda m: -m.ratio)
            shown = rows[:listed]
            table = [self._row(m) for m in shown]
            widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))] if table else []
            for r in table:
                lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
            if group.failed > len(shown):
                lines.append(f"  ... and {group.failed - len(shown)} more")
            lines.extend(_note_lines(shown))
        return lines

    def _row(self, m: Mismatch) -> list[str]:
        value = "" if m.input_value is None or m.kind == "directional" else f"{m.input_name}={_num(m.input_value, 4)}"
        return [
            m.describe_derivative(self.output_name(m.output_index)),
            value,
            f"autograd={_num(m.analytic)}",
            f"numerical={_num(m.numerical)}",
            f"|diff|={_sci(m.abs_error)}",
            f"allowed {_sci(m.allowed)}",
        ]

    def to_dict(self) -> dict:
        return {
            "function": self.function,
            "ok": self.ok,
            "mode": self.mode,
            "seed": self.seed,
            "inputs": [
                {
                    "index": i.index,
                    "name": i.name,
                    "shape": list(i.shape),
                    "dtype": i.dtype,
                    "differentiated": i.differentiated,
                    "layout": i.layout,
                }
                for i in self.inputs
            ],
            "outputs": list(self.outputs),
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
            "compared": self.compared,
            "failed": self.failed,
            "worst_ratio": _jsonable(self.worst_ratio),
            "evaluations": self.evaluations,
            "elapsed": self.elapsed,
            "method": self.method,
            "path": self.path,
            "resolution": self.resolution,
            "errors": list(self.errors),
            "fn_failed": self.fn_failed,
            "notes": list(self.notes),
            "mismatches": [m.to_dict() for m in self.mismatches],
            "reproduce": self.reproduce,
            "function_failed": self.function_failed,
            "summary": self.summary,
            "note_codes": [getattr(n, "code", None) for n in self.notes],
        }


def _get_reproduce(report: GradientReport) -> str:
    text = report.__dict__.get("_reproduce", "")
    build = report.__dict__.pop("_reproduce_build", None)
    if not text and build is not None:
        text = report.__dict__["_reproduce"] = build()
    return text


def _set_reproduce(report: GradientReport, text: str) -> None:
    report.__dict__.pop("_reproduce_build", None)
    report.__dict__["_reproduce"] = text


# ``reproduce`` is a dataclass field read through this property: a deferred line is built on first read
GradientReport.reproduce = property(_get_reproduce, _set_reproduce)  # type: ignore[assignment]

_CHECK_TITLES = {
    "backward": "Gradients are not close",
    "forward_ad": "Forward-mode AD (jvp) is not close",
    "second_order": "Second derivatives (backward of backward) are not close",
    "second_order_forward": "Second derivatives (forward over backward) are not close",
    "reentrant": "Repeated backward is not close",
}


def _finite(value: Any) -> bool:
    if isinstance(value, complex):
        return math.isfinite(value.real) and math.isfinite(value.imag)
    return value is not None and math.isfinite(value)


def _note_lines(rows: list) -> list[str]:
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
