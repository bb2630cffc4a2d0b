"""Edges of the numerics: kinks near (not at) the point, non-finite input elements, the cost of full mode.

- A kink between h and 2h of the point spoils the central Richardson value and inflates its error
  estimate; the entry is judged again at a smaller step on the kink's clean side, never with a wider
  tolerance.
- Non-finite input elements that fn masks out are listed as not checked and the others are checked; where
  fn uses them, the error names them.
- Full mode's cost is estimated before it runs: above a limit (a minute, or GRADCHECK_KIT_FULL_SECONDS) the
  report carries an error with the estimate that points to auto/directional mode.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import unary

#: the float64 numerics' step at |x| <= 1 (2^round(log2(eps^(1/3)))), and float32-only numerics' (eps^(1/5))
H64 = 2.0**-17
H32 = 2.0**-5


def _relu_at(c: float, slope: float = 1.0, side: float = 1.0, in_float32: bool = False):
    """relu(side·(x - c)) whose backward is ``slope`` times the true one; ``in_float32``: computed in float32
    inside (fn does not compute in float64, the numerics run in float32 with its larger step)."""

    class _Relu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.relu(side * ((x.float() if in_float32 else x) - c))

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return side * slope * grad * (side * (x - c) > 0).to(grad.dtype)

    return _Relu.apply


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["auto", "directional"])
@pytest.mark.parametrize("side", [1.0, -1.0])
def test_a_wrong_slope_next_to_a_kink_between_h_and_2h_fails(dtype, mode, side):
    x = torch.tensor([0.5], dtype=dtype)
    c = 0.5 - side * 1e-5  # the kink 1.31 h from the point, on the side away from `side`
    wrong = gk.check_gradients(_relu_at(c, 1.2, side), x, mode=mode)
    assert not wrong.ok, str(wrong)
    listed = [m for m in wrong.mismatches if m.check == "backward"]
    assert listed
    for m in listed:  # one per direction in directional mode
        # the estimate shown is the clean side's, and the tolerance is not inflated past the 20% error
        assert m.numerical == pytest.approx(m.analytic / 1.2, rel=1e-6)
        assert m.allowed < 1e-3 * abs(m.analytic)
    # fields: (input, output,) decided, wrong, level: some of them found wrong
    assert any(n.code == "kink_in_stencil" and n.fields[-2] >= 1 for n in wrong.notes), wrong.notes
    right = gk.check_gradients(_relu_at(c, 1.0, side), x, mode=mode)
    assert right.ok, str(right)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("distance", [0.5, 0.9, 1.1, 1.31, 1.7, 1.99, 3.0, 5.0])
def test_kinks_at_any_distance_from_the_point(dtype, mode, distance):
    x = torch.tensor([0.5], dtype=dtype)
    c = 0.5 - distance * H64
    assert not gk.check_gradients(_relu_at(c, 1.2), x, mode=mode).ok
    assert gk.check_gradients(_relu_at(c, 1.0), x, mode=mode).ok


@pytest.mark.parametrize("distance", [1.31, 2.5, 3.9])
def test_kinks_inside_the_float32_stencil_of_a_function_that_computes_in_float32(distance):
    """Without float64 the stencil reaches 4h (h = 1/32): kinks between h and 2h or 2h and 4h."""
    x = torch.tensor([0.5], dtype=torch.float32)
    c = 0.5 - distance * H32
    wrong = gk.check_gradients(_relu_at(c, 1.2, in_float32=True), x, mode="full")
    assert not wrong.ok, str(wrong)
    right = gk.check_gradients(_relu_at(c, 1.0, in_float32=True), x, mode="full")
    assert right.ok, str(right)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_kink_exactly_at_the_point_still_passes_as_a_kink(dtype):
    x = torch.tensor([0.0, 0.7, -0.4], dtype=dtype)
    report = gk.check_gradients(torch.relu, x, mode="full")
    assert report.ok, str(report)
    assert sum(g.kinks for g in report.groups if g.check == "backward") == 1


def test_only_the_entry_next_to_the_kink_is_judged_again():
    # elements far from the kink are right; the one at 1.31 h from it is 20% wrong
    x = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)

    _Bad = unary(lambda t: torch.relu(t - (0.5 - 1e-5)), lambda t: (t > 0.5 - 1e-5).to(t.dtype), at=0, factor=1.2)

    report = gk.check_gradients(_Bad.apply, x, mode="full")
    assert [m.index for m in report.mismatches if m.check == "backward"] == [(0,)]


# ---------------------------------------------------------------------------------------------------
# non-finite input elements
def _masked_sin(slope: float = 1.0):
    """sin of x with its non-finite elements masked to 0; the backward ``slope`` times the true one."""

    class _MaskedSin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return torch.where(torch.isfinite(t), t, 0).sin()

        @staticmethod
        def backward(ctx, grad):
            (t,) = ctx.saved_tensors
            return torch.where(torch.isfinite(t), slope * torch.where(torch.isfinite(t), t, 0).cos() * grad, 0)

    return _MaskedSin.apply


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["full", "directional", "auto"])
def test_non_finite_elements_that_fn_masks_out_are_listed_as_not_checked(dtype, mode):
    x = torch.tensor([0.1, 0.2, 0.3, float("nan"), 0.5, float("inf")], dtype=dtype)
    report = gk.check_gradients(lambda t: torch.where(t.isfinite(), t, 0).sin(), x, mode=mode)
    assert report.ok, str(report)
    assert "allowed nan" not in str(report)
    [note] = [n for n in report.notes if n.code == "nonfinite_inputs"]
    assert note.fields == (("t", (3, 5)),)
    # the other elements were checked: a 1% wrong backward there fails
    wrong = gk.check_gradients(_masked_sin(1.01), x, mode=mode)
    assert not wrong.ok
    assert wrong.check("backward").status == "failed"
    assert all(m.index not in ((3,), (5,)) for m in wrong.mismatches)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_non_finite_elements_that_fn_uses_give_an_error_naming_them(dtype, mode):
    x = torch.tensor([0.1, float("nan"), 0.5], dtype=dtype)
    report = gk.check_gradients(torch.sin, x, mode=mode)
    assert not report.ok
    [error] = report.errors
    assert "non-finite value(s)" in error and "non-finite elements (x[1] is nan)" in error
    assert not report.mismatches


def test_a_large_input_with_masked_non_finite_elements_is_checked_directionally():
    x = torch.linspace(-1, 1, 100_000, dtype=torch.float64)
    x[7], x[9] = float("nan"), float("-inf")
    report = gk.check_gradients(lambda t: torch.where(t.isfinite(), t, 0).sin(), x)
    assert report.ok and report.mode == "directional", str(report)
    assert [n.fields for n in report.notes if n.code == "nonfinite_inputs"] == [(("t", (7, 9)),)], report.notes


# ---------------------------------------------------------------------------------------------------
# the cost of full mode
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_mode_on_a_large_sum_is_refused_up_front_with_the_estimate(dtype):
    x = torch.randn(100_000, dtype=dtype, generator=torch.Generator().manual_seed(0))
    report = gk.check_gradients(torch.sum, x, mode="full")
    assert report.elapsed < 2.0
    assert not report.ok and not report.checks
    [error] = report.errors
    assert error.startswith("mode='full' not run: it would take about ")
    assert "100,000 input coordinates" in error
    assert "mode='auto'" in error and "mode='directional'" in error
    assert "GRADCHECK_KIT_FULL_SECONDS" in error
    with pytest.raises(gk.GradientMismatch, match="mode='full' not run"):
        gk.assert_gradients_close(torch.sum, x, mode="full")
    # the default mode checks it directionally, in a fraction of a second
    assert gk.check_gradients(torch.sum, x).ok


def test_the_full_mode_limit_is_an_environment_setting(monkeypatch):
    x = torch.linspace(-1, 1, 5000, dtype=torch.float64)
    monkeypatch.setenv("GRADCHECK_KIT_FULL_SECONDS", "0.01")
    refused = gk.check_gradients(torch.sum, x, mode="full")
    assert not refused.ok and "above the limit of 0.01 s" in refused.errors[0]
    # estimated above a sixth of the limit: it runs, with a note
    monkeypatch.setenv("GRADCHECK_KIT_FULL_SECONDS", "inf")
    assert gk.check_gradients(torch.sum, x, mode="full").ok
    monkeypatch.setenv("GRADCHECK_KIT_FULL_SECONDS", "4")
    noted = gk.check_gradients(torch.sum, x, mode="full")
    assert noted.ok
    assert "full_cost" in noted.note_codes, noted.notes
    monkeypatch.setenv("GRADCHECK_KIT_FULL_SECONDS", "soon")
    with pytest.raises(gk.InvalidArgument, match="GRADCHECK_KIT_FULL_SECONDS='soon'"):
        gk.check_gradients(torch.sum, x, mode="full")
