"""Property tests written the way users write them find wrong gradients, and shrink them to minimal
examples, within Hypothesis's default 100 examples; correct functions with kinks raise no alarm."""

import pytest
import torch
from hypothesis import given, settings

import gradcheck_kit as gk
from gradcheck_kit import strategies as gst

#: each search within Hypothesis's default number of examples; no deadline (a failing check narrows
#: its failure down to the wrong entries, which can take longer than 200 ms)
DEFAULT = settings(max_examples=100, database=None, deadline=None, report_multiple_bugs=False)


def falsify(fn, strategy):
    """Run a user-style property test of ``fn``; assert that it fails and return the shrunk inputs."""
    tried = []

    @DEFAULT
    @given(strategy)
    def test_gradients(inputs):
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        tried.append(inputs)
        report = gk.check_gradients(fn, *inputs)
        assert report.ok, str(report)

    with pytest.raises(AssertionError, match="Gradients are not close"):
        test_gradients()
    # Hypothesis replays the shrunk counterexample last
    return tried[-1]


class SquareStridedPath(torch.autograd.Function):
    """x**2 whose backward, like many kernels, has a vectorised path for contiguous inputs and a
    generic strided one; the strided path forgets the factor 2: wrong only on non-contiguous inputs."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if x.is_contiguous():
            return 2 * x * grad
        return x * grad  # the bug


class SquareAbove(torch.autograd.Function):
    """x**2 whose backward is wrong only where an element exceeds 2.5."""

    generate_vmap_rule = True  # lets the checker batch its evaluations

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


class CumsumRows(torch.autograd.Function):
    """x.cumsum(0) for a matrix, whose backward has a wrong "fast path" for a single row."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.cumsum(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.rows = inputs[0].shape[0]

    @staticmethod
    def backward(ctx, grad):
        if ctx.rows == 1:
            return grad.cumsum(1)  # the bug: sums along the columns
        return grad.flip(0).cumsum(0).flip(0)


class XAbsX(torch.autograd.Function):
    """x * |x|, whose backward computes 2|x| as 2 x**2 / |x|: NaN at exactly 0, where it is 0."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x.abs()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x * x / x.abs()


def test_finds_a_function_wrong_only_on_noncontiguous_inputs():
    # sides up to 3: a Function without setup_context is evaluated one element at a time
    (x,) = falsify(SquareStridedPath.apply, gst.tensors(shape=gst.shapes(max_side=3)))
    assert x.shape == (2,) and x.stride() == (2,) and x.storage_offset() == 0
    assert x.tolist() == [1.0, 1.0]
    # the same function is right on contiguous inputs
    assert gk.fuzz_gradients(SquareStridedPath.apply, [gst.tensors(layout="contiguous")], max_examples=30, seed=0).ok


def test_finds_a_function_wrong_only_above_2_5():
    (x,) = falsify(SquareAbove.apply, gst.tensors(min_value=-10, max_value=10))
    assert x.shape == () and x.item() == 3.0


def test_finds_a_function_wrong_only_for_a_single_row():
    (x,) = falsify(CumsumRows.apply, gst.tensors(shape=gst.shapes(min_dims=2, max_dims=2)))
    assert x.shape == (1, 2) and x.tolist() == [[0.0, 0.0]]


def test_finds_a_function_returning_nan_at_exactly_zero():
    (x,) = falsify(XAbsX.apply, gst.tensors())
    assert x.shape == () and x.item() == 0.0


@pytest.mark.parametrize(
    "fn, strategy",
    [
        (torch.relu, gst.tensors()),
        (torch.abs, gst.tensors()),
        (torch.amax, gst.tensors()),
        (lambda x: torch.amax(x, dim=-1), gst.tensors(shape=gst.shapes(min_dims=1))),
    ],
    ids=["relu", "abs", "amax", "amax_last_dim"],
)
def test_no_false_alarm_on_kinks_and_ties(fn, strategy):
    seen = {"zeros": 0, "tied_max": 0, "three_way_tie": 0}

    @DEFAULT
    @given(strategy)
    def test_gradients(x):
        values = x.detach()
        seen["zeros"] += bool((values == 0).any())
        if values.numel() > 1:
            ties = int((values == values.max()).sum())
            seen["tied_max"] += ties >= 2
            seen["three_way_tie"] += ties >= 3
        report = gk.check_gradients(fn, x)
        assert report.ok, str(report)

    test_gradients()
    # the search did visit the points where these functions have kinks
    assert seen["zeros"] >= 10 and seen["tied_max"] >= 10 and seen["three_way_tie"] >= 5, seen
