"""The plugin's fixtures: ``gradcheck``, ``gradcheck_seed``, ``gradcheck_dtype``, ``gradcheck_device``."""

from __future__ import annotations

import pytest
import torch

FUNCTIONS = """
import pytest
import torch
import gradcheck_kit as gk


class WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x


def square(x):
    return x ** 2


def wrong_square(x):
    return WrongSquare.apply(x)


def x64(*shape):
    return torch.linspace(-1.5, 1.3, int(torch.tensor(shape).prod())).reshape(shape).double().requires_grad_()
"""


def test_gradcheck_check_returns_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
def test_it(gradcheck):
    report = gradcheck.check(square, x64(3, 2))
    assert report.ok
    assert report.function == "square"
    assert report.seed == 0
    bad = gradcheck.check(wrong_square, x64(3))
    assert not bad.ok and bad.mismatches
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_gradcheck_assert_close_passes_and_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
def test_good(gradcheck):
    assert gradcheck.assert_close(square, x64(4)).ok

def test_bad(gradcheck):
    gradcheck.assert_close(wrong_square, x64(4))
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*GradientMismatch*", "FAILED test_gradcheck_assert_close_passes_and_fails.py::test_bad*"])


def test_gradcheck_assert_equals(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
def test_callable(gradcheck):
    gradcheck.assert_equals(lambda x: (x ** 2).sum(), x64(3), lambda x: 2 * x)

def test_tensors(gradcheck):
    x = x64(3)
    gradcheck.assert_equals(lambda x, y: (x * y).sum(), (x, x64(3)), (x64(3).detach(), x.detach()))

def test_wrong(gradcheck):
    gradcheck.assert_equals(lambda x: (x ** 2).sum(), x64(3), lambda x: 3 * x)
"""
    )
    result = pytester.runpytest("--gradcheck-report=r.json")
    result.assert_outcomes(passed=2, failed=1)
    import json

    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    assert [(c["test"].split("::")[1], c["ok"]) for c in checks] == [
        ("test_callable", True),
        ("test_tensors", True),
        ("test_wrong", False),
    ]


def test_gradcheck_options_seed_generator_and_repr(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
def test_it(gradcheck):
    assert gradcheck.options == {"seed": 11}
    assert gradcheck.seed == 11
    assert gradcheck.dtype is None
    assert repr(gradcheck) == "<gradcheck fixture {'seed': 11} dtype=None>"
"""
    )
    pytester.runpytest("--gradcheck-seed=11").assert_outcomes(passed=1)


GENERATOR_TESTS = """
import pytest
import torch
from hypothesis import given, settings, strategies as st

def draw(gradcheck):
    return torch.randn(3, generator=gradcheck.generator()).tolist()

def test_a(gradcheck):
    print("\\nDRAWN a", draw(gradcheck), draw(gradcheck))

def test_b(gradcheck):
    print("\\nDRAWN b", draw(gradcheck))

@pytest.mark.gradcheck(seed=5)
def test_marker_seed(gradcheck):
    print("\\nDRAWN m", draw(gradcheck))

@settings(max_examples=4, database=None, deadline=None)
@given(st.integers(0, 9))
def test_examples(gradcheck, n):
    print("\\nDRAWN h", draw(gradcheck), draw(gradcheck))
"""


def _drawn(result: pytest.RunResult) -> dict[str, list[tuple[float, ...]]]:
    drawn: dict[str, list[tuple[float, ...]]] = {}
    for line in result.outlines:
        if line.startswith("DRAWN "):
            _, name, values = line.split(" ", 2)
            drawn.setdefault(name, []).append(values)
    return drawn


