"""Inputs on a GPU: fn and autograd run on the inputs' device, the kit's arithmetic on the host.

These tests run only where CUDA is available (the project's CI machine has none); on the CPU the same code
paths run with every device move a no-op, which the rest of the suite covers.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import WRONG_ELEMENT, SinOnePercentOff, SquareOneWrongElement, randn, unary

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cuda(*shape, dtype, seed=0):
    return randn(*shape, dtype=dtype, seed=seed).cuda()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode, n", [("full", 12), ("directional", 200_000)])
def test_correct_and_wrong_gradients_on_cuda(dtype, mode, n):
    x = _cuda(n, dtype=dtype)
    before = x.clone()
    ok = gk.check_gradients(lambda t: torch.sin(t) * t, x, mode=mode)
    assert ok.ok, str(ok)
    assert ok.check("forward_ad").status == "passed"
    assert not gk.check_gradients(SinOnePercentOff.apply, x, mode=mode).ok
    assert torch.equal(x, before) and x.device.type == "cuda"


def test_several_inputs_grad_outputs_and_second_order_on_cuda():
    a, b = _cuda(4, 5, dtype=torch.float64), _cuda(5, 3, dtype=torch.float64, seed=1)
    v = _cuda(4, 3, dtype=torch.float64, seed=2)
    report = gk.check_gradients(lambda p, q: torch.tanh(p @ q), a, b, grad_outputs=v, order=2)
    assert report.ok, str(report)
    gk.assert_grad_equals(lambda t: (t**2).mean(), a, 2 * a / a.numel())


def test_auto_narrows_a_wrong_element_down_on_cuda():
    report = gk.check_gradients(SquareOneWrongElement.apply, _cuda(50, 60, dtype=torch.float32))
    assert not report.ok
    assert [m.index for m in report.mismatches if m.kind != "directional"] == [divmod(WRONG_ELEMENT, 60)]


_HALF_KERNELS = {
    "gelu": (lambda t: torch.nn.functional.gelu(t), 1),
    "softmax": (lambda t: torch.softmax(t, dim=-1), 1),
    "layer_norm": (lambda t: torch.nn.functional.layer_norm(t, (16,)), 1),
    "matmul": (torch.matmul, 2),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(_HALF_KERNELS))
def test_half_precision_cuda_kernels(dtype, name):
    fn, n_inputs = _HALF_KERNELS[name]
    inputs = [_cuda(8, 16, dtype=dtype)] + ([_cuda(16, 4, dtype=dtype, seed=1)] if n_inputs == 2 else [])
    report = gk.check_gradients(fn, *inputs)
    assert report.ok, str(report)


_TenPercentOff = unary(torch.sin, torch.cos, factor=1.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_a_wrong_half_precision_cuda_backward_fails(dtype):
    assert not gk.check_gradients(_TenPercentOff.apply, _cuda(8, 16, dtype=dtype)).ok
