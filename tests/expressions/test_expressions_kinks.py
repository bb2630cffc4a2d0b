"""User ops with kinks and several-interval domains: ``gst.Op(..., kinks=[...], domain=[...])``.

At a declared kink ``expr.gradient`` returns a ``gk.GradientRange`` (the one-sided derivatives as bounds)
and ``gk.assert_grad_equals`` passes autograd anywhere in that closed range, and only there.
"""

from __future__ import annotations

import pytest
import sympy
import torch

import gradcheck_kit as gk
from gradcheck_kit import strategies as gst
from gradcheck_kit.errors import InvalidArgument


def _sparsemoid(x):
    """0 below -1, (x + 1) / 4 on [-1, 1), 1/2 from 1 on: autograd gives 0 at x = 1 (torch.where's branch)."""
    return torch.where(x >= 1, torch.full_like(x, 0.5), torch.where(x > -1, 0.25 * x + 0.25, torch.zeros_like(x)))


def _sparsemoid_sympy(s):
    return sympy.Piecewise((0, s < -1), (s / 4 + sympy.Rational(1, 4), s <= 1), (sympy.Rational(1, 2), True))


def _op(**kw):
    return gst.Op("sparsemoid", _sparsemoid, _sparsemoid_sympy, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_declared_kink_accepts_either_side(dtype):
    expr = gst.Expression.parse("sum(sparsemoid(x))", ops=[_op(kinks=[-1.0, 1.0])], bounds=(-2, 2))
    x = torch.tensor([1.0, -1.0, 0.5], dtype=dtype)
    (g,) = expr.gradient(x)
    assert isinstance(g, gk.GradientRange)
    assert g.low.tolist() == [0.0, 0.0, 0.25] and g.high.tolist() == [0.25, 0.25, 0.25]
    gk.assert_grad_equals(expr, (x,), expr.gradient(x))


def test_without_kinks_the_same_point_fails():
    expr = gst.Expression.parse("sum(sparsemoid(x))", ops=[_op()], bounds=(-2, 2))
    x = torch.tensor([1.0], dtype=torch.float64)
    assert not isinstance(expr.gradient(x)[0], gk.GradientRange)
    with pytest.raises(gk.GradientMismatch):
        gk.assert_grad_equals(expr, (x,), expr.gradient(x))


def test_a_value_outside_the_one_sided_range_fails():
    expr = gst.Expression.parse("sum(sparsemoid(x))", ops=[_op(kinks=[1.0])], bounds=(-2, 2))
    x = torch.tensor([1.0], dtype=torch.float64)

    def doubled(t):  # the backward gives 0.5 at the kink, outside [0, 0.25]
        return (t * 0.5).sum()

    with pytest.raises(gk.GradientMismatch, match="GradientRange"):
        gk.assert_grad_equals(doubled, (x,), expr.gradient(x))


def test_away_from_kinks_gradient_stays_a_plain_tensor():
    expr = gst.Expression.parse("sum(sparsemoid(x))", ops=[_op(kinks=[1.0])], bounds=(-2, 2))
    (g,) = expr.gradient(torch.tensor([0.5, -0.3], dtype=torch.float64))
    assert type(g) is torch.Tensor


def test_several_interval_domain():
    op = gst.Op("inv", lambda t: 1 / t, lambda s: 1 / s, domain=[(None, -0.5), (0.5, None)])
    assert op.domain == ((float("-inf"), float("inf")),)
    gst.Expression.parse("sum(inv(x))", ops=[op], bounds=(1, 2))
    gst.Expression.parse("sum(inv(x))", ops=[op], bounds=(-2, -1))
    with pytest.raises(InvalidArgument, match="domain"):
        gst.Expression.parse("sum(inv(x))", ops=[op], bounds=(-1, 1))


@pytest.mark.parametrize(
    "kw", [{"kinks": "1"}, {"kinks": [float("nan")]}, {"kinks": ["a"]}, {"domain": [(0, 2), (1, 3)]}]
)
def test_bad_kinks_or_domain_name_the_argument(kw):
    with pytest.raises(InvalidArgument, match=next(iter(kw)) + "="):
        _op(**kw)
