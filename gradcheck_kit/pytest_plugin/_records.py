"""What each test's checks did: one typed record per check, and how a check is counted by its test's outcome.

A record travels from an xdist worker to the controller as a plain dict (:meth:`CheckRecord.to_dict`,
:meth:`CheckRecord.from_dict`); the JSON report holds the same dicts (docs/json-report.md).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

__all__ = [
    "STATUSES",
    "InputRecord",
    "CheckRecord",
    "TestRecord",
    "record_of_report",
    "record_of_equals",
    "outcome_of",
    "hypothesis_phase",
]

#: what a record's ``status`` can be
STATUSES = ("passed", "failed", "expected", "explored")


@dataclasses.dataclass
class InputRecord:
    """One input of a check: position, name, shape, dtype name, and whether it was differentiated."""

    index: int | None
    name: str | None
    shape: list[int]
    dtype: str
    differentiated: bool | None

    def describe(self) -> str:
        label = self.name or f"input {self.index}"
        if self.differentiated is False and not self.shape:
            return f"{label}: {self.dtype}"
        return f"{label}: {tuple(self.shape)} {self.dtype}"


@dataclasses.dataclass
class CheckRecord:
    """One gradient check made during the run.

    ``hypothesis`` is ``"final"``/``"search"``/``None`` (see :func:`hypothesis_phase`); ``test_outcome``
    and ``status`` are set when the test that made the check has finished.
    """

    test: str | None
    kind: str
    function: str
    inputs: list[InputRecord]
    ok: bool
    mismatches: int
    errors: list[str]
    worst_ratio: float | None
    summary: str | None
    evaluations: int
    elapsed: float | None
    mode: str | None
    seed: int | None
    hypothesis: str | None = None
    test_outcome: str | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckRecord:
        inputs = [InputRecord(**spec) for spec in data.get("inputs", ())]
        return cls(**{**data, "inputs": inputs})

    def describe(self) -> str:
        return f"{self.test}: {self.function}({', '.join(spec.describe() for spec in self.inputs)})"

    def status_for(self, outcome: str | None) -> str:
        """How the summary counts this check when its test ended with ``outcome``: ``passed``; ``failed``
        (a failing check in a failing test); ``expected`` (a failing check in a test that did not fail:
        caught by ``pytest.raises``, xfail, tested for); ``explored`` (a failing check in a failing test,
        made while Hypothesis searched or shrank: not the final example)."""
        if self.ok:
            return "passed"
        if outcome in ("passed", "xfailed", "xpassed", "skipped"):
            return "expected"
        if self.hypothesis == "search":
            return "explored"
        return "failed"

    def finish(self, outcome: str | None) -> None:
        """Record the outcome of the test that made this check, and the status it gives the check."""
        self.test_outcome = outcome
        self.status = self.status_for(outcome)


@dataclasses.dataclass
class TestRecord:
    """One test that ran: its pytest outcome and the number of checks it made."""

    test: str
    outcome: str
    checks: int


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dtype_str(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def record_of_report(report: Any, test: str | None, kind: str = "gradients") -> CheckRecord:
    """The record of a ``GradientReport`` made in test ``test`` (a node id, or ``None`` outside tests)."""
    inputs = [
        InputRecord(
            index=getattr(spec, "index", None),
            name=getattr(spec, "name", None),
            shape=list(getattr(spec, "shape", ()) or ()),
            dtype=_dtype_str(getattr(spec, "dtype", "")),
            differentiated=getattr(spec, "differentiated", None),
        )
        for spec in getattr(report, "inputs", None) or ()
    ]
    mismatches = getattr(report, "mismatches", None) or ()
    failed = getattr(report, "failed", None)  # the report may list only the first mismatches
    return CheckRecord(
        test=test,
        kind=kind,
        function=str(getattr(report, "function", "?")),
        inputs=inputs,
        ok=bool(getattr(report, "ok", False)),
        mismatches=failed if isinstance(failed, int) else len(mismatches),
        errors=[str(e) for e in getattr(report, "errors", None) or ()],
        worst_ratio=_finite(getattr(report, "worst_ratio", None)),
        summary=getattr(report, "summary", None),
        evaluations=int(getattr(report, "evaluations", 0) or 0),
        elapsed=_finite(getattr(report, "elapsed", None)),
        mode=getattr(report, "mode", None),
        seed=getattr(report, "seed", None),
        hypothesis=hypothesis_phase(),
    )


def record_of_equals(test: str | None, fn: Any, inputs: tuple[Any, ...], ok: bool, elapsed: float) -> CheckRecord:
    """The record of one ``gradcheck.assert_equals`` (``gk.assert_grad_equals``) in test ``test``."""
    specs = [
        InputRecord(index=i, name=None, shape=list(x.shape), dtype=_dtype_str(x.dtype), differentiated=True)
        for i, x in enumerate(inputs)
        if hasattr(x, "shape") and hasattr(x, "dtype")
    ]
    return CheckRecord(
        test=test,
        kind="grad_equals",
        function=getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn),
        inputs=specs,
        ok=ok,
        mismatches=0 if ok else 1,
        errors=[],
        worst_ratio=None,
        summary=None,
        evaluations=1,
        elapsed=elapsed,
        mode=None,
        seed=None,
        hypothesis=hypothesis_phase(),
    )


def outcome_of(phases: list[tuple[str, str, bool]]) -> str:
    """pytest's outcome of a test from its reports' (when, outcome, wasxfail): passed, failed, error,
    skipped, xfailed or xpassed (a crashed xdist worker's test is failed)."""
    by_phase = {when: (outcome, xfail) for when, outcome, xfail in phases}
    call, call_xfail = by_phase.get("call", (None, False))
    if call == "failed" or by_phase.get("???", ("",))[0] == "failed":
        return "failed"
    if any(outcome == "failed" for outcome, _ in by_phase.values()):
        return "error"
    if any(xfail and outcome == "skipped" for outcome, xfail in by_phase.values()):
        return "xfailed"
    if call_xfail and call == "passed":
        return "xpassed"
    if any(outcome == "skipped" for outcome, _ in by_phase.values()):
        return "skipped"
    return "passed"


def hypothesis_phase() -> str | None:
    """``"final"`` in the example Hypothesis replays to report a failure, ``"search"`` in any other
    example, ``None`` outside a Hypothesis test."""
    control = sys.modules.get("hypothesis.control")
    if control is None or not control.currently_in_test_context():
        return None
    return "final" if getattr(control.current_build_context(), "is_final", False) else "search"
