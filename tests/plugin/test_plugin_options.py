"""``--gradcheck-seed``, ``--gradcheck-mode``, ``--gradcheck-dtype``, ``--gradcheck-report`` and the header."""

from __future__ import annotations

import json

import pytest
import torch


SEED_TEST = """
import torch

def test_seed(gradcheck, gradcheck_seed):
    report = gradcheck.check(torch.sin, torch.linspace(-1, 1, 3, dtype=torch.float64))
    print("SEEDS", gradcheck_seed, gradcheck.seed, report.seed)
"""


def test_header_says_how_to_reproduce(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    pytester.runpytest().stdout.fnmatch_lines(["gradcheck_kit: --gradcheck-seed=0"])
    result = pytester.runpytest("--gradcheck-seed=9", "--gradcheck-mode=full", "--gradcheck-dtype=float32")
    result.stdout.fnmatch_lines(["gradcheck_kit: --gradcheck-seed=9 --gradcheck-mode=full --gradcheck-dtype=float32"])


def test_seed_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SEED_TEST)
    pytester.runpytest("-s", "--gradcheck-seed=1234").stdout.fnmatch_lines(["*SEEDS 1234 1234 1234"])


def test_random_seed_is_drawn_and_printed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SEED_TEST)
    result = pytester.runpytest("-s", "--gradcheck-seed=random")
    result.assert_outcomes(passed=1)
    header = next(line for line in result.outlines if line.startswith("gradcheck_kit: "))
    seed = int(header.split("=")[1])
    result.stdout.fnmatch_lines([f"*SEEDS {seed} {seed} {seed}"])


def test_bad_seed_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--gradcheck-seed=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradcheck-seed=abc is invalid: must be an int in [0, 2**63), or 'random'"])


def test_mode_option_and_marker_precedence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
import torch

X = torch.linspace(-1, 1, 3, dtype=torch.float64)

def test_option(gradcheck):
    assert gradcheck.check(torch.sin, X).mode == "directional"

@pytest.mark.gradcheck(mode="full")
def test_marker_wins(gradcheck):
    assert gradcheck.check(torch.sin, X).mode == "full"

def test_call_keyword_wins(gradcheck):
    assert gradcheck.check(torch.sin, X, mode="full").mode == "full"
"""
    )
    pytester.runpytest("--gradcheck-mode=directional").assert_outcomes(passed=3)
    result = pytester.runpytest("--gradcheck-mode=exact")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --gradcheck-mode=exact is invalid: must be one of 'auto', 'full', 'directional'"])


def test_dtype_option_casts_floating_inputs_keeping_layout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import torch

def test_cast(gradcheck):
    assert gradcheck.dtype is torch.float32
    base = torch.arange(30, dtype=torch.float64).reshape(5, 6) / 10
    x = base[1:, ::2].t().requires_grad_()
    n = torch.tensor([1, 2])
    cx, cn, flag = gradcheck.cast(x, n, True)
    assert cx.dtype is torch.float32 and cx.requires_grad
    assert (cx.shape, cx.stride(), cx.storage_offset()) == (x.shape, x.stride(), x.storage_offset())
    assert torch.equal(cx.double(), x.detach().float().double())
    assert cn is n and flag is True
    seen = []
    def fn(x, n):
        seen.append((x.dtype, x.stride()))
        return x.sin() * n.sum()
    assert gradcheck.check(fn, x, n).ok
    assert seen[0] == (torch.float32, x.stride())

def test_parametrised_dtype_follows_the_option(gradcheck_dtype):
    assert gradcheck_dtype is torch.float32
"""
    )
    pytester.runpytest("--gradcheck-dtype=float32").assert_outcomes(passed=2)


def test_dtype_option_applies_to_assert_equals(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import torch

def test_it(gradcheck):
    x = torch.linspace(-1, 1, 3, dtype=torch.float64)
    seen = []
    def fn(x):
        seen.append(x.dtype)
        return (x ** 2).sum()
    gradcheck.assert_equals(fn, x, 2 * x)
    assert seen == [torch.float16]
"""
    )
    pytester.runpytest("--gradcheck-dtype=float16").assert_outcomes(passed=1)


def test_json_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import torch
import gradcheck_kit as gk

class Wrong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 3

def double(x):
    return Wrong.apply(x)

def scaled(x, k):
    return x.sin() * k

def test_pass(gradcheck):
    gradcheck.assert_close(scaled, torch.ones(2, 3, dtype=torch.float64), 4)

def test_fail():
    gk.assert_gradients_close(double, torch.ones(3, dtype=torch.float32))
"""
    )
    result = pytester.runpytest("--gradcheck-report=out/checks.json", "--gradcheck-seed=3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["JSON report: out/checks.json"])
    document = json.loads((pytester.path / "out" / "checks.json").read_text())
    assert document["seed"] == 3
    assert document["command_line"] == "--gradcheck-seed=3"
    assert document["options"] == {"seed": 3, "mode": None, "dtype": None}
    assert document["summary"]["checks"] == 2
    assert document["summary"]["failed"] == 1
    assert document["summary"]["tests"] == 2
    passed, failed = document["checks"]
    assert passed["test"] == "test_json_report.py::test_pass"
    assert passed["kind"] == "gradients"
    assert passed["ok"] is True
    assert passed["function"] == "scaled"
    assert passed["inputs"][0] == {"index": 0, "name": "x", "shape": [2, 3], "dtype": "float64", "differentiated": True}
    assert 0 <= passed["worst_ratio"] <= 1
    assert passed["evaluations"] > 0
    assert passed["elapsed"] > 0
    assert passed["seed"] == 3
    assert failed["test"] == "test_json_report.py::test_fail"
    assert failed["function"] == "double"
    assert failed["ok"] is False
    assert failed["mismatches"] == 3
    assert failed["worst_ratio"] > 1
    assert failed["inputs"] == [
        {"index": 0, "name": "x", "shape": [3], "dtype": "float32", "differentiated": True}
    ]
