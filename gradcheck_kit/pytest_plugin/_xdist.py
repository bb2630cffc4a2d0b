"""pytest-xdist's hooks, registered by ``pytest_configure`` only where xdist is loaded.

The controller hands its seed (also a drawn one) to every worker; a worker's records made outside any
test come back with its shutdown. Records made in a test travel with that test's reports
(:mod:`gradcheck_kit.pytest_plugin._running`).
"""

from __future__ import annotations

import json
from typing import Any

from gradcheck_kit.pytest_plugin._records import CheckRecord
from gradcheck_kit.pytest_plugin._state import state_of

__all__ = ["SEED_KEY", "RECORDS_KEY", "XdistHooks", "send_records"]

#: the controller's seed in ``workerinput``
SEED_KEY = "gradcheck_seed"
#: a worker's records made outside any test, in ``workeroutput``
RECORDS_KEY = "gradcheck_kit_records"


class XdistHooks:
    """The controller's side of pytest-xdist."""

    def pytest_configure_node(self, node: Any) -> None:
        """Every worker uses the controller's seed (also a drawn one)."""
        node.workerinput[SEED_KEY] = state_of(node.config).seed

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Collect the records a worker made outside any test (sent at its shutdown)."""
        payload = getattr(node, "workeroutput", {}).get(RECORDS_KEY)
        if payload:
            state_of(node.config).records.extend(CheckRecord.from_dict(data) for data in json.loads(payload))


def send_records(config: Any, records: list[CheckRecord]) -> None:
    """In a worker at its end: hand the records made outside any test to the controller."""
    config.workeroutput[RECORDS_KEY] = json.dumps([record.to_dict() for record in records])
