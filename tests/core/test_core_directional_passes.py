"""Directional mode's cheaper passes give the same verdicts and reports: the output finiteness check, the
reductions over outputs and gradients, the forward-AD pass and the random directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import NAN, SinOnePercentOff, randn, unary


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_outputs_are_counted_exactly(bad, dtype):
    x = randn(1000, dtype=dtype).requires_grad_()

    def fn(x):
        y = x * 2
        return torch.where(torch.arange(1000) % 250 == 3, torch.full_like(y, bad), y)

    report = gk.check_gradients(fn, x, mode="directional")
    assert report.errors == [
        "output 0 of fn has 4 non-finite value(s) (NaN or inf) at the given inputs; gradients cannot be checked there"
    ]


def test_opposite_infinities_are_counted_too():
    x = randn(10).requires_grad_()
    report = gk.check_gradients(lambda x: x * torch.tensor([float("inf"), -float("inf")] + [1.0] * 8), x)
    assert "output 0 of fn has 2 non-finite value(s)" in report.errors[0]


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_finite_outputs_whose_sum_overflows_are_not_called_non_finite(mode):
    x = torch.full((64,), 1.0, dtype=torch.float32).requires_grad_()
    report = gk.check_gradients(lambda x: x * 3e38, x, mode=mode)
    assert not report.errors, report.errors


class _MutatesGradOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, through_data=False):
        ctx.through_data = through_data
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        result = grad * 2
        # after use: the gradient itself is right; through .data the version counter does not move
        (grad.data if ctx.through_data else grad).mul_(3)
        return result, None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_directional_backward_that_mutates_grad_output_is_caught(dtype):
    x = randn(5000, dtype=dtype).requires_grad_()
    report = gk.check_gradients(_MutatesGradOutput.apply, x, mode="directional")
    check = report.check("reentrant")
    assert check.status == "failed"
    assert "modified grad_output in place" in check.detail
    assert report.check("backward").status == "passed"


@pytest.mark.parametrize("through_data", [False, True], ids=["in-place", "data"])
def test_large_grad_output_mutation_is_caught_without_a_copy(through_data):
    # above LARGE_GRAD_OUTPUT elements the re-entrancy pass watches grad_output (version counter, sum)
    x = randn(70_000).requires_grad_()
    report = gk.check_gradients(
        lambda x: _MutatesGradOutput.apply(x, through_data), x, mode="directional", forward_ad=False
    )
    check = report.check("reentrant")
    assert check.status == "failed"
    assert "modified grad_output in place" in check.detail


@pytest.mark.parametrize("directions", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_chunked_products_give_the_same_verdicts(dtype, directions):
    """Gradients and tangents kept in float32 (real or complex coordinates) and chunked float64 products:
    a smooth function passes every check, more directions included, and a 1% error fails."""
    x = randn(70_000, dtype=torch.float64, seed=3)
    if dtype == torch.complex64:
        x = torch.complex(x, randn(70_000, seed=4)).to(dtype)
    else:
        x = x.to(dtype)
    x.requires_grad_()
    report = gk.check_gradients(
        lambda x: torch.sin(x) * x, x, mode="directional", directions=directions, forward_ad=True
    )
    assert report.ok, str(report)
    assert report.check("forward_ad").status == "passed"
    if not dtype.is_complex:
        bad = gk.check_gradients(SinOnePercentOff.apply, x, mode="directional", directions=directions)
        assert bad.check("backward").status == "failed"


def test_a_gradient_with_a_nan_is_not_passed():
    x = randn(100_000).requires_grad_()

    NaNAt7 = unary(lambda x: x * 2, lambda x: 2, at=7, factor=NAN)

    report = gk.check_gradients(NaNAt7.apply, x, mode="directional", forward_ad=False)
    assert report.check("backward").status == "failed"


@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_float32_sizes_that_overflow_in_float32_are_summed_in_float64(scale):
    """The noise model's and the natural scale's sums (f·f, |f·v|, x·x) and the products u·g are formed
    in the output's and gradient's own dtype; where float32 overflows (|f| ~ 1e19 squares past 3e38) they
    are summed in float64 instead: a right function passes and a 1% error fails, not a crash or an inf."""
    x = randn(100_000, dtype=torch.float32, seed=5).requires_grad_()
    report = gk.check_gradients(lambda x: torch.sin(x) * scale, x, mode="directional")
    assert report.ok, str(report)
    assert 0 < report.resolution < 1e-3

    ScaledOff = unary(lambda x: torch.sin(x) * scale, lambda x: torch.cos(x) * scale, factor=1.01)

    bad = gk.check_gradients(ScaledOff.apply, x, mode="directional", forward_ad=False)
    assert bad.check("backward").status == "failed"


def test_a_gradient_whose_products_with_u_overflow_float32_is_still_checked():
    """Large inputs get large power-of-two direction scales: u·g overflows float32 where g is large too, and
    the projection falls back to float64 products (a right gradient passes)."""
    x = (randn(100_000, seed=6) * 1e4).to(torch.float32).requires_grad_()
    report = gk.check_gradients(lambda x: torch.sin(x) * 1e35, x, mode="directional")  # u·g up to ~1e39
    assert report.ok, str(report)


@pytest.mark.parametrize("n", [10, 1 << 15])  # below and above bitwise_equal's size
def test_in_place_changes_that_keep_equal_values_are_not_taken_for_none(n):
    """The copy fn ran on is compared with the caller's tensor bit for bit first, then by value: writing
    -0.0 over 0.0 (equal values, other bits) is not a modification the checker reports, writing a new
    value is."""
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)

    def negate_zeros(x):
        x.data.copy_(torch.where(x.data == 0, torch.full_like(x.data, -0.0), x.data))  # the same values
        return x * 2

    report = gk.check_gradients(negate_zeros, x)
    assert report.ok, str(report)
    assert "input_modified" not in report.note_codes

    def add_one(x):
        x.data.add_(1.0)
        return x * 2

    report = gk.check_gradients(add_one, x)
    assert any(n.code == "input_modified" and n.fields == (0,) for n in report.notes)


@pytest.mark.parametrize("n", [3_000, 200_000])  # torch's generator below _NUMPY_WORDS words, numpy's SFC64 above
def test_the_random_directions_follow_the_seed_alone(n):
    """v and u of a large check come from a numpy generator seeded from the check's own: the same seed gives
    the same values, another seed others, and neither torch's nor numpy's global RNG is drawn from."""
    x = randn(n, dtype=torch.float32, seed=9).requires_grad_()
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()

    def values(seed):
        report = gk.check_gradients(SinOnePercentOff.apply, x, mode="directional", seed=seed)
        found = [(m.analytic, m.numerical) for m in report.mismatches if m.check == "backward"]
        assert found, str(report)
        return found

    first, again, other = values(0), values(0), values(1)
    assert first == again
    assert all(a != b for a, b in zip(first[0], other[0]))
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def _tanh_chain(x):
    return torch.tanh(x * 1.5 + 0.3).sin() * x


def test_a_directional_check_of_torch_operations_batches_linearity_and_zero_grad_output():
    x = randn(40).requires_grad_()
    report = gk.check_gradients(_tanh_chain, x, mode="directional")
    assert report.ok
    assert {c.name: c.status for c in report.checks}["zero_grad_output"] == "passed"
    assert "one batched backward" in report.check("linearity").detail


def test_a_hook_in_the_backward_keeps_linearity_to_its_own_backwards():
    # Python code in the backward could crash a batched backward (graph): the passes stay one at a time
    def hooked(x):
        y = x * 1.5
        y.register_hook(lambda g: g * 1.0)
        return torch.tanh(y)

    report = gk.check_gradients(hooked, randn(40).requires_grad_(), mode="directional")
    assert report.ok
    assert "batched" not in report.check("linearity").detail


_AbsOfGradOutput = unary(torch.sin, torch.cos, on_grad=torch.abs, name="AbsOfGradOutput")


def test_a_backward_not_linear_in_grad_output_still_fails_linearity_in_directional_mode():
    report = gk.check_gradients(_AbsOfGradOutput.apply, randn(40).requires_grad_(), mode="directional")
    assert not report.ok
    assert report.check("linearity").status == "failed"
