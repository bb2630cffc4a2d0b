"""order=3 and 4 by composition: the check of the order-(n-1) derivative as a function."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import randn


def _x(n=4):
    return randn(n)


class _WrongThirdDerivative(torch.autograd.Function):
    """x**3 whose backward is right up to second order: its third derivative is 6.2, not 6."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x**2 + g * 0.1 * (x - x.detach()) ** 2


def test_third_order_checks_compose_and_pass():
    report = gk.check_gradients(lambda t: torch.sin(t) * t, _x(), order=3)
    assert report.ok, report.details()
    names = [c.name for c in report.checks]
    for name in ("backward", "second_order", "second_order_forward", "third_order", "third_order_forward"):
        assert name in names
    assert report.check("third_order").detail.startswith("reverse-over-reverse (backward of backward of backward);")
    assert report.check("third_order_forward").detail.startswith(
        "forward-over-reverse (forward over backward of backward);"
    )
    assert report.check("second_order").detail.startswith("reverse-over-reverse (backward of backward);")


def test_an_error_only_in_the_third_derivative_is_caught_and_named():
    x = _x()
    assert gk.check_gradients(_WrongThirdDerivative.apply, x, order=2).ok
    report = gk.check_gradients(_WrongThirdDerivative.apply, x, order=3)
    assert not report.ok
    assert report.check("second_order").status == "passed"
    assert report.check("third_order").status == "failed"
    assert report.mismatches and {m.check for m in report.mismatches} == {"third_order"}
    with pytest.raises(gk.GradientMismatch, match="Third derivatives"):
        gk.assert_gradients_close(_WrongThirdDerivative.apply, x, order=3)


def test_fourth_order():
    report = gk.check_gradients(lambda t: t.exp() * t, _x(2), order=4, forward_ad=False)
    assert report.ok, report.details()
    assert report.check("fourth_order").status == "passed"


@pytest.mark.parametrize("order", [0, 5, 2.0, True])
def test_orders_outside_one_to_four_are_invalid(order):
    with pytest.raises(gk.InvalidArgument, match=f"order={order!r} is invalid"):
        gk.check_gradients(torch.sin, _x(), order=order)


@pytest.mark.parametrize("order", [2, 3])
def test_a_derivative_that_autograd_returns_as_an_immutable_zero_tensor_is_checked(order):
    # abs's second derivative is autograd's ZeroTensor: the linearity check once crashed adding to it
    x = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    assert gk.check_gradients(torch.abs, x, order=order).ok
    assert gk.check_gradients(torch.nn.functional.l1_loss, x, x.flip(0), order=order).ok


def test_higher_orders_count_the_evaluations_of_the_first_derivative_they_check():
    """order=n checks G = d(v·fn)/dx with order n - 1 (seed + 1): its calls of G count in the report."""
    from gradcheck_kit._engine.second_order import first_derivative

    x = torch.linspace(0.2, 1.4, 3, dtype=torch.float64)
    fn = lambda t: torch.sin(t) * t  # noqa: E731
    # G along a fixed v: as many evaluations as along the check's own v
    G = first_derivative(fn, [0], [torch.full((3,), 0.5, dtype=torch.float64)])
    first = gk.check_gradients(fn, x).evaluations
    for order in (2, 3):
        report = gk.check_gradients(fn, x, order=order)
        assert report.ok, str(report)
        inner = gk.check_gradients(G, x, seed=1, order=order - 1).evaluations
        assert inner > 0 and report.evaluations == first + inner, (report.evaluations, first, inner)
