"""Directional mode's cheaper passes give the same verdicts and reports: the output finiteness check, the
reductions over outputs and gradients, the forward-AD pass and the random directions."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_outputs_are_counted_exactly(bad, dtype):
    x = _randn(1000, dtype=dtype).requires_grad_()

    def fn(x):
        y = x * 2
        return torch.where(torch.arange(1000) % 250 == 3, torch.full_like(y, bad), y)

    report = gk.check_gradients(fn, x, mode="directional")
    assert report.errors == [
        "output 0 of fn has 4 non-finite value(s) (NaN or inf) at the given inputs; gradients cannot be checked there"
    ]


def test_opposite_infinities_are_counted_too():
    x = _randn(10).requires_grad_()
    report = gk.check_gradients(lambda x: x * torch.tensor([float("inf"), -float("inf")] + [1.0] * 8), x)
    assert "output 0 of fn has 2 non-finite value(s)" in report.errors[0]


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_finite_outputs_whose_sum_overflows_are_not_called_non_finite(mode):
    x = torch.full((64,), 1.0, dtype=torch.float32).requires_grad_()
    report = gk.check_gradients(lambda x: x * 3e38, x, mode=mode)
    assert not any("non-finite" in e for e in report.errors)
