"""gk.fuzz_gradients: a Hypothesis search without writing a test, returning a FuzzReport."""

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit import strategies as gst
from gradcheck_kit.errors import InvalidArgument


class SquareAbove(torch.autograd.Function):
    """x**2 whose backward is wrong where an element exceeds 2.5."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 2.5, 3 * x, 2 * x)


def wrong_matvec(a, v):
    """a @ v, with the gradient of v wrong by a factor 2 whenever a has at least two columns."""
    out = a @ v
    if a.shape[1] >= 2:
        out = out + (v - v.detach()).sum()
    return out


def test_finds_shrinks_and_reports_a_counterexample():
    result = gk.fuzz_gradients(SquareAbove.apply, [gst.tensors(min_value=-10, max_value=10)], seed=3)
    assert not result.ok and not bool(result)
    assert isinstance(result, gk.FuzzReport)
    (x,) = result.counterexample
    assert x.shape == () and x.item() == 3.0
    assert not result.report.ok and result.report.mismatches
    assert result.report.mismatches[0].analytic == pytest.approx(9.0)
    assert result.report.mismatches[0].numerical == pytest.approx(6.0)
    assert 1 <= result.examples <= 100 + 500
    assert result.seed == 3
    text = str(result)
    lines = text.splitlines()
    assert lines[0].startswith(
        f"fuzz_gradients(SquareAbove.apply): gradients are wrong; counterexample found at example {result.examples} "
        "of up to 100, shrunk in "
    )
    assert result.examples <= 100 and lines[0].endswith(f" {result.shrink_checks} more checks to:")
    assert lines[1] == "  input 0: shape (), float64, contiguous, requires_grad"
    assert lines[2] == "    values: torch.tensor(3.0, dtype=torch.float64)"
    assert str(result.report) in text
    assert lines[-1] == "Reproduce the search: gk.fuzz_gradients(SquareAbove.apply, ..., seed=3)"


def test_the_same_seed_gives_the_same_search():
    first = gk.fuzz_gradients(SquareAbove.apply, [gst.tensors(min_value=-10, max_value=10)], seed=7)
    second = gk.fuzz_gradients(SquareAbove.apply, [gst.tensors(min_value=-10, max_value=10)], seed=7)
    assert first.examples == second.examples
    assert torch.equal(first.counterexample[0], second.counterexample[0])


def test_a_tuple_strategy_of_related_inputs():
    result = gk.fuzz_gradients(wrong_matvec, gst.tensor_inputs("(m,n),(n)"), max_examples=50, seed=0)
    assert not result.ok
    a, v = result.counterexample
    assert a.shape == (1, 2) and v.shape == (2,)
    lines = str(result).splitlines()
    assert lines[1].startswith("  input 0: shape (1, 2), float64, ")
    assert lines[3].startswith("  input 1: shape (2,), float64, ")


def row_sums(x, dim):
    return x.sum(dim)


def test_a_correct_function_passes_and_plain_values_are_passed_through():
    result = gk.fuzz_gradients(row_sums, [gst.tensors(shape=gst.shapes(min_dims=1)), -1], max_examples=20, seed=0)
    assert result.ok and bool(result)
    assert result.examples == 20
    assert result.counterexample is None and result.report is None
    assert str(result) == "fuzz_gradients(row_sums): no counterexample in 20 examples (max_examples=20, seed=0)"


def test_check_keywords_reach_the_checker():
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return x * 2

    result = gk.fuzz_gradients(fn, [gst.tensors(shape=(2,), layout="contiguous")], max_examples=3, mode="full", seed=1)
    assert result.ok and seen


def test_a_failing_function_is_a_counterexample_not_an_error():
    def vectors_only(x):
        if x.dim() >= 2:
            raise ValueError("matrices are not supported")
        return x.sin()

    result = gk.fuzz_gradients(vectors_only, gst.tensors(), seed=0)
    assert not result.ok
    assert result.counterexample[0].shape == (1, 1)
    assert any("ValueError: matrices are not supported" in error for error in result.report.errors)


def test_to_dict():
    result = gk.fuzz_gradients(SquareAbove.apply, [gst.tensors(min_value=-10, max_value=10)], seed=3)
    data = result.to_dict()
    assert data["ok"] is False and data["seed"] == 3 and data["examples"] == result.examples
    assert data["counterexample"] == [
        {"shape": [], "dtype": "float64", "stride": [], "storage_offset": 0, "values": 3.0}
    ]
    assert data["report"] == result.report.to_dict()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gk.fuzz_gradients(3, [gst.tensors()]), "fn=3 is not callable"),
        (
            lambda: gk.fuzz_gradients(torch.sin, [gst.tensors()], max_examples=0),
            "max_examples=0 must be an int >= 1",
        ),
        (
            lambda: gk.fuzz_gradients(torch.sin, [gst.tensors()], seed=-1),
            "seed=-1 must be None or an int in [0, 2**64)",
        ),
        (
            lambda: gk.fuzz_gradients(torch.sin, "x"),
            "strategy_or_strategies='x' must be a Hypothesis strategy of input tuples "
            "or a list of per-input strategies",
        ),
        (
            lambda: gk.fuzz_gradients(torch.sin, [1.0]),
            "strategy_or_strategies=[1.0] holds no Hypothesis strategy",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(InvalidArgument) as info:
        call()
    assert str(info.value) == message


def test_unknown_check_keyword_is_refused_up_front():
    with pytest.raises(InvalidArgument, match=r"^unknown check keyword\(s\) tolerance=1; known: .*\batol\b"):
        gk.fuzz_gradients(torch.sin, [gst.tensors()], tolerance=1)


def test_a_bad_check_option_is_refused_before_the_search():
    calls = []

    def fn(x):
        calls.append(x)
        return x.sin()

    with pytest.raises(InvalidArgument, match=r"^mode='sideways' is invalid: must be one of 'auto'"):
        gk.fuzz_gradients(fn, [gst.tensors()], mode="sideways")
    assert not calls
