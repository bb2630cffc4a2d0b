"""The plugin's per-run state: the options in force, the test being run, and a record of every check."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from typing import Any

import pytest

from gradcheck_kit.pytest_plugin._records import CheckRecord, TestRecord, outcome_of, record_of_report

__all__ = ["RunOptions", "RunningTest", "RunState", "STATE_KEY", "ACTIVE", "route_report", "state_of", "GeneratorCounter",
           "generator_seed"]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The run's ``--gradcheck-*`` options (command line, else ini file), validated."""

    seed: int
    mode: str | None = None
    dtype: str | None = None
    strict: bool = False
    report_path: str | None = None

    def command_line(self) -> str:
        """The options as ``--gradcheck-*`` flags that reproduce the run (the report header prints it)."""
        parts = [f"--gradcheck-seed={self.seed}"]
        if self.mode:
            parts.append(f"--gradcheck-mode={self.mode}")
        if self.dtype:
            parts.append(f"--gradcheck-dtype={self.dtype}")
        if self.strict:
            parts.append("--gradcheck-strict")
        return " ".join(parts)


@dataclasses.dataclass
class RunningTest:
    """A test whose reports are arriving: the (when, outcome, wasxfail) of each phase, and its checks."""

    phases: list[tuple[str, str, bool]] = dataclasses.field(default_factory=list)
    records: list[CheckRecord] = dataclasses.field(default_factory=list)


class GeneratorCounter:
    """Counts the fixture's ``generator()`` calls in a test; restarts with each Hypothesis example."""

    def __init__(self) -> None:
        self.count = 0
        self.context: Any = None

    def next(self) -> int:
        control = sys.modules.get("hypothesis.control")
        context = control.current_build_context() if control is not None and control.currently_in_test_context() else None
        if context is not self.context:
            self.context, self.count = context, 0
        self.count += 1
        return self.count - 1


class RunState:
    """Per-run state: the options, the test being run, and a record of every check.

    Records made in the running test's phases (``pending``) travel with that phase's report (also from
    an xdist worker), and are counted when the test's last report arrives (:meth:`finish_test`).
    """

    def __init__(self, config: pytest.Config, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.records: list[CheckRecord] = []
        self.item: pytest.Item | None = None
        self.worker = hasattr(config, "workerinput")
        self.pending: list[CheckRecord] = []
        self.running: dict[str, RunningTest] = {}
        self.tests: list[TestRecord] = []
        self.generators = GeneratorCounter()

    @property
    def seed(self) -> int:
        return self.options.seed

    def command_line(self) -> str:
        return self.options.command_line()

    @property
    def nodeid(self) -> str | None:
        return self.item.nodeid if self.item is not None else None

    def record(self, report: Any) -> None:
        self.add(record_of_report(report, self.nodeid))

    def add(self, record: CheckRecord) -> None:
        self.incoming.append(record)

    @property
    def incoming(self) -> list[CheckRecord]:
        """Where a new record goes: the running test's phase, or (outside tests) the run's records."""
        return self.pending if self.item is not None else self.records

    def arrive(self, nodeid: str, phase: tuple[str, str, bool], records: list[CheckRecord]) -> None:
        """One report of test ``nodeid`` arrived with the records of its phase; teardown ends the test."""
        test = self.running.setdefault(nodeid, RunningTest())
        test.records.extend(records)
        test.phases.append(phase)
        if phase[0] == "teardown":
            self.finish_test(nodeid)

    def finish_test(self, nodeid: str) -> None:
        test = self.running.pop(nodeid)
        outcome = outcome_of(test.phases)
        for record in test.records:
            record.finish(outcome)
        self.records.extend(test.records)
        self.tests.append(TestRecord(nodeid, outcome, len(test.records)))

    def finish_run(self) -> None:
        """Count what arrived of tests without a teardown report (a worker crashed), and the records
        made outside any test."""
        for nodeid in list(self.running):
            self.finish_test(nodeid)
        for record in self.records:
            if record.status is None:
                record.finish(None)


STATE_KEY = pytest.StashKey[RunState]()
#: nested runs (pytester) each push their state; a report goes to the innermost run only
ACTIVE: list[RunState] = []


def route_report(report: Any) -> None:
    """The report listener (``gradcheck_kit._config``): record ``report`` in the innermost run."""
    if ACTIVE:
        ACTIVE[-1].record(report)


def state_of(config: pytest.Config) -> RunState:
    return config.stash[STATE_KEY]


def generator_seed(seed: int, nodeid: str, count: int) -> int:
    """A 63-bit seed from the run's seed, the test's id and the call's number: the same in every run."""
    digest = hashlib.sha256(f"{seed}\0{nodeid}\0{count}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
