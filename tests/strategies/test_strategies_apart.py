"""gst.tensors(unique=True) and min_gap=: no ties, values kept apart, efficient draws that shrink."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import gradcheck_kit as gk
from gradcheck_kit import strategies as gst

ALL_DTYPES = gst.float_dtypes(include_half=True)


@settings(max_examples=60, deadline=None)
@given(gst.tensors(shape=gst.shapes(min_dims=1, max_dims=2, max_side=64), dtype=ALL_DTYPES, unique=True))
def test_unique_draws_no_two_equal_elements(x):
    flat = x.detach().reshape(-1)
    assert flat.unique().numel() == flat.numel()


@settings(max_examples=40, deadline=None)
@given(gst.tensors(shape=(8, 64), dtype=ALL_DTYPES, min_gap=0.25, min_value=-50, max_value=50))
def test_min_gap_keeps_each_row_apart_within_the_bounds(x):
    values = x.detach().double()
    gaps = values.sort(dim=-1).values.diff(dim=-1)
    assert (gaps >= 0.25).all()
    assert values.min() >= -50 and values.max() <= 50


@settings(max_examples=40, deadline=None)
@given(gst.tensors(shape=(6, 3), min_gap=1e-3, gap_dim=0))
def test_min_gap_along_another_dimension(x):
    assert (x.detach().sort(dim=0).values.diff(dim=0) >= 1e-3).all()


@settings(max_examples=40, deadline=None)
@given(gst.tensors(shape=(4, 5), min_gap=0.5, gap_dim=None, max_value=20))
def test_min_gap_over_the_whole_tensor(x):
    assert (x.detach().reshape(-1).sort().values.diff() >= 0.5).all()


def test_values_already_apart_are_kept_and_a_cluster_spreads_from_its_first_element():
    # the simplest draw is all zeros: it shrinks to 0, g, 2g, ... in position order
    x = find(gst.tensors(shape=(5,), min_gap=0.5, layout="contiguous"), lambda t: True)
    assert x.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    y = find(gst.tensors(shape=(4,), unique=True, layout="contiguous"), lambda t: True)
    assert y[0] == 0 and y.unique().numel() == 4


def test_a_counterexample_still_shrinks_to_a_small_simple_one():
    x = find(
        gst.tensors(shape=gst.shapes(min_dims=1, max_dims=2), min_gap=0.1, layout="contiguous"),
        lambda t: bool((t > 3).any()),
        settings=settings(max_examples=500, database=None),
    )
    assert x.numel() == 1 and x.item() == pytest.approx(3.0, abs=1.0)


def test_ties_are_otherwise_common_and_unique_removes_them():
    def tie(t):
        rows = t.detach().sort(dim=-1).values
        return bool((rows.diff(dim=-1) == 0).any())

    find(gst.tensors(shape=(2, 5)), tie)  # drawn often without the option
    with pytest.raises(NoSuchExample):
        find(gst.tensors(shape=(2, 5), unique=True), tie, settings=settings(max_examples=200, database=None))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"unique": 1}, "unique=1"),
        ({"min_gap": 0}, "min_gap=0"),
        ({"min_gap": -1.0}, "min_gap=-1.0"),
        ({"min_gap": math.nan}, "min_gap=nan"),
        ({"min_gap": math.inf}, "min_gap=inf"),
        ({"min_gap": True}, "min_gap=True"),
        ({"min_gap": 1.0, "gap_dim": 1.5}, "gap_dim=1.5"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, arg):
    with pytest.raises(gk.InvalidArgument, match=arg.replace("(", r"\(")):
        gst.tensors(shape=(3,), **kwargs)


def test_no_room_for_the_gap_is_an_invalid_argument():
    with pytest.raises(gk.InvalidArgument, match=r"min_gap=1.0 leaves no room for 3 values"):
        find(gst.tensors(shape=(3,), min_gap=1.0, min_value=0, max_value=1), lambda t: True)
    with pytest.raises(gk.InvalidArgument, match=r"gap_dim=2 is not a dimension"):
        find(gst.tensors(shape=(3,), min_gap=0.1, gap_dim=2), lambda t: True)


def test_the_multi_input_strategies_take_the_options_per_input():
    x, y = find(gst.broadcastable_tensors(2, unique=[True, False], min_gap=[None, 0.5]), lambda xs: xs[0].numel() > 2)
    assert x.detach().reshape(-1).unique().numel() == x.numel()


@settings(max_examples=200, deadline=None)
@given(
    x=gst.tensors(shape=gst.shapes(min_dims=1, max_dims=2, max_side=16), unique=True, min_gap=1e-3, min_value=-10, max_value=10),
    k=st.integers(1, 4),
)
def test_sort_and_topk_pass_on_values_apart(x, k):
    # sort-like functions are differentiable wherever no two values tie
    k = min(k, x.shape[-1])
    gk.assert_gradients_close(lambda t: torch.sort(t, dim=-1).values, x, forward_ad=False)
    gk.assert_gradients_close(lambda t: torch.topk(t, k, dim=-1).values, x, forward_ad=False)
