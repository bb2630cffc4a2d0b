"""order=2 (backward of the backward) and forward-mode AD."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


class _DetachInBackward(torch.autograd.Function):
    """First derivative right, but not differentiable: second derivatives come out zero."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x.detach())


class _CosWrongByFactor(torch.autograd.Function):
    """d/dx cos(x) = -sin(x), but returns -2 sin(x): used as sin's derivative it breaks order 2 only."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.cos(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -2 * torch.sin(x) * grad


class _SinWrongDouble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * _CosWrongByFactor.apply(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_order_2_tanh_passes(dtype):
    report = gk.check_gradients(torch.tanh, _randn(4, dtype=dtype), order=2)
    assert report.ok, str(report)
    assert report.check("second_order").status == "passed"
    assert report.check("second_order").detail.startswith("reverse-over-reverse")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_order_2_catches_detach_in_backward(dtype):
    x = _randn(4, dtype=dtype)
    first = gk.check_gradients(_DetachInBackward.apply, x)
    assert first.ok, str(first)
    assert first.check("second_order") is None
    report = gk.check_gradients(_DetachInBackward.apply, x, order=2)
    assert not report.ok
    assert report.check("backward").status == "passed"
    assert report.check("second_order").status == "failed"
    rows = [m for m in report.mismatches if m.check == "second_order"]
    assert rows and all(m.analytic == 0.0 for m in rows)
    assert any("backward is not differentiable" in n for n in report.notes), report.notes
    assert "Second derivatives (backward of backward) is not close" in str(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_order_2_catches_double_backward_wrong_by_a_factor(dtype):
    x = _randn(4, dtype=dtype)
    assert gk.check_gradients(_SinWrongDouble.apply, x, forward_ad=False).ok
    report = gk.check_gradients(_SinWrongDouble.apply, x, order=2, forward_ad=False)
    assert not report.ok
    assert report.check("backward").status == "passed"
    assert report.check("second_order").status == "failed"
    for m in (m for m in report.mismatches if m.check == "second_order" and m.kind == "jacobian"):
        assert m.analytic == pytest.approx(2 * m.numerical, rel=1e-3, abs=1e-6)


# ---- forward-mode AD ----------------------------------------------------------------------------


class _WrongJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_forward(x)
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * torch.cos(x) * 1.1


class _NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_forward_ad_true_catches_wrong_jvp(mode):
    x = _randn(5)
    report = gk.check_gradients(_WrongJvp.apply, x, forward_ad=True, mode=mode)
    assert not report.ok
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status == "failed"
    assert {m.check for m in report.mismatches} == {"forward_ad"}
    assert "Forward-mode AD (jvp) is not close" in str(report)


def test_forward_ad_auto_skips_function_without_jvp_and_says_why():
    report = gk.check_gradients(_NoJvp.apply, _randn(5), forward_ad="auto")
    assert report.ok, str(report)
    result = report.check("forward_ad")
    assert result.status == "skipped"
    assert "jvp" in result.detail
    assert "forward_ad: skipped (" in str(report)


def test_forward_ad_true_on_function_without_jvp_is_an_error():
    report = gk.check_gradients(_NoJvp.apply, _randn(5), forward_ad=True)
    assert not report.ok
    assert report.check("forward_ad").status == "error"


def test_forward_ad_false_is_skipped():
    report = gk.check_gradients(_WrongJvp.apply, _randn(5), forward_ad=False)
    assert report.ok, str(report)
    assert report.check("forward_ad").status == "skipped"
    assert report.check("forward_ad").detail == "forward_ad=False"


def test_forward_ad_checked_by_default_on_builtin():
    report = gk.check_gradients(torch.tanh, _randn(5))
    assert report.check("forward_ad").status == "passed"
