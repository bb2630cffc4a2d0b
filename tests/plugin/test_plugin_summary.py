"""The terminal summary: checks run, failures, the checks closest to their tolerance."""

from __future__ import annotations

import pytest

FUNCTIONS = """
import pytest
import torch
import gradcheck_kit as gk
from hypothesis import given, settings, strategies as st


def off_by(factor):
    class Off(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2 * factor

    def fn(x):
        return Off.apply(x)

    fn.__name__ = fn.__qualname__ = f"off_by_{factor}"
    return fn


X = torch.linspace(-1, 1, 4, dtype=torch.float64)
"""


def test_summary_lists_failures_and_closest_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
@pytest.mark.gradcheck(atol=1e-3, rtol=0, mode="full")
def test_close(gradcheck):
    gradcheck.assert_close(off_by(1.0001), X)

def test_exact(gradcheck):
    gradcheck.assert_close(off_by(1), X)

def test_wrong(gradcheck):
    gradcheck.assert_close(off_by(3), X)

@settings(max_examples=3, database=None, deadline=None)
@given(st.integers(0, 3))
def test_many(gradcheck, n):
    gradcheck.assert_close(torch.sin, X + n)

def test_no_checks():
    pass
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= gradcheck_kit =*",
            "6 gradient checks in 4 tests: 5 passed, 1 failed, * evaluations, *s (reproduce: --gradcheck-seed=0)",
            "failed:",
            "  test_summary_lists_failures_and_closest_checks.py::test_wrong: off_by_3(x: (4,) float64):"
            " 4 mismatch(es), worst error * x allowed",
            "closest to tolerance:",
            "  *::test_close: off_by_1.0001(x: (4,) float64): worst error 0.* x allowed",
            "  *::test_many: *sin(x: (4,) float64): worst error * x allowed (worst of 3 checks)",
            "  *::test_exact: off_by_1(x: (4,) float64): worst error * x allowed",
            "=*short test summary info*",
        ]
    )


def test_summary_is_capped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
@pytest.mark.gradcheck(atol=1e-3, rtol=0, mode="full")
@pytest.mark.parametrize("i", range(7))
def test_it(gradcheck, i):
    assert gradcheck.check(off_by(1 + i / 1e5), X).ok
"""
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["closest to tolerance:", "  *test_it?6?*", "  *", "  *", "  *", "  *test_it?2?*", "  ... and 2 more"])


def test_no_section_without_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(gradcheck):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*gradcheck_kit ==*")


OUTCOMES = """
@pytest.mark.gradcheck(seed=0)
def test_raises(gradcheck):
    with pytest.raises(gk.GradientMismatch):
        gradcheck.assert_close(off_by(3), X)
    gradcheck.assert_close(off_by(1), X)

@pytest.mark.xfail(reason="a known wrong backward", strict=True)
def test_xfail(gradcheck):
    gradcheck.assert_close(off_by(3), X)

def test_fails(gradcheck):
    gradcheck.assert_close(off_by(3), X)

@settings(max_examples=30, database=None, deadline=None, derandomize=True)
@given(st.integers(0, 20))
def test_search(gradcheck, n):
    gradcheck.assert_close(off_by(3) if n >= 5 else off_by(1), X)
"""


def test_checks_are_counted_by_the_outcome_of_their_test(pytester: pytest.Pytester) -> None:
    """Failing checks in pytest.raises and xfail tests are "expected", those of Hypothesis' search before
    the final example "explored"; only the failing tests' own failures count as failed."""
    import json

    pytester.makepyfile(FUNCTIONS + OUTCOMES)
    result = pytester.runpytest("--gradcheck-report=r.json")
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "* gradient checks in 4 tests: * passed, 2 failed, 2 expected (in tests that did not fail), "
            "* explored (by Hypothesis' search), * evaluations, *",
            "failed:",
            # (auto mode may check along directions where fn's timed forward was slow: fewer mismatches named)
            "  *::test_fails: off_by_3(x: (4,) float64): * mismatch(es), *",
            "  *::test_search: off_by_3(x: (4,) float64): * mismatch(es), *",
            "closest to tolerance:",
        ]
    )
    result.stdout.no_fnmatch_line("*::test_raises: off_by_3*")
    document = json.loads((pytester.path / "r.json").read_text())
    outcomes = {t["test"].split("::")[1]: (t["outcome"], t["checks"]) for t in document["tests"]}
    assert outcomes["test_raises"] == ("passed", 2)
    assert outcomes["test_xfail"] == ("xfailed", 1)
    assert outcomes["test_fails"] == ("failed", 1)
    assert outcomes["test_search"][0] == "failed"
    by_test: dict[str, list[tuple[str, str, bool, object]]] = {}
    for check in document["checks"]:
        by_test.setdefault(check["test"].split("::")[1], []).append(
            (check["test_outcome"], check["status"], check["ok"], check["hypothesis"])
        )
    assert by_test["test_raises"] == [("passed", "expected", False, None), ("passed", "passed", True, None)]
    assert by_test["test_xfail"] == [("xfailed", "expected", False, None)]
    assert by_test["test_fails"] == [("failed", "failed", False, None)]
    search = by_test["test_search"]
    assert search[-1] == ("failed", "failed", False, "final")  # the example Hypothesis reports
    assert {s[1] for s in search[:-1]} == {"passed", "explored"}
    assert all(s[3] == "search" for s in search[:-1])
    summary = document["summary"]
    assert summary["failed"] == 2 and summary["expected"] == 2
    assert summary["explored"] == sum(s[1] == "explored" for s in search) > 0
    assert summary["checks"] == sum(summary[k] for k in ("passed", "failed", "expected", "explored"))
    assert summary["test_outcomes"] == {"failed": 2, "passed": 1, "xfailed": 1}
    assert document["schema_version"] == 2
