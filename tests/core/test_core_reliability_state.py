"""Reliability of the checker's own machinery: no crash through custom Functions, no dependence on the
caller's grad or inference mode, bad grad_outputs rejected, thread-safe RNG isolation, module state kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import DoubleSignFlipped, SquareRight, SquareWithVmapRule, randn


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

    # 12 rows (is_grads_batched's path) and 64 rows (vmap over torch.func.vjp, then rows one at a time)
    for fn, shape in ((Double.apply, (3, 4)), (DoubleRule.apply, (8, 8))):
        report = gk.check_gradients(fn, torch.randn(*shape, dtype=torch.float64), mode="full", forward_ad=False)
        assert report.ok, report
        assert "autograd loop (custom autograd.Function in the graph: " in report.check("backward").detail

    def hooked(x):  # a Python hook reading .data crashes is_grads_batched the same way
        y = x * 2
        y.register_hook(lambda g: g.data * 1)
        return y.sin()

    report = gk.check_gradients(hooked, torch.randn(3, 4, dtype=torch.float64), mode="full", forward_ad=False)
    assert report.ok, report
    assert "autograd loop (Python code runs in the backward: a hook)" in report.check("backward").detail
    print("done")
    """
)


def test_backward_reading_grad_output_data_runs_in_a_child_process_without_crashing():
    result = subprocess.run([sys.executable, "-c", _DATA_BACKWARD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "done"


def test_custom_function_rows_come_one_backward_at_a_time():
    report = gk.check_gradients(lambda x: SquareRight.apply(x).sin(), randn(3, 4), mode="full")
    assert report.ok
    assert "autograd loop (custom autograd.Function in the graph: SquareRight)" in report.check("backward").detail
    wrong = gk.check_gradients(DoubleSignFlipped.apply, randn(3, 4), mode="full", forward_ad=False)
    assert wrong.check("backward").status == "failed"
    assert "autograd loop (custom autograd.Function in the graph: DoubleSignFlipped)" in wrong.check("backward").detail
    plain = gk.check_gradients(lambda x: (x * x).sin(), randn(3, 4), mode="full")
    assert "autograd batched" in plain.check("backward").detail


def test_python_hooks_in_the_backward_get_one_backward_per_row():
    def hooked(x):
        y = x * 2
        y.register_hook(lambda g: g * 1)
        z = y.sin()
        z.grad_fn.register_prehook(lambda go: go)
        return z

    report = gk.check_gradients(hooked, randn(3, 4), mode="full", forward_ad=False)
    assert report.ok
    assert "autograd loop (Python code runs in the backward: a hook)" in report.check("backward").detail


def test_custom_function_with_a_vmap_rule_stays_batched_through_functorch():
    # vmap over torch.func.vjp raises (never crashes) on .data and storage access, so a Function that
    # functorch can run keeps that batched path; is_grads_batched is still never used through it. A
    # generated vmap rule takes it for a few rows too (one batched backward instead of one per row)
    report = gk.check_gradients(SquareWithVmapRule.apply, randn(8, 8), mode="full")
    assert report.ok
    assert "autograd batched (vmap over torch.func.vjp)" in report.check("backward").detail
    few = gk.check_gradients(SquareWithVmapRule.apply, randn(3, 4), mode="full")
    assert few.ok and "autograd batched (vmap over torch.func.vjp)" in few.check("backward").detail


# ------------------------------------------------------------------------------------------------
# the caller's grad and inference mode: a check records graphs whatever they are, and leaves them as found


@pytest.mark.parametrize("made_inside", [False, True], ids=["input_made_outside", "input_made_inside"])
def test_check_gradients_inside_inference_mode(made_inside):
    x = randn(3, 4)
    with torch.inference_mode():
        if made_inside:
            x = torch.randn(3, 4, dtype=torch.float64)
            assert x.is_inference()
        report = gk.check_gradients(torch.sin, x)
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert report.ok, report
    assert report.check("backward").status == "passed"
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


def test_wrong_gradient_still_fails_inside_inference_mode():
    with torch.inference_mode():
        report = gk.check_gradients(DoubleSignFlipped.apply, torch.randn(3, dtype=torch.float64), mode="full")
    assert not report.ok and report.check("backward").status == "failed"


@pytest.mark.parametrize("made_inside", [False, True], ids=["input_made_outside", "input_made_inside"])
def test_gradient_flow_and_grad_equals_inside_inference_mode(made_inside):
    layer = torch.nn.Linear(3, 2).double()
    x = randn(4, 3)
    with torch.inference_mode():
        if made_inside:
            x = torch.randn(4, 3, dtype=torch.float64)
        norms = gk.assert_gradient_flow(layer, x)
        assert set(norms) == {"weight", "bias"} and all(n > 0 for n in norms.values())
        xs = torch.randn(3, dtype=torch.float64, requires_grad=True) if made_inside else randn(3)
        gk.assert_grad_equals(torch.sin, (xs,), torch.cos(xs), grad_outputs=torch.ones(3, dtype=torch.float64))
        gk.assert_gradient_flow(lambda a: a.sin(), xs.requires_grad_(True) if not made_inside else xs)
        assert torch.is_inference_mode_enabled()
    assert layer.weight.grad is None


def test_check_gradients_under_no_grad_keeps_it_off():
    with torch.no_grad():
        report = gk.check_gradients(torch.sin, randn(3))
        assert not torch.is_grad_enabled()
    assert report.ok


# ------------------------------------------------------------------------------------------------
# non-finite grad_outputs: an argument error, not a claim about the function


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_grad_outputs_rejected_by_check_gradients(bad):
    v = torch.tensor([1.0, bad, 2.0], dtype=torch.float64)
    with pytest.raises(gk.InvalidArgument, match=r"^grad_outputs holds 1 non-finite value\(s\) of 3 \(first: grad_outputs\[1\]="):
        gk.check_gradients(torch.sin, randn(3), grad_outputs=v)
    with pytest.raises(gk.InvalidArgument, match=r"^grad_outputs\[1\] holds 1 non-finite"):
        gk.check_gradients(lambda x: (x.sin(), x.cos()), randn(3), grad_outputs=(torch.ones(3, dtype=torch.float64), v))


def test_nonfinite_grad_outputs_rejected_by_assert_grad_equals():
    x = randn(3)
    v = torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64)
    with pytest.raises(gk.InvalidArgument, match=r"^grad_outputs holds 1 non-finite"):
        gk.assert_grad_equals(torch.sin, (x,), torch.cos(x) * v, grad_outputs=v)
    with pytest.raises(gk.InvalidArgument, match=r"^grad_outputs\[0\] holds 3 non-finite"):
        gk.assert_grad_equals(torch.sin, (x,), torch.cos(x), grad_outputs=[torch.full((3,), float("inf"))])


# ------------------------------------------------------------------------------------------------
# threads: one global RNG per process, so checks run one at a time and the caller's state comes back


def _dropout_sin(x):  # draws from the global RNG, which the kit seeds before every call
    return torch.nn.functional.dropout(x, 0.5, training=True).sin()


def test_checks_in_four_threads_agree_and_leave_the_rng_alone():
    import threading

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    failures: list = []
    try:
        torch.manual_seed(123)
        before = torch.get_rng_state()

        def work(i):
            x = randn(40, seed=i)
            for seed in range(3):
                report = gk.check_gradients(_dropout_sin, x, seed=seed, forward_ad=False)
                if not report.ok:
                    failures.append((i, seed, str(report)[:300]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = torch.get_rng_state()
    finally:
        sys.setswitchinterval(switch)
    assert failures == []
    assert torch.equal(before, after)


# ------------------------------------------------------------------------------------------------
# fn an nn.Module (or a bound method of one): its buffers and parameters' .grad are kept


@pytest.mark.parametrize("as_method", [False, True], ids=["module", "bound_forward"])
def test_batchnorm_module_state_kept_by_check_gradients(as_method):
    bn = torch.nn.BatchNorm1d(3).double().train()
    with torch.no_grad():
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(2.0)
    bn.num_batches_tracked.fill_(7)
    bn.weight.grad = torch.full((3,), 5.0, dtype=torch.float64)
    grad_object = bn.weight.grad
    buffers = {name: b for name, b in bn.named_buffers()}
    report = gk.check_gradients(bn.forward if as_method else bn, randn(5, 3))
    assert report.ok, report
    assert torch.equal(bn.running_mean, torch.full((3,), 0.25, dtype=torch.float64))
    assert torch.equal(bn.running_var, torch.full((3,), 2.0, dtype=torch.float64))
    assert int(bn.num_batches_tracked) == 7
    assert all(b is buffers[name] for name, b in bn.named_buffers())
    assert bn.weight.grad is grad_object and torch.equal(grad_object, torch.full((3,), 5.0, dtype=torch.float64))
    assert bn.bias.grad is None and bn.training
