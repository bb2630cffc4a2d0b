"""Under pytest-xdist the workers share the controller's seed and send their records back."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("xdist")


def test_two_workers_aggregate_summary_and_json(pytester: pytest.Pytester) -> None:
    tests = """
import pytest
import torch

class Wrong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 3

def wrong(x):
    return Wrong.apply(x)

@pytest.mark.parametrize("n", [1, 2, 3])
def test_{name}(gradcheck, gradcheck_seed, n):
    assert gradcheck.check(torch.sin, torch.linspace(-1, 1, n, dtype=torch.float64)).seed == gradcheck_seed

def test_{name}_wrong(gradcheck):
    gradcheck.assert_close(wrong, torch.ones(2, dtype=torch.float64))
"""
    pytester.makepyfile(test_a=tests.replace("{name}", "a"), test_b=tests.replace("{name}", "b"))
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:cacheprovider", "--gradcheck-seed=random", "--gradcheck-report=checks.json"
    )
    result.assert_outcomes(passed=6, failed=2)
    header = next(line for line in result.outlines if line.startswith("gradcheck_kit: "))
    seed = int(header.split("=")[1])
    result.stdout.fnmatch_lines(
        [
            "*= gradcheck_kit =*",
            f"8 gradient checks in 8 tests: 6 passed, 2 failed, * (reproduce: --gradcheck-seed={seed})",
            "failed:",
            "  test_?.py::test_?_wrong: wrong(x: (2,) float64): 2 mismatch(es), *",
            "  test_?.py::test_?_wrong: wrong(x: (2,) float64): 2 mismatch(es), *",
            "closest to tolerance:",
            "JSON report: checks.json",
        ]
    )
    document = json.loads((pytester.path / "checks.json").read_text())
    assert document["seed"] == seed
    assert document["summary"]["checks"] == 8
    assert document["summary"]["failed"] == 2
    assert {record["seed"] for record in document["checks"]} == {seed}
    assert sorted(record["test"] for record in document["checks"]) == sorted(
        [f"test_{m}.py::test_{m}[{n}]" for m in "ab" for n in (1, 2, 3)] + ["test_a.py::test_a_wrong", "test_b.py::test_b_wrong"]
    )
