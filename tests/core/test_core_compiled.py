"""torch.compile'd functions: numerics on the eager function, compiled autograd against eager autograd."""

from __future__ import annotations

import time

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import randn, unary

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


_ThreeHalves = unary(torch.sin, torch.cos, factor=1.5)


def _wrong_under_compile(x):
    """Right in eager mode; under torch.compile its backward is 1.5x too large."""
    if torch.compiler.is_compiling():
        return _ThreeHalves.apply(x) * x
    return x.sin() * x


def _x(n=5, dtype=torch.float64):
    return randn(n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_a_compiled_function_is_checked_against_its_eager_function(dtype):
    compiled = torch.compile(lambda t: torch.sin(t) * t, backend="aot_eager")
    start = time.perf_counter()
    report = gk.check_gradients(compiled, _x(dtype=dtype))
    assert time.perf_counter() - start < 30
    assert report.ok, str(report)
    assert report.check("compiled").status == "passed"
    assert report.check("backward").status == "passed"
    assert "compiled == eager" in report.check("compiled").detail


def test_a_compiled_backward_that_differs_from_eager_is_caught():
    x = _x()
    report = gk.check_gradients(torch.compile(_wrong_under_compile, backend="aot_eager"), x)
    assert not report.ok
    assert report.check("compiled").status == "failed"
    assert report.check("backward").status == "passed"  # eager == numerical
    assert any(m.check == "compiled" for m in report.mismatches)
    with pytest.raises(gk.GradientMismatch, match="compiled"):
        gk.assert_gradients_close(torch.compile(_wrong_under_compile, backend="aot_eager"), x)
    assert gk.check_gradients(_wrong_under_compile, x).ok  # the eager function alone is right


def test_a_compiled_module_is_checked_against_its_eager_module():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()).double()
    compiled = torch.compile(net, backend="aot_eager")
    x = _x(6).reshape(2, 3)
    report = gk.check_gradients(compiled, x)
    assert report.ok, str(report)
    assert report.check("compiled").status == "passed"


def test_compile_unavailable_is_said_and_eager_is_checked():
    def no_compiler(gm, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    report = gk.check_gradients(torch.compile(lambda t: t.cos(), backend=no_compiler), _x())
    assert report.ok, str(report)
    compiled = report.check("compiled")
    assert compiled.status == "skipped"
    assert "no C++ compiler on this machine" in compiled.detail
    assert "only the eager function was checked" in compiled.detail


def test_the_caller_state_is_untouched_by_the_compiled_comparison():
    x = _x().requires_grad_(True)
    state = torch.random.get_rng_state()
    gk.check_gradients(torch.compile(lambda t: torch.nn.functional.dropout(t, 0.5) * 2, backend="aot_eager"), x)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert x.grad is None
