"""What a gradient check found, and how it reads.

Pure data and string building: nothing here computes a derivative or raises a mismatch.
A :class:`GradientReport` collects :class:`Mismatch` rows (capped), one :class:`CheckResult` per
check that ran or was skipped, and per-group counts so a message can say "2 of 144 entries".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["Mismatch", "CheckResult", "InputInfo", "GroupSummary", "GradientReport", "format_index"]

#: rows listed per (check, input, output) group in ``str(report)``
LISTED_PER_GROUP = 8


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
    reproduce: str = ""
    options: dict = field(default_factory=dict)
    #: fn itself failed (raised, or returned no tensors) at the inputs or near them: ``errors`` says how
    fn_failed: bool = False

    # -- derived -----------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return not self.errors and not any(c.status in ("failed", "error") for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

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
    def __str__(self) -> str:
        lines: list[str] = []
        if self.ok:
            lines.append(
                f"Gradients are close: {self.function}, {self.compared} derivatives compared "
                f"({self.mode} mode), worst error/allowed {self.worst_ratio:.2g}"
            )
        elif self.errors and not self.failed:
            lines.append(f"Gradient check of {self.function} could not be completed:")
            lines.extend(f"  {e}" for e in self.errors)
        else:
            lines.extend(self._mismatch_lines())
            failed_checks = [c for c in self.checks if c.status in ("failed", "error") and not any(
                g.failed and g.check == c.name for g in self.groups)]
            if failed_checks:
                if not self.failed:
                    lines.append(f"Gradient check of {self.function} failed:")
                lines.extend(f"  {c.name}: {c.detail}" for c in failed_checks)
            if self.errors:
                lines.extend(f"Error: {e}" for e in self.errors)
        checks = " · ".join(str(c) for c in self.checks)
        if checks:
            lines.append(f"Checks: {checks}")
        if self.method:
            lines.append(f"Numerical: {self.method}")
        if self.resolution is not None:
            lines.append(
                f"Resolution: relative errors below {self.resolution:.1e} of a derivative could go unseen"
            )
        lines.extend(f"Note: {n}" for n in self.notes)
        if not self.ok and self.reproduce:
            lines.append(f"Reproduce: {self.reproduce}")
        return "\n".join(lines)

    def _mismatch_lines(self) -> list[str]:
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
            title = "Gradients are not close" if group.check == "backward" else f"{_CHECK_TITLES.get(group.check, group.check)} is not close"
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
            shown = rows[:LISTED_PER_GROUP]
            table = [self._row(m) for m in shown]
            widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))] if table else []
            for r in table:
                lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
            if group.failed > len(shown):
                lines.append(f"  ... and {group.failed - len(shown)} more")
            for m in shown:
                if m.note:
                    lines.append(f"  note on {m.input_name}{format_index(m.index)}: {m.note}")
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
        }


_CHECK_TITLES = {
    "forward_ad": "Forward-mode AD (jvp)",
    "second_order": "Second derivatives (backward of backward)",
    "reentrant": "Repeated backward",
}
