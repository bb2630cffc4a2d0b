"""Reliability of the checker's own machinery: no crash through custom Functions, no dependence on the
caller's grad or inference mode, bad grad_outputs rejected, thread-safe RNG isolation, module state kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import gradcheck_kit as gk


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# ------------------------------------------------------------------------------------------------
# custom autograd.Function nodes: never a batched backward through them (is_grads_batched crashes the
# process where backward reads grad_output.data)

_DATA_BACKWARD = textwrap.dedent(
    """
    import torch, gradcheck_kit as gk

    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2
        backward = staticmethod(lambda ctx, g: g.data * 2)

    class DoubleRule(torch.autograd.Function):  # declares a vmap rule: functorch may run it
        generate_vmap_rule = True
        @staticmethod
        def forward(x):
            return x * 2
        @staticmethod
        def setup_context(ctx, inputs, output):
            pass
        backward = staticmethod(lambda ctx, g: g.data * 2)

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2
        backward = staticmethod(lambda ctx, g: g.data * 3)

    for fn in (Double.apply, DoubleRule.apply):
        for shape in ((3, 4), (8, 8)):  # 12 rows through is_grads_batched; 64 through vmap over func.vjp
            report = gk.check_gradients(fn, torch.randn(*shape, dtype=torch.float64), mode="full")
            assert report.ok, report
            assert "autograd loop (custom autograd.Function in the graph: " in report.check("backward").detail
    report = gk.check_gradients(Wrong.apply, torch.randn(3, 4, dtype=torch.float64), mode="full")
    assert not report.ok and report.check("backward").status == "failed", report
    print("done")
    """
)


def test_backward_reading_grad_output_data_runs_in_a_child_process_without_crashing():
    result = subprocess.run([sys.executable, "-c", _DATA_BACKWARD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "done"


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _SquareRule(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_custom_function_rows_come_one_backward_at_a_time():
    report = gk.check_gradients(lambda x: _Square.apply(x).sin(), _randn(3, 4), mode="full")
    assert report.ok
    assert "autograd loop (custom autograd.Function in the graph: _Square)" in report.check("backward").detail
    plain = gk.check_gradients(lambda x: (x * x).sin(), _randn(3, 4), mode="full")
    assert "autograd batched" in plain.check("backward").detail


def test_custom_function_with_a_vmap_rule_stays_batched_through_functorch():
    # vmap over torch.func.vjp raises (never crashes) on .data and storage access, so a Function that
    # declares a vmap rule keeps that batched path; is_grads_batched is still never used through it
    report = gk.check_gradients(_SquareRule.apply, _randn(8, 8), mode="full")
    assert report.ok
    assert "autograd batched (vmap over torch.func.vjp)" in report.check("backward").detail
    few = gk.check_gradients(_SquareRule.apply, _randn(3, 4), mode="full")
    assert few.ok and "autograd loop (custom autograd.Function in the graph: _SquareRule)" in few.check("backward").detail
