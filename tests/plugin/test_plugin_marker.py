"""``@pytest.mark.gradcheck(...)``: every keyword reaches the checks; bad ones are errors naming them."""

from __future__ import annotations

import pytest

from gradcheck_kit.options import OPTION_NAMES


def test_every_check_keyword_reaches_the_fixture_and_direct_calls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
from gradcheck_kit import _config

OPTIONS = dict(mode="full", atol=1e-3, rtol=1e-2, order=2, forward_ad=False, seed=7, directions=3, nondet_tol=0.5)

@pytest.mark.gradcheck(**OPTIONS)
def test_all(gradcheck):
    assert gradcheck.options == OPTIONS
    assert {k: _config.current_defaults()[k] for k in OPTIONS} == OPTIONS

def test_none(gradcheck):
    assert gradcheck.options == {"seed": 0}
    assert _config.current_defaults() == _config.BUILTIN_DEFAULTS
"""
    )
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ("mode='full'", "report.mode == 'full'"),
        ("mode='directional'", "report.mode == 'directional'"),
        ("seed=123", "report.seed == 123"),
        ("atol=10.0, rtol=0.0", "report.ok"),
        ("order=2", "report.ok"),
        ("forward_ad=True", "report.ok"),
    ],
)
def test_keyword_reaches_a_real_check(pytester: pytest.Pytester, keywords: str, expected: str) -> None:
    pytester.makepyfile(
        f"""
import pytest
import torch

@pytest.mark.gradcheck({keywords})
def test_it(gradcheck):
    report = gradcheck.check(torch.sin, torch.linspace(-1, 1, 4, dtype=torch.float64))
    assert {expected}, str(report)
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_loose_atol_lets_a_wrong_gradient_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
import torch

class Off(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.01

def off(x):
    return Off.apply(x)

X = torch.linspace(-1, 1, 3, dtype=torch.float64)

@pytest.mark.gradcheck(atol=0.1)
def test_loose(gradcheck):
    gradcheck.assert_close(off, X)

def test_default(gradcheck):
    gradcheck.assert_close(off, X)
"""
    )
    pytester.runpytest().assert_outcomes(passed=1, failed=1)


def test_class_and_function_markers_merge_closest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.gradcheck(mode="full", seed=1)
class TestIt:
    @pytest.mark.gradcheck(seed=2)
    def test_it(self, gradcheck):
        assert gradcheck.options == {"mode": "full", "seed": 2}
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_marker_dtype_casts_and_none_keeps_inputs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
import torch

@pytest.mark.gradcheck(dtype=torch.float32)
def test_cast(gradcheck):
    assert gradcheck.dtype is torch.float32
    report = gradcheck.check(torch.sin, torch.linspace(-1, 1, 4, dtype=torch.float64))
    assert [i.dtype for i in report.inputs] in (["float32"], [torch.float32])

@pytest.mark.gradcheck(dtype=None)
def test_keep(gradcheck):
    assert gradcheck.dtype is None
    report = gradcheck.check(torch.sin, torch.linspace(-1, 1, 4, dtype=torch.float64))
    assert [str(i.dtype) for i in report.inputs] in (["float64"], ["torch.float64"])
"""
    )
    pytester.runpytest("--gradcheck-dtype=float16").assert_outcomes(passed=2)


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--markers")
    keywords = ", ".join(f"{name}=" for name in (*OPTION_NAMES, "dtype", "dtypes", "devices"))
    result.stdout.fnmatch_lines([f"@pytest.mark.gradcheck({keywords}): *"])
    pytester.makepyfile("import pytest\n@pytest.mark.gradcheck(seed=1)\ndef test_it(): pass")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("atoll=1e-3, mode='full', sed=1", "unknown keyword(s) atoll, sed; known: atol, batched, devices, directions, dtype, *"),
        ("'full'", "takes keywords only, got positional ('full',)"),
        ("mode='exact'", "mode='exact' is invalid: must be one of 'auto', 'full', 'directional'"),
        ("order=5", "order=5 is invalid: must be an int from 1 to 4 (each order checks the derivative of the one below it)"),
        ("forward_ad='yes'", "forward_ad='yes' is invalid: must be True, False or 'auto'"),
        ("seed=1.5", "seed=1.5 is invalid: must be an int in [0, 2**63)"),
        ("atol=-1", "atol=-1 is invalid: must be a finite number >= 0, or None (derived from the dtype)"),
        ("rtol='0.1'", "rtol='0.1' is invalid: must be a finite number >= 0, or None (derived from the dtype)"),
        ("dtype='int64'", "dtype='int64' is invalid: must be one of 'float16', 'bfloat16', 'float32', 'float64'"),
        ("dtypes='float32'", "dtypes='float32' is not a non-empty list"),
        ("devices=[]", "devices=[] is not a non-empty list"),
    ],
)
def test_bad_marker_is_a_setup_error_naming_it(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
import pytest

@pytest.mark.gradcheck({marker})
def test_bad():
    pass

def test_unaffected(gradcheck):
    pass
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_bad*", f"@pytest.mark.gradcheck: {message}"])
    result.stdout.no_fnmatch_line("*During handling*")
