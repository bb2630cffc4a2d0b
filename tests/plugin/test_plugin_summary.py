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
@pytest.mark.gradcheck(atol=1e-3, rtol=0)
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
@pytest.mark.gradcheck(atol=1e-3, rtol=0)
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
