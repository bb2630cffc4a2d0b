"""Forward AD's passes do double duty: the pass at the inputs stands in for the determinism call where it
gives the first call's outputs, and a function found to need grad gets its passes with grad at once.

Neither may cost a verdict: a wrong jvp is still caught, a function that changes between calls is still an
error, and a pass whose values differ (fn branches under forward AD) leaves the decision to a plain call.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import gradcheck_kit as gk
from tests.helpers import Counted, randn, unary


def _forward_status(report) -> str:
    return next(c.status for c in report.checks if c.name == "forward_ad")


def _check(fn, x, **options):
    counted = Counted(fn)
    report = gk.check_gradients(counted, x, **options)
    return report, counted.calls


def _sin_times_x(x):
    return torch.sin(x) * x


def _third_power_derivative(x):
    # differentiates internally: without grad it raises
    return torch.autograd.grad((x**3).sum(), x, create_graph=True)[0]


def test_the_forward_pass_at_the_inputs_stands_in_for_the_determinism_call():
    x = randn(6)
    # (mode="full": auto mode's plan may probe vmap, or not, by the time a call takes)
    on, calls_on = _check(_sin_times_x, x, mode="full", forward_ad=True)
    off, calls_off = _check(_sin_times_x, x, mode="full", forward_ad=False)
    assert on.ok and off.ok
    assert _forward_status(on) == "passed"
    assert calls_on == calls_off  # the pass is the call at the inputs that the determinism check needs
    assert on.evaluations == off.evaluations - 1  # no call of fn was made for it


def test_a_function_that_needs_grad_gets_one_pass_with_grad():
    x = torch.linspace(0.3, 1.2, 6, dtype=torch.float64)
    on, calls_on = _check(_third_power_derivative, x, mode="full", forward_ad=True)
    off, calls_off = _check(_third_power_derivative, x, mode="full", forward_ad=False)
    assert on.ok and off.ok
    assert _forward_status(on) == "passed"
    assert calls_on == calls_off  # one pass, with grad (no failed pass without), and no determinism call


def test_a_pass_whose_values_differ_under_forward_ad_leaves_determinism_to_a_plain_call():
    def shifted_under_forward_ad(x):
        return torch.sin(x) + (1e-3 if fwAD._current_level >= 0 else 0.0)

    x = randn(6)
    report, calls = _check(shifted_under_forward_ad, x, mode="full", forward_ad=True)
    _, plain_calls = _check(_sin_times_x, x, mode="full", forward_ad=True)
    assert report.ok and not report.errors, str(report)
    assert calls == plain_calls + 1  # the plain call at the inputs was made, and agreed


def test_a_function_that_changes_at_its_last_call_is_an_error_with_forward_ad():
    calls = [0]

    def changes_from_fourth_call(x):
        calls[0] += 1
        return torch.sin(x) * (1.01 if calls[0] >= 4 else 1.0)

    report = gk.check_gradients(changes_from_fourth_call, randn(6), mode="full")
    assert not report.ok
    assert report.errors[0].startswith("fn is not a deterministic function of its inputs"), str(report)


# x² with a right backward and a jvp 1% off
_SquareWrongJvp = unary(lambda x: x * x, lambda x: 2 * x, jvp=1.01, name="SquareWrongJvp")


def _wrong_jvp_needing_grad(x):
    inner = torch.autograd.grad((x**2).sum(), x, create_graph=True)[0]
    return _SquareWrongJvp.apply(x) + 0.0 * inner


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("fn", [_SquareWrongJvp.apply, _wrong_jvp_needing_grad])
def test_a_wrong_jvp_is_still_caught(fn, mode):
    x = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    report = gk.check_gradients(fn, x, mode=mode)
    assert not report.ok
    assert _forward_status(report) == "failed"
    backward = next(c.status for c in report.checks if c.name == "backward")
    assert backward == "passed"


class _ProductSlow(torch.autograd.Function):
    """x·sin(y), old-style (vmap cannot run it), a little slow (auto mode's plan goes along directions);
    its jvp wrong by ``rel`` in y's term."""

    rel = 0.0

    @staticmethod
    def forward(ctx, x, y):
        time.sleep(5e-4)
        ctx.save_for_backward(x, y)
        ctx.save_for_forward(x, y)
        return x * torch.sin(y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * torch.sin(y), g * x * torch.cos(y)

    @staticmethod
    def jvp(ctx, tx, ty):
        x, y = ctx.saved_tensors
        return tx * torch.sin(y) + (1 + _ProductSlow.rel) * ty * x * torch.cos(y)


def _product_check(dtype, rel, forward_ad="auto"):
    x, y = randn(24, seed=1, dtype=dtype), randn(24, seed=2, dtype=dtype)
    _ProductSlow.rel = rel
    counted = Counted(_ProductSlow.apply)
    try:
        report = gk.check_gradients(counted, x, y, forward_ad=forward_ad)
    finally:
        _ProductSlow.rel = 0.0
    return report, counted.calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_fn_vmap_cannot_run_gets_one_forward_pass_per_direction_for_all_inputs(dtype):
    on, calls_on = _product_check(dtype, 0.0)
    off, calls_off = _product_check(dtype, 0.0, forward_ad=False)
    assert on.ok and off.ok, str(on)
    assert on.mode == "directional" and _forward_status(on) == "passed"
    assert calls_on - calls_off == 2  # one pass per direction moving both inputs, in float32 too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_wrong_jvp_of_one_input_is_caught_through_the_joint_passes(dtype):
    report, _ = _product_check(dtype, 0.01)
    assert not report.ok
    assert _forward_status(report) == "failed"
    assert next(c.status for c in report.checks if c.name == "backward") == "passed"


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_auto_makes_no_forward_pass_through_a_custom_function_without_a_jvp(mode):
    # the pass would raise at the Function after a call of fn: "auto" skips it with the reason that raise gives
    fn = Counted(unary(torch.sin, torch.cos, name="NoJvp").apply)
    report = gk.check_gradients(fn, randn(6).requires_grad_(), mode=mode)
    check = report.check("forward_ad")
    assert report.ok and check.status == "skipped" and "without a jvp" in check.detail
    asked = Counted(unary(torch.sin, torch.cos, name="NoJvp").apply)
    forced = gk.check_gradients(asked, randn(6).requires_grad_(), mode=mode, forward_ad=True)
    assert forced.check("forward_ad").status == "error" and asked.calls > fn.calls


def test_a_wrong_jvp_beside_a_function_without_one_is_still_caught():
    # the Function without a jvp acts on a constant that requires grad (a parameter), where no tangent goes:
    # the pass runs, and the other Function's wrong jvp fails it
    without = unary(torch.sin, torch.cos, name="NoJvp")
    wrong_jvp = unary(lambda x: x * x, lambda x: 2 * x, jvp=1.01, name="SquareWrongJvp")
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)

    def fn(x):
        return wrong_jvp.apply(x) * without.apply(scale)

    report = gk.check_gradients(fn, torch.linspace(0.5, 1.5, 6, dtype=torch.float64), mode="full")
    assert _forward_status(report) == "failed", str(report)
    assert "NoJvp" not in report.check("forward_ad").detail
