"""Verdicts with default settings, float32 and float64: correct functions pass, wrong ones fail."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import gradcheck_kit as gk
from tests.helpers import (
    INF,
    NAN,
    WRONG_ELEMENT,
    SinHalfRounded,
    SinOnePercentOff,
    SinSignFlipped,
    SquareOneWrongElement,
    rand,
    randn,
    unary,
)

DTYPES = [torch.float32, torch.float64]


def _solve_inputs(dtype):
    a = randn(4, 4, seed=1) + 4 * torch.eye(4, dtype=torch.float64)
    return a.to(dtype), randn(4, 2, dtype=dtype, seed=2)


CORRECT = {
    "tanh": (torch.tanh, lambda dt: (randn(3, 4, dtype=dt),)),
    "exp_wide": (torch.exp, lambda dt: (torch.linspace(-10, 10, 21, dtype=torch.float64).to(dt),)),
    "softmax": (lambda x: torch.softmax(x, dim=-1), lambda dt: (randn(3, 5, dtype=dt),)),
    "log_softmax": (lambda x: torch.log_softmax(x, dim=-1), lambda dt: (randn(3, 5, dtype=dt),)),
    "layer_norm": (
        lambda x, w, b: F.layer_norm(x, (6,), w, b),
        lambda dt: (randn(3, 6, dtype=dt), randn(6, dtype=dt, seed=1), randn(6, dtype=dt, seed=2)),
    ),
    "matmul": (torch.matmul, lambda dt: (randn(4, 5, dtype=dt), randn(5, 3, dtype=dt, seed=1))),
    "conv1d": (
        lambda x, w: F.conv1d(x, w, padding=1),
        lambda dt: (randn(2, 3, 8, dtype=dt), randn(4, 3, 3, dtype=dt, seed=1)),
    ),
    "cross_entropy": (
        lambda logits, target: F.cross_entropy(logits, target),
        lambda dt: (randn(5, 4, dtype=dt), torch.tensor([0, 3, 1, 2, 3])),
    ),
    "linalg_solve": (torch.linalg.solve, _solve_inputs),
    # kinks and ties: inputs sit exactly on the non-differentiable points
    "relu_at_0": (torch.relu, lambda dt: (torch.tensor([-1.0, 0.0, 0.0, 2.0, -0.5, 0.0], dtype=dt),)),
    "abs_at_0": (torch.abs, lambda dt: (torch.tensor([-1.0, 0.0, 3.0, 0.0], dtype=dt),)),
    "amax_ties": (lambda x: torch.amax(x, dim=1), lambda dt: (torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=dt),)),
    "max_ties": (lambda x: torch.max(x), lambda dt: (torch.tensor([0.5, 2.0, 2.0, -1.0], dtype=dt),)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_function_passes(name, dtype):
    fn, make = CORRECT[name]
    report = gk.check_gradients(fn, *make(dtype))
    assert report.ok, str(report)
    assert report.mismatches == []
    assert report.check("backward").status == "passed"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("fn", [torch.relu, torch.abs], ids=["relu", "abs"])
def test_kink_is_noted(fn, dtype):
    report = gk.check_gradients(fn, torch.tensor([0.0, 1.0, -2.0], dtype=dtype))
    assert report.ok, str(report)
    assert sum(g.kinks for g in report.groups if g.check == "backward") >= 1, report.notes


def _relu_with_value_at_0(value):
    class _Relu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp_min(0)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            at0 = torch.full_like(x, value)
            return grad * torch.where(x > 0, torch.ones_like(x), torch.where(x == 0, at0, torch.zeros_like(x)))

    return _Relu.apply


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_relu_any_subgradient_at_0_passes(value, dtype):
    report = gk.check_gradients(_relu_with_value_at_0(value), torch.tensor([0.0, 1.0, -2.0], dtype=dtype))
    assert report.ok, str(report)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_relu_gradient_far_outside_subgradient_range_fails(dtype):
    report = gk.check_gradients(_relu_with_value_at_0(3.0), torch.tensor([0.0, 1.0, -2.0], dtype=dtype))
    assert not report.ok
    assert [m.index for m in report.mismatches if m.check == "backward"] == [(0,)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("value", [-1.0, 2.0])
def test_relu_gradient_outside_subgradient_range_fails(value, dtype):
    report = gk.check_gradients(_relu_with_value_at_0(value), torch.tensor([0.0, 1.0, -2.0], dtype=dtype))
    assert not report.ok


# ---- deliberately wrong custom Functions -------------------------------------------------------


class _SecondOutputIgnored(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x), torch.exp(x)

    @staticmethod
    def backward(ctx, g_sin, g_exp):
        (x,) = ctx.saved_tensors
        return g_sin * torch.cos(x)  # the exp output's gradient is dropped


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("fn", [SinOnePercentOff.apply, SinSignFlipped.apply, SinHalfRounded.apply], ids=["1pct", "sign", "fp16"])
def test_wrong_backward_fails(fn, dtype):
    report = gk.check_gradients(fn, randn(3, 4, dtype=dtype))
    assert not report.ok, str(report)
    assert report.check("backward").status == "failed"
    assert report.mismatches


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_second_output_gradient_ignored_fails_on_output_1(dtype):
    report = gk.check_gradients(_SecondOutputIgnored.apply, randn(5, dtype=dtype))
    assert not report.ok
    assert {m.output_index for m in report.mismatches if m.check == "backward"} == {1}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mode", ["auto", "full", "directional"])
def test_one_wrong_element_in_1000_is_caught(mode, dtype):
    x = randn(1000, dtype=dtype, seed=5)
    report = gk.check_gradients(SquareOneWrongElement.apply, x, mode=mode)
    assert not report.ok, str(report)
    assert report.check("backward").status == "failed"
    if mode != "directional":
        backward = [m for m in report.mismatches if m.check == "backward" and m.kind != "directional"]
        assert [m.index for m in backward] == [(WRONG_ELEMENT,)]


def test_sign_flip_mismatch_fields():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    report = gk.check_gradients(SinSignFlipped.apply, x)
    m = next(m for m in report.mismatches if m.index == (1,) and m.output_element == (1,))
    assert m.check == "backward"
    assert m.input_index == 0
    assert m.output_index == 0
    assert isinstance(m.index, tuple)
    assert m.kind == "jacobian"
    assert m.analytic == pytest.approx(-math.cos(-1.2), rel=1e-12)
    assert m.numerical == pytest.approx(math.cos(-1.2), rel=1e-8)
    assert m.abs_error == pytest.approx(abs(m.analytic - m.numerical))
    assert 0 < m.allowed < 1e-6
    assert m.input_value == pytest.approx(-1.2)
    assert m.input_name == "x"
    # off-diagonal entries are zero on both sides and are not mismatches
    assert all(m.index == m.output_element for m in report.mismatches)
    assert len([m for m in report.mismatches if m.check == "backward"]) == 3


# ---- NaN / inf / malformed gradients ------------------------------------------------------------


_NaNGrad = unary(lambda x: x * 3, lambda x: 3, at=1, factor=NAN)
_InfGrad = unary(lambda x: x * 3, lambda x: 3, at=0, factor=0.0, offset=INF)


class _WrongShape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(-1)[:1] * 2


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("fn, bad", [(_NaNGrad.apply, 1), (_InfGrad.apply, 0)], ids=["nan", "inf"])
def test_non_finite_analytic_gradient_is_a_mismatch(fn, bad, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check's own arithmetic on a non-finite value warns nothing
        report = gk.check_gradients(fn, randn(4, dtype=dtype))
    assert not report.ok
    rows = [m for m in report.mismatches if m.check == "backward"]
    assert rows and {m.index for m in rows} == {(bad,)}
    assert all(not math.isfinite(m.analytic) and math.isfinite(m.numerical) for m in rows)


def test_backward_of_wrong_shape_is_a_clear_error_not_a_crash():
    # torch itself rejects the malformed gradient inside backward; the kit reports it
    report = gk.check_gradients(_WrongShape.apply, randn(2, 3))
    assert not report.ok
    assert report.errors, str(report)
    text = str(report)
    assert "backward" in text and "shape" in text


_RoundedToFloat32 = unary(torch.sin, torch.cos, rounding=torch.float32)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_float64_gradient_computed_in_float32_is_caught(mode):
    # ~6e-8 relative: within the approximate tier of a Jacobian entry (issue 18: 1e-6-accurate float64
    # gradients pass, with a note), so full mode passes it as approximate; strict=True fails it
    report = gk.check_gradients(_RoundedToFloat32.apply, randn(5), mode=mode, strict=True)
    assert not report.ok
    assert report.check("backward").status == "failed"
    if mode == "full":
        report = gk.check_gradients(_RoundedToFloat32.apply, randn(5), mode=mode)
        assert report.ok and any(getattr(n, "code", None) == "approximate" for n in report.notes)


class _MissingProductTerm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y * x

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad * x * y, grad * x * x  # right: 2 * x * y for x


class _MeanInsteadOfSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.mean(0)  # right: grad.sum(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_missing_product_rule_term_fails_on_input_0(dtype):
    report = gk.check_gradients(_MissingProductTerm.apply, randn(3, dtype=dtype), randn(3, dtype=dtype, seed=1))
    assert not report.ok
    assert {m.input_index for m in report.mismatches if m.check == "backward"} == {0}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_mean_instead_of_sum_over_broadcast_fails_on_input_1(dtype):
    report = gk.check_gradients(_MeanInsteadOfSum.apply, randn(4, 3, dtype=dtype), randn(3, dtype=dtype, seed=1))
    assert not report.ok
    assert {m.input_index for m in report.mismatches if m.check == "backward"} == {1}


def test_empty_input_is_not_a_false_alarm():
    report = gk.check_gradients(torch.tanh, torch.zeros(0, 3, dtype=torch.float64))
    assert report.ok, str(report)


_DoubleTenPercentOff = unary(lambda x: x * 2, lambda x: 2, factor=1.1)


@pytest.mark.parametrize("values", [(1e200, 3.0), (1e300, -1e300)], ids=["1e200", "1e300"])
def test_inputs_whose_squares_overflow_are_compared_not_skipped(values):
    # rms of inputs and outputs are scaled (the squares of values above 1e154 are inf): every derivative is
    # compared, a right one passes and a wrong one at the huge value fails
    x = torch.tensor(values, dtype=torch.float64)
    right = gk.check_gradients(lambda t: t * 2, x, forward_ad=True)
    assert right.ok, str(right)
    assert all(g.unchecked == 0 for g in right.groups) and right.compared == 8
    wrong = gk.check_gradients(_DoubleTenPercentOff.apply, x, forward_ad=False)
    assert not wrong.ok
    assert (0,) in [m.index for m in wrong.mismatches]


@pytest.mark.parametrize("c", [1.0, 3.0, 10.0, 100.0])
@pytest.mark.parametrize("x0", [0.0, -2.2250738585072014e-308, 1e-20, 1e-12, 1e-8])
def test_a_function_of_unit_sized_intermediates_near_zero_is_not_a_false_alarm(c, x0):
    # log(x/c + 1) near 0 rounds the intermediate x/c + 1 by eps, far above eps·|f|: the finite difference
    # carries ~eps/h of relative noise that an eps·|f| model missed (5 of these 20 failed)
    x = torch.tensor(x0, dtype=torch.float64)
    report = gk.check_gradients(lambda t: torch.log(t / c + 1), x)
    assert report.ok, str(report)


@pytest.mark.parametrize("x0, y0", [(-2.2250738585072014e-308, 0.0), (0.0, 2.2250738585072014e-308), (1e-300, -2.2250738585072014e-308)])
def test_subnormal_values_and_derivatives_are_not_a_false_alarm(x0, y0):
    # x·y at the smallest normal numbers: f and the derivatives are subnormal, whose spacing (5e-324) is
    # far above eps·|f|; a round-off model without that floor allowed 3.5e-323 against a 3e-318 rounding
    def f(x, y):
        return (x * y * torch.sqrt(x**3 + 9) / torch.sqrt(y + 3)).mean()

    x = torch.tensor([[x0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor(y0, dtype=torch.float64)
    assert gk.check_gradients(f, x, y).ok


def test_the_floors_leave_small_errors_visible():
    # the new floors are ~1e-10 relative: a 1e-6 relative error of a backward is still far above them
    class _Log1pSlightlyOff(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.log(x / 10 + 1)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad / (x + 10) * (1 + 1e-6)

    # by default it passes in the approximate tier (issue 18: 1e-6-accurate float64 gradients pass, with a
    # note); strict=True sees it
    x = torch.zeros(3, dtype=torch.float64)
    report = gk.check_gradients(_Log1pSlightlyOff.apply, x)
    assert report.ok and any(getattr(n, "code", None) == "approximate" for n in report.notes)
    assert not gk.check_gradients(_Log1pSlightlyOff.apply, x, strict=True).ok


@pytest.mark.parametrize("mode, n", [("full", 2_000), ("directional", 100_000)])
def test_a_one_percent_error_under_a_large_float32_output_is_caught(mode, n):
    """The floor of a float32 allowance leaves out the derivative's natural size |out| / |x| (the measured
    round-off covers what that size is for). That size grows with the output, e.g. with the length of a
    sum, and with it in the floor a 1% error of every entry of the gradient of sum(sin(x) + 100) passed
    (full mode, 2,000 elements: 0.18x what was allowed; also sum(sin(x)) over 20,000)."""
    x = (6 * rand(n, seed=5) - 3).to(torch.float32).requires_grad_()
    assert gk.check_gradients(lambda x: (torch.sin(x) + 100).sum(), x, mode=mode).ok
    report = gk.check_gradients(lambda x: (SinOnePercentOff.apply(x) + 100).sum(), x, mode=mode)
    assert report.check("backward").status == "failed", str(report)


@pytest.mark.parametrize("c", [7e-42, 1e-43, 2.5e-44])
def test_a_float32_gradient_in_the_subnormal_range_is_not_a_false_alarm(c):
    # float32 stores the gradient c at its subnormal spacing (1.4e-45): 7e-42 becomes 6.9995e-42, off the
    # float64 numerics by 5e-46, which an allowance of eps·|gradient| (1e-48) did not cover
    x = torch.tensor([0.7, -1.3, 2.0])
    assert gk.check_gradients(lambda t: t * c, x).ok


def _ill_conditioned(x, y):
    # at x = 0 the derivative is sin(g) for g = ((x + 3)^4.5/16 - 38)/c ≈ -29/c, near a zero of sin: float32
    # rounds g by ~eps·38 and so the derivative by ~1e-4 of itself, however it is computed
    return (x * torch.sin(((x + 3) ** 4.5 / 16 - 38) / (1 + 1 / torch.sqrt(y + 3)) ** (1 / 3))).mean()


def test_an_ill_conditioned_float32_derivative_is_not_a_false_alarm():
    x, y = torch.tensor([0.0]), torch.zeros(1, 3)
    report = gk.check_gradients(_ill_conditioned, x, y)
    assert report.ok, str(report)
    assert "conditioning" in report.note_codes, report.notes


class _Float32OnlyHalfRounded(SinHalfRounded):
    """A float32 kernel's bug: its backward goes through float16; the float64 path is right."""

    @staticmethod
    def backward(ctx, grad):
        if grad.dtype == torch.float32:
            return SinHalfRounded.backward(ctx, grad)
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


