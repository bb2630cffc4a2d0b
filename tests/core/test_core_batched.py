"""batched=True: fn, its backward and its forward AD under vmap against one call per batch entry; and a
vmap rule that mixes batch entries never becomes the numerical side's values."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import SinRight, SinWithVmapRule, randn


def _x():
    return randn(4, 3)


class _MixesBatchEntries(torch.autograd.Function):
    """Right forward and backward one call at a time; its vmap rule returns the batch reversed."""

    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.cos()

    @staticmethod
    def vmap(info, in_dims, x):
        return x.sin().flip(0), 0


@pytest.mark.parametrize("fn", [lambda t: t.sin() * t, torch.nn.functional.softplus, SinWithVmapRule.apply])
def test_functions_that_vmap_correctly_pass_the_batched_check(fn):
    report = gk.check_gradients(fn, _x(), batched=True)
    assert report.ok, report.details()
    assert report.check("batched").status == "passed"
    assert "backward (vmap over vjp)" in report.check("batched").detail


def test_plain_torch_functions_also_compare_is_grads_batched_and_batched_jvp():
    detail = gk.check_gradients(torch.tanh, _x(), batched=True).check("batched").detail
    assert "backward (is_grads_batched)" in detail and "forward_ad" in detail


def test_a_vmap_rule_that_mixes_batch_entries_is_its_own_failure_not_a_wrong_gradient():
    report = gk.check_gradients(_MixesBatchEntries.apply, _x())
    assert not report.ok
    assert report.check("batched").status == "failed"
    assert report.check("backward").status == "passed"  # numerics evaluated point by point instead
    assert "point by point" in report.check("backward").detail
    explicit = gk.check_gradients(_MixesBatchEntries.apply, _x(), batched=True)
    assert explicit.check("batched").status == "failed"
    assert "forward" in explicit.check("batched").detail


def test_a_function_vmap_cannot_run_gets_a_skipped_batched_check_with_the_reason():

    report = gk.check_gradients(SinRight.apply, _x(), batched=True)
    assert report.ok
    assert report.check("batched").status == "skipped"
    assert "without a vmap rule" in report.check("batched").detail


def test_batched_is_off_by_default_and_validated():
    assert gk.check_gradients(torch.sin, _x()).check("batched") is None
    with pytest.raises(gk.InvalidArgument, match="batched=1 is invalid"):
        gk.check_gradients(torch.sin, _x(), batched=1)
