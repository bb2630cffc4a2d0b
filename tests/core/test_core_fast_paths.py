"""Full mode's shortcuts: the ±h screen and forward AD against the checked backward Jacobian.

Each shortcut may only ever *pass* what the full treatment would pass; anything else (a wrong entry, a
kink, a jvp that disagrees) must still get the full stencil and the entry-by-entry listing.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


class _SinWrongAt(torch.autograd.Function):
    """sin with a right jvp and a backward wrong at one element by a relative ``rel``."""

    rel = 1e-6
    where = 17

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g = (grad * torch.cos(x)).clone()
        g.view(-1)[_SinWrongAt.where] *= 1 + _SinWrongAt.rel
        return g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return t * torch.cos(x)


class _MatmulWrongJvpAt(torch.autograd.Function):
    """a @ b with a right backward and a jvp wrong at one element of the tangent of ``a``."""

    @staticmethod
    def forward(a, b):
        return a @ b

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.T, a.T @ g

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        ta = ta.clone()
        ta[2, 3] = ta[2, 3] * 1.01
        return ta @ b + a @ tb


class _MatmulRightJvp(_MatmulWrongJvpAt):
    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        return ta @ b + a @ tb


def _settled(report) -> bool:
    return "settled at ±h" in report.check("backward").detail


def test_a_smooth_correct_function_is_settled_with_two_points_per_coordinate():
    x = _randn(6, 5)
    report = gk.check_gradients(torch.tanh, x, mode="full", forward_ad=False)
    assert report.ok, str(report)
    assert _settled(report)
    # one analytic forward + 2 evaluations per coordinate, not the 4 of the whole stencil
    assert report.evaluations == 1 + 2 * x.numel()
    assert report.groups[0].compared == x.numel() ** 2


def test_the_screen_does_not_hide_a_tiny_error_in_one_element():
    x = _randn(40)
    report = gk.check_gradients(_SinWrongAt.apply, x, mode="full", forward_ad=False)
    assert not report.ok
    assert not _settled(report)
    (m,) = report.mismatches
    assert m.index == (_SinWrongAt.where,)
    assert report.evaluations == 1 + 4 * x.numel()  # the whole stencil ran for the listing


@pytest.mark.parametrize("fn", [torch.relu, torch.abs], ids=["relu", "abs"])
def test_kinks_still_get_the_full_treatment_and_the_note(fn):
    x = torch.tensor([-1.0, 0.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    report = gk.check_gradients(fn, x, mode="full")
    assert report.ok, str(report)
    assert not _settled(report)
    assert any("kink" in note for note in report.notes)


def test_ties_in_amax_are_reported_as_kinks():
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 0.5, 2.0]], dtype=torch.float64)
    report = gk.check_gradients(lambda t: t.amax(dim=1), x, mode="full")
    assert report.ok, str(report)
    assert any("kink" in note for note in report.notes)


def test_user_rtol_skips_the_screen():
    report = gk.check_gradients(torch.tanh, _randn(5), mode="full", rtol=1e-6, forward_ad=False)
    assert report.ok and not _settled(report)
    assert report.evaluations == 1 + 4 * 5


def test_forward_ad_of_a_verified_backward_is_checked_along_random_directions():
    a, b = _randn(6, 5, seed=1), _randn(5, 4, seed=2)
    report = gk.check_gradients(_MatmulRightJvp.apply, a, b, mode="full", forward_ad=True)
    assert report.ok, str(report)
    assert "random directions against the checked backward Jacobian" in report.check("forward_ad").detail


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_forward_ad_wrong_at_one_element_is_caught_and_named(dtype):
    a, b = _randn(6, 5, seed=1, dtype=dtype), _randn(5, 4, seed=2, dtype=dtype)
    report = gk.check_gradients(_MatmulWrongJvpAt.apply, a, b, mode="full", forward_ad=True)
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status == "failed"
    assert "every column compared with the finite differences" in report.check("forward_ad").detail
    wrong = {(m.input_index, m.index) for m in report.mismatches if m.check == "forward_ad"}
    assert wrong == {(0, (2, 3))}


def test_forward_ad_of_a_failed_backward_is_compared_entry_by_entry():
    x = _randn(30)
    report = gk.check_gradients(_SinWrongAt.apply, x, mode="full", forward_ad=True)
    assert report.check("backward").status == "failed"
    # the jvp is right: compared with the finite differences, not with the wrong backward
    assert report.check("forward_ad").status == "passed"
    assert report.check("forward_ad").detail == "full, every column against the finite differences"