def test_a_float32_only_bug_is_not_hidden_by_the_conditioning_allowance():
    # its float32 error against the float64 run exceeds the measured cap, so the conditioning runs, and the
    # float64 derivative of sin hardly moves over 64 float32 roundings: still caught, element by element
    assert not gk.check_gradients(_Float32OnlyHalfRounded.apply, randn(3, 4, dtype=torch.float32)).ok
    # element by element without the approximate tier (it passes the elements whose float16 rounding is
    # below 1e-4 of their scale)
    report = gk.check_gradients(_Float32OnlyHalfRounded.apply, randn(3, 4, dtype=torch.float32), strict=True)
    assert not report.ok
    assert "conditioning" in report.note_codes, report.notes
    assert len({m.index for m in report.mismatches if m.check == "backward"}) >= 6


@pytest.mark.parametrize(
    "fn, x0",
    [
        (lambda x: -torch.sin(torch.cos(x**3) - 1), 1e-12),  # cos(1e-36) - 1 is exactly 0
        (lambda x: torch.log(torch.exp((x**6 - 14) ** 3 / 4096 - 28) + 1), 0.2969),  # 1 + 1e-12 rounds
        (lambda x: torch.sqrt(torch.exp(torch.exp(10 * x - 17) - 18) + 1), -2.2250738585072014e-308),
    ],
    ids=["cos-1", "log1p-of-tiny", "sqrt-1p-of-tiny"],
)
def test_a_derivative_below_fns_rounding_is_unchecked_not_a_false_alarm(fn, x0):
    # f is identical at every stencil point (its change is below the rounding of its unit-size
    # intermediates) while autograd's derivative is tiny and right: found by fuzzing random expressions
    report = gk.check_gradients(fn, torch.tensor([x0], dtype=torch.float64))
    assert report.ok, str(report)
    assert any(str(code).startswith("unchecked_") for code in report.note_codes), report.notes


