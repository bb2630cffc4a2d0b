"""Autograd's rows through a graph of custom Functions whose vmap rules torch generates: one batched backward
(vmap over torch.func.vjp) instead of one backward per row, with the same verdicts."""

from __future__ import annotations

import torch

import gradcheck_kit as gk
from tests.helpers import randn, unary

WRONG = 5

# sin written for torch's transforms (vmap rule generated), right and 1% wrong at element WRONG; the wrong
# one as an old-style Function (one backward per row); a right old-style one
_SinGenerated = unary(torch.sin, torch.cos, vmap_rule=True, name="SinGenerated")
_SinGeneratedWrong = unary(torch.sin, torch.cos, at=WRONG, factor=1.01, vmap_rule=True, name="SinGeneratedWrong")
_SinNoRuleWrong = unary(torch.sin, torch.cos, at=WRONG, factor=1.01, name="SinNoRuleWrong")
_SinOldStyle = unary(torch.sin, torch.cos, name="_SinOldStyle")


def _check(fn, x):
    return gk.check_gradients(fn, x, mode="full", forward_ad=False)


def test_a_generated_vmap_rule_gets_the_rows_in_one_batched_backward():
    report = _check(_SinGenerated.apply, randn(12))
    assert report.ok, str(report)
    assert "vmap over torch.func.vjp" in report.check("backward").detail


def test_a_wrong_row_element_is_named_through_the_generated_vmap_rule():
    report = _check(_SinGeneratedWrong.apply, randn(12))
    loop = _check(_SinNoRuleWrong.apply, randn(12))
    assert "vmap over torch.func.vjp" in report.check("backward").detail
    assert "autograd loop" in loop.check("backward").detail
    assert [m.index for m in report.mismatches] == [(WRONG,)]
    assert [(m.index, m.analytic) for m in report.mismatches] == [(m.index, m.analytic) for m in loop.mismatches]


def test_a_function_without_a_generated_rule_keeps_one_backward_per_row():
    report = _check(_SinOldStyle.apply, randn(12))
    assert report.ok, str(report)
    assert "autograd loop (custom autograd.Function in the graph: _SinOldStyle)" in report.check("backward").detail
