"""Autograd's rows through a graph of custom Functions whose vmap rules torch generates: one batched backward
(vmap over torch.func.vjp) instead of one backward per row, with the same verdicts."""

from __future__ import annotations

import torch

import gradcheck_kit as gk
from tests.helpers import randn

WRONG = 5


class _SinGenerated(torch.autograd.Function):
    """sin, written for torch's transforms (vmap rule generated); its backward wrong at element ``WRONG``
    by ``rel``."""

    generate_vmap_rule = True
    rel = 0.0

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        scale = torch.ones_like(x)
        scale[..., WRONG] = 1 + _SinGenerated.rel
        return grad * torch.cos(x) * scale


class _SinNoRule(_SinGenerated):
    """the same sin without the generated vmap rule: one backward per row."""

    generate_vmap_rule = False


class _SinOldStyle(torch.autograd.Function):
    """sin with forward(ctx, x): torch's transforms cannot run it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


def _check(fn, x):
    return gk.check_gradients(fn, x, mode="full", forward_ad=False)


def test_a_generated_vmap_rule_gets_the_rows_in_one_batched_backward():
    report = _check(_SinGenerated.apply, randn(12))
    assert report.ok, str(report)
    assert "vmap over torch.func.vjp" in report.check("backward").detail


def test_a_wrong_row_element_is_named_through_the_generated_vmap_rule():
    _SinGenerated.rel = 0.01
    try:
        report = _check(_SinGenerated.apply, randn(12))
        loop = _check(_SinNoRule.apply, randn(12))
    finally:
        _SinGenerated.rel = 0.0
    assert "vmap over torch.func.vjp" in report.check("backward").detail
    assert "autograd loop" in loop.check("backward").detail
    assert [m.index for m in report.mismatches] == [(WRONG,)]
    assert [(m.index, m.analytic) for m in report.mismatches] == [(m.index, m.analytic) for m in loop.mismatches]


def test_a_function_without_a_generated_rule_keeps_one_backward_per_row():
    report = _check(_SinOldStyle.apply, randn(12))
    assert report.ok, str(report)
    assert "autograd loop (custom autograd.Function in the graph: _SinOldStyle)" in report.check("backward").detail