def test_a_constant_function_with_a_visible_gradient_still_fails():
    class _ConstantWithGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.zeros_like(x) + 3.0

        @staticmethod
        def backward(ctx, grad):
            return grad * 1e-6  # f does not depend on x; 1e-6 over the step is far above f's rounding

    assert not gk.check_gradients(_ConstantWithGradient.apply, torch.randn(4, dtype=torch.float64)).ok


def test_a_noise_sample_that_understates_fns_rounding_gets_a_second_one():
    # cos of an argument near -49 formed by a subtraction: every evaluation rounds by ~eps·49, and the one
    # noise sample of this derivative's stencil came out a tenth of that (error 4.8e-9, allowed 1.9e-9;
    # autograd is right to 1e-15). Found by fuzzing float64 expressions
    def f(x, y, z):
        inner = (y + 3) ** (1 / 3) - (10 * z + 21) ** (3 / 2) / 4 + 16
        return ((z * (10 - y) + torch.abs(x * z - 5)) * torch.sqrt(torch.sigmoid(y) + 1) * torch.cos(inner)).mean()

    x, y, z = (torch.tensor(v, dtype=torch.float64) for v in (-2.2250738585072014e-308, [-2.0], 2.0))
    report = gk.check_gradients(f, x, y, z)
    assert report.ok, str(report)
    assert "second_sample" in report.note_codes, report.notes


def test_a_second_derivative_in_float32s_subnormal_range_is_not_a_false_alarm():
    # a grad_output of 1e-38 makes the second derivative of 1/(8(x + 3)) a float32 subnormal (1e-40)
    # computed through subnormal intermediates: 8 spacings off the float64 run, against a cap of 64 eps of
    # the value (less than one spacing). Found by fuzzing random expressions with order=2
    from gradcheck_kit import strategies as gst

    tiny = torch.finfo(torch.float32).tiny
    x, v = torch.tensor([-tiny]), torch.tensor([-tiny])
    report = gk.check_gradients(gst.Expression.parse("1/(8*(x + 3))"), x, grad_outputs=v, order=2)
    assert report.ok, str(report)
