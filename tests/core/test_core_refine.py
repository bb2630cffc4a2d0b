"""Full mode's second opinion on failed entries: the same stencil at steps h/8, h/64, ...

A correct function that changes on a scale below the step (1/x at x = 1e-10, tanh(1e7·x) at 0, the inverse
of a nearly singular matrix) has a Richardson estimate at h that is far off and an error estimate that
cannot see it. Such an entry passes when a smaller step's converged estimate agrees with autograd and
differs from the one at h; a wrong gradient keeps failing, listed with the better estimate, and an entry
whose estimate at h was right costs one level of evaluations.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import randn, unary


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _reciprocal_off(factor, where=None):
    """1/x whose backward is ``factor`` times too large: everywhere, or at element ``where`` only."""

    return unary(lambda x: 1 / x, lambda x: -1 / (x * x), factor=factor, at=where).apply


@pytest.mark.parametrize(
    "fn, x",
    [
        (torch.reciprocal, _t(1e-10, 1.0)),
        (torch.reciprocal, _t(1e-12, -3e-9, 1.0)),
        (lambda x: torch.tanh(1e7 * x), _t(0.0, 1e-8)),
        (torch.linalg.inv, torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-12]], dtype=torch.float64)),
    ],
    ids=["reciprocal_1e-10", "reciprocal_1e-12", "steep_tanh", "nearly_singular_inv"],
)
def test_a_correct_function_that_changes_below_the_step_passes(fn, x):
    report = gk.check_gradients(fn, x, mode="full")
    assert report.ok, str(report)
    assert report.check("backward").status == "passed"
    assert "refined" in report.note_codes, report.notes
    # torch.autograd.gradcheck raises a false alarm on each of these
    assert not torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), raise_exception=False)


def test_a_wrong_gradient_next_to_a_steep_feature_is_caught_with_the_refined_estimate():
    report = gk.check_gradients(_reciprocal_off(1.01), _t(1e-10, 1.0), forward_ad=False)
    assert not report.ok
    [m] = [m for m in report.mismatches if m.check == "backward" and m.index == (0,)]
    # the estimate at h (about 2e10) was off by ten orders of magnitude; the listing shows the converged one
    assert m.numerical == pytest.approx(-1e20, rel=1e-4)
    assert m.analytic == pytest.approx(-1.01e20)
    assert m.allowed < 0.1 * m.abs_error
    assert "reestimated" in report.note_codes, report.notes
    # the element at 1.0 was right and stays right
    assert [m.index for m in report.mismatches if m.check == "backward"] == [(0,)]


@pytest.mark.parametrize("n", [5, 200])
def test_a_wrong_gradient_costs_one_level_of_refinement_on_at_most_32_coordinates(n):
    x = torch.linspace(0.5, 1.5, n, dtype=torch.float64)
    report = gk.check_gradients(_reciprocal_off(1.01), x, mode="full", forward_ad=False)
    assert not report.ok
    assert report.check("backward").status == "failed"
    # the analytic forward, the whole stencil (the screen fails everywhere), 4 points at h/8 for each
    # refined coordinate (the estimates at h were right: refinement stopped after that level), and one point
    # off float32's grid (fn's outputs are float64 values there: no recheck at a lower precision), 13 close
    # points (no staircase of a lower precision there) and the call that checks fn is deterministic
    assert report.evaluations == 1 + 4 * n + 4 * min(n, 32) + 1 + 13 + 1
    assert not {"refined", "reestimated"} & set(report.note_codes), report.notes


def _with_one_element_near_a_pole(n=1_100):  # 1100² Jacobian entries: auto picks directional
    x = torch.linspace(0.5, 1.5, n, dtype=torch.float64)
    x[5] = 1e-10
    x[9] = 1e-3
    return x


def test_a_directional_failure_from_the_finite_differences_alone_is_superseded_by_the_narrowed_check():
    # one element at 1e-10 makes v·f(x + t·u) change on a scale far below h: the directional estimate is
    # off and the check fails; auto mode narrows down with a full check of d(v·out)/dx, whose element at
    # 1e-10 passes at a smaller step and every other element at h: the gradient is right
    report = gk.check_gradients(torch.reciprocal, _with_one_element_near_a_pole(), forward_ad=True)
    assert report.mode == "directional"
    assert report.ok, str(report)
    assert "the directional failure came from the finite differences along u" in report.check("backward").detail
    assert report.mismatches == []
    forward = report.check("forward_ad")
    assert forward.status == "passed" and "against the backward's v·J·u" in forward.detail


def test_a_wrong_element_beside_a_pole_still_fails_after_narrowing():
    report = gk.check_gradients(_reciprocal_off(2.0, where=9), _with_one_element_near_a_pole())
    assert report.mode == "directional"
    assert not report.ok
    assert report.check("backward").status == "failed"
    assert (9,) in [m.index for m in report.mismatches if m.kind != "directional"]


def test_an_explicit_directional_check_does_not_refine_and_so_hides_nothing():
    # along u the element at 1e-10 dominates v·J·u and its tolerance: a smaller step there would pass the
    # wrong element 9 too. mode="directional" reports the failure as it is; auto mode (above) narrows it
    x = _with_one_element_near_a_pole()
    wrong = gk.check_gradients(_reciprocal_off(2.0, where=9), x, mode="directional")
    assert not wrong.ok and wrong.check("backward").status == "failed"
    assert not {"refined", "reestimated"} & set(wrong.note_codes), wrong.notes


# ---- functions that compute in lower precision inside ---------------------------------------------


class _SinInFloat32OnePercentOff(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x.float()).double()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad.float() * torch.cos(x.float()) * 1.01).double()


@pytest.mark.parametrize(
    "fn, precision",
    [
        (lambda x: torch.sin(x.float()).double(), "float32"),
        (lambda x: (x.float() @ x.float().T).double(), "float32"),
        (lambda x: torch.softmax(x.bfloat16(), -1).double(), "bfloat16"),
        (lambda x: torch.exp(x.half()).double(), "float16"),
    ],
    ids=["sin_f32", "matmul_f32", "softmax_bf16", "exp_f16"],
)
def test_a_function_computing_in_lower_precision_inside_is_checked_at_that_precision(fn, precision):
    # float64 in and out, float32/bfloat16/float16 inside: the outputs are a staircase that float64's step
    # resolves into noise far above float64's round-off model; gradcheck fails these too
    x = randn(6, 5, seed=3)
    report = gk.check_gradients(fn, x, mode="full")
    assert report.ok, str(report)
    assert f"with {precision}'s step and round-off (fn's outputs are {precision} values)" in report.method
    assert any(n.code == "low_precision_outputs" and n.fields == (precision,) for n in report.notes), report.notes
    # the float64 pass's notes (its second opinions at smaller steps) went with it
    assert not {"refined", "reestimated"} & set(report.note_codes), report.notes
    assert not torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), raise_exception=False)


def test_a_wrong_gradient_computed_in_float32_inside_still_fails():
    x = randn(6, 5, seed=3)
    report = gk.check_gradients(_SinInFloat32OnePercentOff.apply, x, mode="full")
    assert not report.ok
    assert "float32's step" in report.method
    worst = max((m for m in report.mismatches if m.check == "backward"), key=lambda m: m.ratio)
    assert worst.analytic == pytest.approx(1.01 * worst.numerical, rel=1e-3)


def test_a_float64_function_on_float32_valued_inputs_keeps_float64_numerics():
    # inputs made as float32 and cast: f(x) is float32-valued at x, but not at x moved by 2^-36
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)).double()
    report = gk.check_gradients(_reciprocal_off(1.0001), x.abs() + 0.5, mode="full", forward_ad=False)
    assert not report.ok
    assert "float32's step" not in report.method and "evaluated in float64" in report.method
    assert "low_precision_outputs" not in report.note_codes, report.notes


def test_a_constant_output_is_not_taken_for_lower_precision():
    # s - s.detach() is 0 everywhere (a value of every precision) with autograd's gradient 1e8: wrong, and
    # reported at float64's resolution, without a lower-precision recheck
    def straight_through(x):
        s = (x * 1e8).sum()
        return s - s.detach()

    report = gk.check_gradients(straight_through, torch.randn(50, dtype=torch.float64))
    assert not report.ok
    assert "evaluated in float64" in report.method and "step and round-off" not in report.method
    assert "low_precision_outputs" not in report.note_codes, report.notes



def _focal_in_float32(n: int, drop_factor_term: bool = False):
    """A sigmoid focal loss (γ = 2) that casts its float64 logits to float32 (as MONAI's FocalLoss does) and
    returns a float32 value; ``drop_factor_term`` detaches the modulating factor (a dropped term)."""
    import torch.nn.functional as F

    target = (randn(n, seed=10) > 0).float()

    def focal(x):
        x32 = x.float()
        loss = x32 - x32 * target - F.logsigmoid(x32)
        factor = (F.logsigmoid(-x32 * (target * 2 - 1)) * 2.0).exp()
        return ((factor.detach() if drop_factor_term else factor) * loss).mean()

    return focal


def test_a_float32_output_of_float64_inputs_is_rechecked_at_float32_precision_also_where_it_passed():
    # the check at float64's step passes here without a second opinion; the float32 output tells the precision
    report = gk.check_gradients(_focal_in_float32(8), randn(8, seed=1) * 2)
    assert report.ok, str(report)
    assert "float32's step" in report.method
    assert any(n.code == "low_precision_outputs" and n.fields == ("float32",) for n in report.notes), report.notes


@pytest.mark.slow
def test_a_dropped_term_of_a_float32_output_of_float64_inputs_fails():
    # at float64's step the float32 rounding of x and of the output is noise of a few % of the derivative,
    # which the allowance took in: the dropped term passed there
    wrong = gk.check_gradients(_focal_in_float32(72, drop_factor_term=True), randn(72, seed=0) * 2)
    assert not wrong.ok
    assert "float32's step" in wrong.method
