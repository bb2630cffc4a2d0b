"""Gradient tests that use only the installed gradcheck_kit plugin: no conftest, no helpers."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from softplus import Head, softplus


def test_backward_matches_finite_differences(gradcheck):
    x = torch.linspace(-4, 4, 12, dtype=torch.float64).reshape(3, 4)
    gradcheck.assert_close(softplus, x)


def test_non_contiguous_input(gradcheck):
    x = torch.randn(6, 5, dtype=torch.float64, generator=gradcheck.generator())[::2].t()
    gradcheck.assert_close(softplus, x, 2.0)  # beta is not a tensor: not differentiated


def test_matches_the_analytic_derivative(gradcheck):
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    gradcheck.assert_equals(lambda x: softplus(x).sum(), x, torch.sigmoid)


@pytest.mark.gradcheck(mode="full", seed=7)
def test_in_each_dtype(gradcheck, gradcheck_dtype):
    x = torch.linspace(-2, 2, 5, dtype=gradcheck_dtype)
    report = gradcheck.assert_close(softplus, x)
    assert report.seed == 7


def test_module_parameters_through_the_functional_form(gradcheck):
    head = Head()
    weight, bias = head.linear.weight.detach(), head.linear.bias.detach()
    x = torch.randn(2, 4, dtype=torch.float64, generator=gradcheck.generator())
    gradcheck.assert_close(lambda x, w, b: softplus(x @ w.T + b), x, weight, bias)


@settings(max_examples=20, deadline=None)
@given(st.floats(-20, 20), st.floats(0.5, 4))
def test_any_point_and_beta(gradcheck, value, beta):
    gradcheck.assert_close(softplus, torch.tensor([value, -value], dtype=torch.float64), beta)
