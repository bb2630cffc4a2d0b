"""Shapes and dtypes: bounds respected, broadcasting honest, bad arguments named up front."""

import pytest
import torch
from hypothesis import find, given, settings, strategies as st

from gradcheck_kit import strategies as gst
from gradcheck_kit.errors import InvalidArgument


def broadcast(*shapes):
    """Broadcast shapes in plain Python (torch.broadcast_shapes is slow on first call: deadlines)."""
    ndim = max(len(s) for s in shapes)
    result = []
    for i in range(-ndim, 0):
        sides = {s[i] for s in shapes if len(s) >= -i} - {1}
        assert len(sides) <= 1, f"{shapes} do not broadcast"
        result.append(sides.pop() if sides else 1)
    return tuple(result)


@settings(max_examples=40)
@given(gst.shapes())
def test_default_shapes_are_small(shape):
    assert isinstance(shape, tuple)
    assert 0 <= len(shape) <= 3
    assert all(1 <= side <= 5 for side in shape)


@settings(max_examples=40)
@given(st.data())
def test_shapes_respect_their_bounds(data):
    min_dims = data.draw(st.integers(0, 4))
    max_dims = data.draw(st.integers(min_dims, 5))
    min_side = data.draw(st.integers(1, 4))
    max_side = data.draw(st.integers(min_side, 6))
    shape = data.draw(gst.shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side))
    assert min_dims <= len(shape) <= max_dims
    assert all(min_side <= side <= max_side for side in shape)


def test_shapes_shrink_to_min_dims_and_min_side():
    # no example database: a saved example from an earlier run can leave the shrinker at another local minimum
    quiet = settings(database=None)
    assert find(gst.shapes(), lambda s: len(s) >= 2, settings=quiet) == (1, 1)
    # the smallest sum that satisfies the condition, in at most two dimensions ((4,) or a split like (1, 3))
    shrunk = find(gst.shapes(), lambda s: sum(s) >= 4, settings=quiet)
    assert sum(shrunk) == 4 and len(shrunk) <= 2, shrunk


@settings(max_examples=40)
@given(gst.broadcastable_shapes((2, 3)))
def test_broadcastable_shapes_broadcast(shape):
    assert len(shape) <= 3
    broadcast(shape, (2, 3))


@settings(max_examples=40)
@given(gst.mutually_broadcastable_shapes(3, base_shape=(4, 1)))
def test_mutually_broadcastable_shapes_give_the_result_shape(shapes):
    assert isinstance(shapes, gst.BroadcastableShapes)
    assert len(shapes.input_shapes) == 3
    assert tuple(broadcast(*shapes.input_shapes, (4, 1))) == shapes.result_shape
    assert all(len(s) <= 3 and all(1 <= side <= 5 for side in s) for s in shapes.input_shapes)


@settings(max_examples=40)
@given(gst.mutually_broadcastable_shapes(signature="(m,n),(n)->(m)", max_dims=1))
def test_mutually_broadcastable_shapes_with_a_signature(shapes):
    (a, v), out = shapes
    assert a[-1] == v[-1]
    assert out == broadcast(a[:-2], v[:-1]) + (a[-2],)
    assert len(a) <= 3 and len(v) <= 2


@settings(max_examples=40)
@given(gst.float_dtypes())
def test_float_dtypes(dtype):
    assert dtype in (torch.float64, torch.float32)


def test_float_dtypes_with_half_and_shrinking():
    seen = set()

    @settings(max_examples=100, database=None)
    @given(gst.float_dtypes(include_half=True))
    def collect(dtype):
        seen.add(dtype)

    collect()
    assert seen == {torch.float64, torch.float32, torch.float16, torch.bfloat16}
    assert find(gst.float_dtypes(include_half=True), lambda d: True) == torch.float64


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: gst.shapes(min_side=0), "min_side=0 must be >= 1"),
        (lambda: gst.shapes(min_dims=4), "min_dims=4 must be <= max_dims=3"),
        (lambda: gst.shapes(max_dims=-1), "max_dims=-1 must be >= 0"),
        (lambda: gst.shapes(max_dims=33), "max_dims=33 must be <= 32"),
        (lambda: gst.shapes(min_side=6), "min_side=6 must be <= max_side=5"),
        (lambda: gst.shapes(max_side=2.5), "max_side=2.5 must be an int"),
        (lambda: gst.broadcastable_shapes([2, "a"]), "shape=[2, 'a'] must be a tuple of ints >= 0"),
        (
            lambda: gst.broadcastable_shapes((7,), min_dims=1, min_side=8, max_side=9),
            "Given shape=(7,), there are no broadcast-compatible shapes that satisfy: min_dims=1 and min_side=8",
        ),
        (lambda: gst.mutually_broadcastable_shapes(), "pass exactly one of num_shapes=None and signature=None"),
        (lambda: gst.mutually_broadcastable_shapes(0), "num_shapes=0 must be >= 1"),
        (
            lambda: gst.mutually_broadcastable_shapes(signature="(m,n)"),
            "signature='(m,n)': '(m,n)' is not a valid gufunc signature",
        ),
        (lambda: gst.float_dtypes(include_half=1), "include_half=1 must be a bool"),
    ],
)
def test_bad_arguments_raise_invalid_argument_naming_them(make, message):
    with pytest.raises(InvalidArgument) as info:
        make()
    assert str(info.value) == message