def test_generator_calls_differ_within_a_test_and_repeat_across_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(GENERATOR_TESTS)
    first = _drawn(pytester.runpytest("-s"))
    (a,) = first["a"]
    x, y = a.split("] [")
    assert x != y  # two calls in one test give two generators
    assert first["b"][0] != x  # another test id, another stream
    assert first["m"][0] not in (x, first["b"][0])
    assert len(set(first["h"])) == 1  # each Hypothesis example restarts the count: replays draw the same
    x, y = first["h"][0].split("] [")
    assert x != y
    again = _drawn(pytester.runpytest("-s"))
    assert again == first  # same values in every run
    other_seed = _drawn(pytester.runpytest("-s", "--gradcheck-seed=1"))
    assert other_seed["a"] != first["a"] and other_seed["m"] == first["m"]  # the marker's seed wins


def test_gradcheck_seed_is_the_runs_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_default(gradcheck_seed):
    assert gradcheck_seed == 0
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        """
import pytest

@pytest.mark.gradcheck(seed=3)
def test_given(gradcheck_seed, gradcheck):
    assert gradcheck_seed == 42    # the run's seed, as the header prints it
    assert gradcheck.seed == 3     # the test's checks use the marker's
"""
    )
    pytester.runpytest("--gradcheck-seed", "42").assert_outcomes(passed=1)


def test_direct_calls_use_the_options_and_are_recorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
@pytest.mark.gradcheck(mode="full")
def test_direct():
    report = gk.assert_gradients_close(square, x64(2))
    assert (report.seed, report.mode) == (5, "full")
"""
    )
    result = pytester.runpytest("--gradcheck-seed=5")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= gradcheck_kit =*", "1 gradient check in 1 test: 1 passed, 0 failed*"])


def test_gradcheck_dtype_is_parametrised(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FUNCTIONS
        + """
def test_default(gradcheck_dtype, gradcheck):
    x = torch.randn(3, dtype=gradcheck_dtype)
    assert gradcheck.check(square, x).ok

@pytest.mark.gradcheck(dtypes=["float64", torch.float16])
def test_marker(gradcheck_dtype):
    assert gradcheck_dtype in (torch.float64, torch.float16)
"""
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*::test_default?float32? PASSED*",
            "*::test_default?float64? PASSED*",
            "*::test_marker?float64? PASSED*",
            "*::test_marker?float16? PASSED*",
        ]
    )


def test_gradcheck_device_is_parametrised_and_skips_missing_devices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
import torch

def test_default(gradcheck_device):
    assert torch.zeros(1, device=gradcheck_device).device.type == gradcheck_device.type

@pytest.mark.gradcheck(devices=["cpu"])
def test_cpu_only(gradcheck_device, gradcheck_dtype):
    assert gradcheck_device == torch.device("cpu")
"""
    )
    result = pytester.runpytest("-v", "-rs")
    cuda = torch.cuda.is_available()
    result.assert_outcomes(passed=4 if cuda else 3, skipped=0 if cuda else 1)
    result.stdout.fnmatch_lines(["*::test_default?cpu? PASSED*", "*::test_cpu_only?float32-cpu? PASSED*"])
    if not cuda:
        result.stdout.fnmatch_lines(["SKIPPED*device 'cuda' is not available"])


def test_fixtures_are_safe_in_given_tests(pytester: pytest.Pytester) -> None:
    """None of the fixtures is function-scoped: Hypothesis' health check stays quiet."""
    pytester.makepyfile(
        FUNCTIONS
        + """
from hypothesis import given, settings, strategies as st

@settings(max_examples=5, database=None, deadline=None)
@given(v=st.floats(-2, 2))
def test_prop(gradcheck, gradcheck_seed, gradcheck_dtype, gradcheck_device, v):
    gradcheck.assert_close(square, torch.tensor([v, 0.5], dtype=gradcheck_dtype, device=gradcheck_device))

@settings(max_examples=2, database=None)
@given(v=st.floats(-2, 2))
def test_function_scoped_is_caught(tmp_path, v):   # the health check is live in this run
    pass
"""
    )
    result = pytester.runpytest()
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 2  # float32 and float64 on cpu
    assert outcomes["failed"] == 1
    result.stdout.fnmatch_lines(["*uses a function-scoped fixture 'tmp_path'*"])
    result.stdout.no_fnmatch_line("*function-scoped fixture 'gradcheck*")
