"""The examples people learn autograd from, as executable checks (issue 2, "Analytic expectations")."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import notes_with, randn

DTYPES = [torch.float32, torch.float64]


def _x(n=6, dtype=torch.float64, seed=0):
    return randn(n, dtype=dtype, seed=seed)


class _MeanSquareRight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x**2).mean()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x / x.numel()


class _MeanSquareHalf(_MeanSquareRight):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x / x.numel()  # forgot the 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_of_square_is_2x_over_n_by_formula(dtype):
    x = _x(dtype=dtype)
    (g,) = gk.assert_grad_equals(lambda x: (x**2).mean(), x, lambda x: 2 * x / x.numel())
    torch.testing.assert_close(g, 2 * x / x.numel())


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_of_square_custom_function_checked_numerically(dtype):
    x = _x(dtype=dtype)
    good = gk.check_gradients(_MeanSquareRight.apply, x)
    assert good.ok, str(good)
    bad = gk.check_gradients(_MeanSquareHalf.apply, x)
    assert not bad.ok
    assert bad.check("backward").status == "failed"
    assert len(bad.mismatches) == x.numel()
    for m in bad.mismatches:
        j = m.index[0]
        assert m.analytic == pytest.approx(float(x[j]) / x.numel(), rel=1e-5)
        assert m.numerical == pytest.approx(2 * float(x[j]) / x.numel(), rel=1e-4)


def test_polynomial_3a2_4a_2_at_3_has_gradient_22():
    a = torch.tensor(3.0, dtype=torch.float64)
    (g,) = gk.assert_grad_equals(lambda a: 3 * a**2 + 4 * a + 2, a, torch.tensor(22.0, dtype=torch.float64))
    assert g.item() == 22.0
    assert gk.check_gradients(lambda a: 3 * a**2 + 4 * a + 2, a).ok


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_of_2_x_plus_2_squared(dtype):
    x = _x(dtype=dtype)
    gk.assert_grad_equals(lambda x: (2 * (x + 2) ** 2).mean(), x, lambda x: 4 * (x + 2) / x.numel())
    assert gk.check_gradients(lambda x: (2 * (x + 2) ** 2).mean(), x).ok


def test_backward_with_vector_m_of_x_plus_8_gives_m():
    x = _x()
    m = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, 1.5], dtype=torch.float64)
    (g,) = gk.assert_grad_equals(lambda x: x + 8, x, m, grad_outputs=m)
    assert torch.equal(g, m)


def test_backward_with_vector_v_of_x_squared_gives_2xv():
    x = _x()
    v = _x(seed=1)
    gk.assert_grad_equals(lambda x: x**2, x, 2 * x * v, grad_outputs=v)


def test_non_scalar_output_without_grad_outputs_is_invalid():
    with pytest.raises(gk.InvalidArgument, match=r"grad_outputs=None"):
        gk.assert_grad_equals(lambda x: x**2, _x(), lambda x: 2 * x)


def test_linear_regression_loss_gradient_in_w():
    x, y = _x(seed=1), _x(seed=2)
    w = _x(seed=3).requires_grad_(True)
    # only w requires grad, so only w is differentiated
    (gw,) = gk.assert_grad_equals(
        lambda x, w, y: ((x * w - y) ** 2).sum(), (x, w, y), lambda x, w, y: 2 * x * (x * w - y)
    )
    assert gw.shape == w.shape
    assert w.grad is None
    assert gk.check_gradients(lambda x, w, y: (x * w - y) ** 2, x, w, y).ok


def test_gradients_accumulate_over_repeated_backward_and_zero_resets():
    # plain torch, documenting the behaviour the kit must not disturb
    x = _x().requires_grad_(True)
    for _ in range(3):
        (x**2).sum().backward()
    torch.testing.assert_close(x.grad, 3 * 2 * x.detach())
    x.grad.zero_()
    assert torch.equal(x.grad, torch.zeros_like(x))
    (x**2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


def _no_grad_fn(x):
    with torch.no_grad():
        return x * 2


def _requires_grad_false_fn(x):
    return x.detach().requires_grad_(False).sum() * 2


@pytest.mark.parametrize(
    "fn",
    [lambda x: (x.detach() * 2).sum(), lambda x: _no_grad_fn(x).sum(), _requires_grad_false_fn],
    ids=["detach", "no_grad", "requires_grad_false"],
)
def test_stopped_tracking_reports_no_gradient_flows(fn):
    x = _x()
    with pytest.raises(gk.GradientMismatch) as info:
        gk.assert_grad_equals(fn, x, torch.full_like(x, 2.0))
    assert "no gradient flows to input 0" in str(info.value)
    assert isinstance(info.value, AssertionError)


def test_stopped_tracking_with_zero_expected_passes():
    x = _x()
    gk.assert_grad_equals(lambda x: (x.detach() * 2).sum(), x, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_gradients_of_detached_function_names_the_input(dtype):
    x = _x(dtype=dtype)
    report = gk.check_gradients(lambda x: x.detach() * 2, x)
    assert not report.ok
    assert any(n.fields[0] == 0 for n in notes_with(report, "no_gradient_flow")), report.notes
    assert all(m.analytic == 0.0 for m in report.mismatches if m.check == "backward")
    assert "no gradient flows to input 0" in str(report)


def test_wrong_expected_shows_both_differing_elements():
    x = _x()
    wrong = 2 * x
    wrong[1] += 1.0
    with pytest.raises(gk.GradientMismatch) as info:
        gk.assert_grad_equals(lambda x: (x**2).sum(), x, wrong)
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == "Gradient of input 0 (x, shape (6,), float64) differs from expected: 1 of 6 elements"
    row = lines[1].split()
    assert row[0] == "x[1]"
    assert row[1] == f"autograd={float(2 * x[1]):.6g}"
    assert row[2] == f"expected={float(wrong[1]):.6g}"
    assert "|diff|=1.0e+00" in lines[1]
    assert "Reproduce:" in text
    # only the differing element is listed
    assert "x[0]" not in lines[1] and not any(line.strip().startswith("x[2]") for line in lines)


def test_assert_grad_equals_wrong_expected_count_is_invalid():
    x, y = _x(), _x(seed=1)
    with pytest.raises(gk.InvalidArgument, match="expected has 1 tensor"):
        gk.assert_grad_equals(lambda x, y: (x * y).sum(), (x, y), 2 * x)


def test_assert_grad_equals_leaves_inputs_and_grad_untouched():
    x = _x().requires_grad_(True)
    before = x.detach().clone()
    gk.assert_grad_equals(lambda x: (x**2).sum(), x, lambda x: 2 * x)
    assert x.grad is None
    assert torch.equal(x.detach(), before)
