"""The targeted search for float64 false alarms on derivatives whose terms cancel (benchmarks/cancellation_search.py)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import load_benchmark

search = load_benchmark("cancellation_search")


def test_the_cases_are_reproducible_and_cancel():
    first, again = search.cases(21, torch.float64), search.cases(21, torch.float64)
    assert all(torch.equal(a.x, b.x) and a.function == b.function for a, b in zip(first, again))
    assert {c.function for c in first} == set(search.FUNCTIONS) and {c.kind for c in first} == set(search.KINDS)
    for case in first:
        assert float(case.x.sum().abs()) < 1e-13 * float(case.x.abs().sum())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_cancellation_search_finds_no_false_alarm(dtype):
    failures = search.search(150, dtype)
    assert not failures, [(case.index, case.function, case.kind, checks) for case, checks in failures]
