"""Running a test: the options in force for its checks, and its checks' records sent with its reports.

Each check is counted by the outcome of its test. Records made during a test phase are attached to that
phase's report (xdist serializes the attribute with the report, so a worker that crashes later loses
nothing already reported); the controller (or the single process) gathers them in
``pytest_runtest_logreport`` and counts them when the test's teardown report arrives.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from gradcheck_kit import _config
from gradcheck_kit.pytest_plugin._marker import MarkerError, marker_options, options_in_force
from gradcheck_kit.pytest_plugin._records import CheckRecord
from gradcheck_kit.pytest_plugin._state import ACTIVE, GeneratorCounter, state_of

__all__ = ["REPORT_ATTRIBUTE", "pytest_runtest_protocol", "pytest_runtest_makereport", "pytest_runtest_logreport"]

#: the attribute of a test report that carries the records of its phase, as plain dicts
REPORT_ATTRIBUTE = "gradcheck_kit_records"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Checks made during the test (fixture or direct calls) use the options in force, and are recorded."""
    state = state_of(item.config)
    state.item = item
    state.generators = GeneratorCounter()
    try:
        marker = marker_options(item)
    except MarkerError:
        marker = {}  # pytest_runtest_setup reports it
    try:
        with _config.defaults(**options_in_force(state, marker)):
            yield
    finally:
        state.item = None
        state.records.extend(state.pending)  # made outside the test's phases (none normally)
        state.pending = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    state = state_of(item.config)
    if state.pending:
        setattr(outcome.get_result(), REPORT_ATTRIBUTE, [record.to_dict() for record in state.pending])
        state.pending = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = ACTIVE[-1] if ACTIVE else None
    if state is None or state.worker:
        return  # a worker's reports (and their records) go to the controller
    records = [CheckRecord.from_dict(data) for data in getattr(report, REPORT_ATTRIBUTE, None) or ()]
    state.arrive(report.nodeid, (report.when, report.outcome, hasattr(report, "wasxfail")), records)
