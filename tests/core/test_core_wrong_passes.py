"""Wrong gradients that used to pass: a backward wrong from its 2nd call on, one non-linear in
grad_output, a forward that changes between calls, and a check that compared nothing."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk

MODES = ["auto", "full", "directional"]
DTYPES = [torch.float32, torch.float64]


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


# -- item 5: a backward wrong from its second call on ------------------------------------------------------
def _wrong_from_second_call():
    calls = [0]

    class _Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            calls[0] += 1
            (x,) = ctx.saved_tensors
            return g * x.cos() * (1.0 if calls[0] == 1 else 1.01)

    return _Sin.apply


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_a_backward_wrong_from_its_second_call_fails(mode, dtype, shape):
    report = gk.check_gradients(_wrong_from_second_call(), _randn(*shape, dtype=dtype), mode=mode)
    assert not report.ok
    assert report.check("reentrant").status == "failed", str(report)


def test_a_backward_wrong_from_its_second_call_names_the_first_pass():
    report = gk.check_gradients(_wrong_from_second_call(), _randn(5), mode="full")
    assert "a later backward differs from the first" in report.check("reentrant").detail
