"""No side effects on the caller, and autograd run on the inputs' own layout."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import DoubleSignFlipped, SquareRight, notes_with, randn


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else bytes(t.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("fn", [torch.tanh, DoubleSignFlipped.apply], ids=["right", "wrong"])
def test_inputs_bitwise_unchanged_and_grad_untouched(fn, dtype):
    x = randn(3, 4, dtype=dtype).requires_grad_(True)
    y = randn(3, 4, dtype=dtype, seed=1).requires_grad_(True)
    y.grad = torch.full_like(y, 7.0)
    z = randn(4, dtype=dtype, seed=2)
    snapshot = [_bits(t) for t in (x, y, z)]
    strides = [(t.stride(), t.storage_offset()) for t in (x, y, z)]
    gk.check_gradients(lambda x, y, z: fn(x) * y + z, x, y, z)
    gk.check_gradients(lambda x, y, z: fn(x) * y + z, x, y, z, mode="directional")
    assert [_bits(t) for t in (x, y, z)] == snapshot
    assert [(t.stride(), t.storage_offset()) for t in (x, y, z)] == strides
    assert x.grad is None
    assert torch.equal(y.grad, torch.full_like(y, 7.0))
    assert z.grad is None and not z.requires_grad
    assert x.requires_grad and y.requires_grad and x.is_leaf


def test_in_place_mutating_fn_leaves_caller_input_unchanged():
    x = randn(5)
    before = _bits(x)

    def mutating(x):
        x.mul_(2)  # in place on the kit's own copy
        return x.sin()

    report = gk.check_gradients(mutating, x, wrt=[0], forward_ad=False)
    assert _bits(x) == before
    # torch forbids in-place ops on a leaf that requires grad: reported, not raised
    assert not report.ok
    assert len(report.errors) == 1
    assert report.function_failed and isinstance(report.function_error, RuntimeError), report.errors


def test_in_place_on_non_differentiated_input_leaves_caller_input_unchanged():
    x, buf = randn(5), randn(5, seed=1)
    before = _bits(buf)

    def fn(x, buf):
        buf.add_(1.0)
        return x * 3

    report = gk.check_gradients(fn, x, buf, wrt=[0], forward_ad=False)
    assert _bits(buf) == before
    assert report.ok, str(report)
    assert [n.fields for n in notes_with(report, "input_modified")] == [(1,)], report.notes


def test_in_place_buffer_update_gives_consistent_checks():
    def fn(x, buf):
        buf.add_(1.0)
        return x * buf

    report = gk.check_gradients(fn, randn(5), torch.ones(5, dtype=torch.float64), wrt=[0])
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status != "failed", str(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_in_place_buffer_update_is_no_false_alarm_in_either_dtype(dtype, mode):
    """float32 inputs also run fn on float64 copies (the numerics' base point): that run must not see
    the buffer its own call modified."""

    def fn(x, buf):
        buf.add_(1.0)
        return x * buf

    x, buf = randn(5).to(dtype), torch.ones(5, dtype=dtype)
    report = gk.check_gradients(fn, x, buf, wrt=[0], mode=mode, forward_ad=False)
    assert report.ok, str(report)


def test_assert_gradients_close_leaves_grad_untouched():
    x = randn(4).requires_grad_(True)
    x.grad = torch.ones(4, dtype=torch.float64)
    gk.assert_gradients_close(torch.tanh, x)
    assert torch.equal(x.grad, torch.ones(4, dtype=torch.float64))


def test_global_rng_state_untouched():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    gk.check_gradients(torch.tanh, randn(6))
    gk.check_gradients(torch.tanh, randn(6), mode="directional")
    gk.check_gradients(lambda x: torch.nn.functional.dropout(x, 0.5, training=True), randn(6))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("enabled", [True, False])
def test_grad_mode_untouched(enabled):
    with torch.set_grad_enabled(enabled):
        report = gk.check_gradients(torch.tanh, randn(4))
        assert torch.is_grad_enabled() is enabled
    assert report.ok, str(report)


def test_works_inside_no_grad():
    with torch.no_grad():
        report = gk.check_gradients(torch.tanh, randn(4))
        assert not torch.is_grad_enabled()
        bad = gk.check_gradients(DoubleSignFlipped.apply, randn(4))
        assert not torch.is_grad_enabled()
        (g,) = gk.assert_grad_equals(lambda x: (x**2).sum(), randn(4), lambda x: 2 * x)
        assert not torch.is_grad_enabled()
    assert report.ok, str(report)
    assert not bad.ok


def test_grad_mode_restored_when_fn_changes_it():
    def rude(x):
        torch.set_grad_enabled(False)
        return x * 2

    with torch.enable_grad():
        gk.check_gradients(rude, randn(3))
        assert torch.is_grad_enabled()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_random_inside_fn_is_checked_consistently(dtype):
    def dropout_like(x):
        mask = (torch.rand(x.shape, dtype=torch.float64) > 0.5).to(x.dtype)
        return x * mask * 2 + 0.1 * torch.randn(x.shape, dtype=x.dtype)

    state = torch.get_rng_state()
    report = gk.check_gradients(dropout_like, randn(20, dtype=dtype))
    assert report.ok, str(report)
    assert torch.equal(torch.get_rng_state(), state)
    again = gk.check_gradients(torch.nn.functional.dropout, randn(20, dtype=dtype), 0.3, True)
    assert again.ok, str(again)


# ---- layout -----------------------------------------------------------------------------------


class _WrongWhenStrided(SquareRight):
    """x * x, right on contiguous inputs; on a non-contiguous one the backward reads memory order."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if x.is_contiguous():
            return 2 * x * grad
        # bug: flattens the underlying storage order, not the logical order
        flat = torch.as_strided(x, (x.numel(),), (1,)).reshape(x.shape)
        return 2 * flat * grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_layout_bug_caught_on_transposed_view_only(dtype):
    base = randn(3, 4, dtype=dtype)
    assert gk.check_gradients(_WrongWhenStrided.apply, base.contiguous()).ok
    view = base.t()
    assert not view.is_contiguous()
    report = gk.check_gradients(_WrongWhenStrided.apply, view)
    assert not report.ok, str(report)
    assert report.check("backward").status == "failed"
    assert "transposed" in str(report) or "non-contiguous" in str(report) or "stride" in str(report)
    # and in directional mode too
    assert not gk.check_gradients(_WrongWhenStrided.apply, view, mode="directional").ok


def test_layout_bug_caught_on_sliced_view():
    base = randn(4, 6)
    view = base[:, ::2]
    assert not view.is_contiguous()
    assert not gk.check_gradients(_WrongWhenStrided.apply, view).ok


def test_directional_check_never_hands_fn_the_callers_tensors():
    # A directional check reads the caller's differentiated tensors in place of copies; fn must still only
    # ever get copies, here where the narrowing of a failure evaluates f input by input (the other inputs
    # at x). This fn writes into its inputs whenever it runs outside autograd's forward.
    x = randn(70_000)  # mode="auto": a directional check, then narrows down y (x is too large for that)
    y = randn(3, seed=1)
    x0, y0 = x.clone(), y.clone()

    def sneaky(x, y):
        if not torch.is_grad_enabled():
            x.add_(1.0)
            y.add_(1.0)
        return (x.sin().sum() * DoubleSignFlipped.apply(y)).sum().reshape(1)

    report = gk.check_gradients(sneaky, x, y, wrt=[0, 1], forward_ad=False)
    assert report.mode == "directional"
    assert not report.ok
    assert torch.equal(x, x0) and torch.equal(y, y0)
