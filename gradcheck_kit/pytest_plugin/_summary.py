"""End of a run: the records counted, the JSON report (docs/json-report.md) and the terminal summary."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gradcheck_kit.pytest_plugin._records import STATUSES, CheckRecord, TestRecord
from gradcheck_kit.pytest_plugin._state import RunState, state_of
from gradcheck_kit.pytest_plugin._xdist import send_records

__all__ = ["JSON_SCHEMA_VERSION", "summary", "pytest_sessionfinish", "pytest_terminal_summary"]

#: version of the JSON report's layout (docs/json-report.md)
JSON_SCHEMA_VERSION = 2
#: check lines the terminal summary shows at most, failed and closest to tolerance
SHOW_FAILED = 10
SHOW_CLOSEST = 5


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = state_of(session.config)
    if state.worker:
        send_records(session.config, state.records)
        return
    state.finish_run()
    if state.options.report_path:
        _write_json(state)


def summary(records: list[CheckRecord], tests: list[TestRecord]) -> dict[str, Any]:
    """The JSON report's ``summary``: checks by status, tests by outcome, evaluations and time."""
    statuses = [r.status or r.status_for(None) for r in records]
    outcomes = [t.outcome for t in tests]
    return {
        "checks": len(records),
        **{status: statuses.count(status) for status in STATUSES},
        "tests": len({r.test for r in records}),
        "test_outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
        "evaluations": sum(r.evaluations for r in records),
        "elapsed": sum(r.elapsed or 0.0 for r in records),
    }


def _write_json(state: RunState) -> None:
    from gradcheck_kit import __version__

    options = state.options
    document = {
        "schema_version": JSON_SCHEMA_VERSION,
        "gradcheck_kit": __version__,
        "seed": options.seed,
        "command_line": options.command_line(),
        "options": {"seed": options.seed, "mode": options.mode, "dtype": options.dtype},
        "summary": summary(state.records, state.tests),
        "tests": [{"test": t.test, "outcome": t.outcome, "checks": t.checks} for t in state.tests],
        "checks": [record.to_dict() for record in state.records],
    }
    path = state.config.invocation_params.dir / options.report_path  # type: ignore[operator]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _ratio_key(record: CheckRecord) -> float:
    return -1.0 if record.worst_ratio is None else record.worst_ratio


def _worst_per_call_site(records: list[CheckRecord]) -> list[tuple[CheckRecord, int]]:
    """One line per test and function (a ``@given`` test makes many checks): its worst check, and how many."""
    groups: dict[tuple[Any, str], list[CheckRecord]] = {}
    for record in records:
        groups.setdefault((record.test, record.function), []).append(record)
    worst = [(max(group, key=_ratio_key), len(group)) for group in groups.values()]
    return sorted(worst, key=lambda pair: -_ratio_key(pair[0]))


def _line(record: CheckRecord, count: int) -> str:
    ratio = record.worst_ratio
    text = f"  {record.describe()}: "
    more = f" (worst of {count} checks)" if count > 1 else ""
    if not record.ok and record.summary:  # "fn raised ...", "... non-finite ...", a failed check's reason
        return text + record.summary + more
    if not record.ok:
        text += f"{record.mismatches} mismatch(es), " if record.mismatches else "; ".join(record.errors) + ", "
    text += "error vs allowed n/a" if ratio is None else f"worst error {ratio:.3g} x allowed"
    return text + more


def _totals_line(state: RunState) -> str:
    totals = summary(state.records, state.tests)
    apart = "".join(
        f", {totals[status]} {status} ({meaning})"
        for status, meaning in (("expected", "in tests that did not fail"), ("explored", "by Hypothesis' search"))
        if totals[status]
    )
    return (
        f"{totals['checks']} gradient check{'s' * (totals['checks'] != 1)} in {totals['tests']} "
        f"test{'s' * (totals['tests'] != 1)}: {totals['passed']} passed, {totals['failed']} failed{apart}, "
        f"{totals['evaluations']} evaluations, {totals['elapsed']:.2f}s (reproduce: {state.command_line()})"
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = state_of(config)
    records = state.records
    if not records and not state.options.report_path:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gradcheck_kit")
    write(_totals_line(state))
    for title, subset, limit in (
        ("failed:", [r for r in records if r.status == "failed"], SHOW_FAILED),
        ("closest to tolerance:", [r for r in records if r.ok and r.worst_ratio is not None], SHOW_CLOSEST),
    ):
        lines = _worst_per_call_site(subset)
        if lines:
            write(title)
            for record, count in lines[:limit]:
                write(_line(record, count))
            if len(lines) > limit:
                write(f"  ... and {len(lines) - limit} more")
    if state.options.report_path:
        write(f"JSON report: {state.options.report_path}")
