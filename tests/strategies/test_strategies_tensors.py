"""gst.tensors and the multi-input strategies: values, layouts, leaves, shrinking, validation."""

import math

import pytest
import torch
from hypothesis import Phase, find, given, settings, strategies as st

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

#: searches whose shrunk result is asserted: derandomized, so the result does not depend on the run
SEARCH = settings(max_examples=2000, database=None, derandomize=True)
#: simple invariants: fewer examples keep the folder fast
QUICK = settings(max_examples=40)


def _collect(strategy, n=200):
    seen = []

    @settings(max_examples=n, database=None)
    @given(strategy)
    def collect(value):
        seen.append(value)

    collect()
    return seen


@QUICK
@given(gst.tensors())
def test_default_tensors_are_finite_bounded_float64_leaves(x):
    assert isinstance(x, torch.Tensor)
    assert x.dtype == torch.float64
    assert x.is_leaf and x.requires_grad and x.grad_fn is None
    assert x.dim() <= 3 and all(1 <= side <= 5 for side in x.shape)
    assert torch.isfinite(x).all()
    assert (x.abs() <= 100).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_values_are_finite_and_within_unrepresentable_bounds(dtype):
    @settings(max_examples=60, database=None)
    @given(gst.tensors(dtype=dtype, min_value=-0.1, max_value=0.3))
    def check(x):
        assert x.dtype == dtype
        assert torch.isfinite(x).all()
        assert (x >= -0.1).all() and (x <= 0.3).all()

    check()


@QUICK
@given(gst.tensors(dtype=torch.float16, min_value=-math.inf, max_value=math.inf, shape=(4,)))
def test_infinite_bounds_mean_the_whole_finite_range(x):
    assert torch.isfinite(x).all()


@QUICK
@given(gst.tensors(min_value=1000.0))
def test_a_single_bound_moves_the_default_other_bound(x):
    assert (x >= 1000).all() and (x <= 1200).all()


@QUICK
@given(gst.tensors(shape=(2, 3), dtype=gst.float_dtypes(), requires_grad=False))
def test_fixed_shape_dtype_strategy_and_no_grad(x):
    assert x.shape == (2, 3)
    assert x.dtype in (torch.float64, torch.float32)
    assert not x.requires_grad


@QUICK
@given(gst.tensors(shape=st.just((3, 2)), elements=st.sampled_from([1.5, -2.0])))
def test_elements_strategy(x):
    assert x.shape == (3, 2)
    assert set(x.detach().flatten().tolist()) <= {1.5, -2.0}


def test_non_finite_elements_are_refused():
    @settings(max_examples=5, database=None, phases=[Phase.generate])
    @given(gst.tensors(shape=(2,), elements=st.just(math.inf)))
    def draw(x):
        pass

    with pytest.raises(InvalidArgument, match=r"^elements=just\(inf\) drew inf; values must be finite"):
        draw()


@QUICK
@given(gst.tensors(layout="contiguous"))
def test_contiguous_layout(x):
    assert x.is_contiguous() and x.storage_offset() == 0


@QUICK
@given(gst.tensors(layout="noncontiguous"))
def test_noncontiguous_layout_is_a_real_strided_view_leaf(x):
    assert x.is_leaf and x.requires_grad
    if x.numel() >= 2:
        assert not x.is_contiguous()
    else:
        assert x.storage_offset() > 0
    # a view of a buffer at least as big (a pure transpose needs no more room)
    assert x.untyped_storage().nbytes() >= x.numel() * x.element_size()
    assert torch.isfinite(x).all()
    # gradients reach the leaf with its shape
    (x * 2).sum().backward()
    assert x.grad.shape == x.shape and (x.grad == 2).all()


@QUICK
@given(gst.tensors(shape=(3, 4), layout="noncontiguous", requires_grad=False))
def test_noncontiguous_buffer_outside_the_view_is_nan(x):
    storage = torch.empty(0, dtype=x.dtype).set_(x.untyped_storage())
    inside = torch.zeros(storage.numel(), dtype=torch.bool)
    inside[torch.arange(x.numel()).reshape(x.shape).flatten()] = False
    flat_positions = torch.as_strided(
        torch.arange(storage.numel()), x.shape, x.stride(), x.storage_offset()
    ).flatten()
    inside[flat_positions] = True
    assert torch.isnan(storage[~inside]).all()
    assert torch.equal(storage[flat_positions], x.flatten())


def test_any_layout_draws_every_kind_of_view_often():
    xs = _collect(gst.tensors(shape=gst.shapes(min_dims=2, min_side=2)), n=200)
    contiguous = sum(x.is_contiguous() and x.storage_offset() == 0 for x in xs)
    offset_only = sum(x.is_contiguous() and x.storage_offset() > 0 for x in xs)
    strided = sum(not x.is_contiguous() for x in xs)
    transposed = sum(x.stride()[-1] != min(x.stride()) or x.stride()[-2] == 1 for x in xs)
    counts = (contiguous, offset_only, strided, transposed)
    assert contiguous > 25 and offset_only > 8 and strided > 45 and transposed > 15, counts


def test_special_values_and_ties_come_up_often():
    xs = _collect(gst.tensors(shape=gst.shapes(min_dims=1, min_side=2), min_value=-10, max_value=10), n=200)
    values = [set(x.detach().flatten().tolist()) for x in xs]
    tiny = torch.finfo(torch.float64).tiny
    counts = (
        sum(0.0 in v for v in values),
        sum(tiny in v or -tiny in v for v in values),
        sum(10.0 in v or -10.0 in v for v in values),
        sum(len(v) < x.numel() for v, x in zip(values, xs)),  # ties
        sum(len(v) == x.numel() for v, x in zip(values, xs)),  # all distinct, too
    )
    assert counts[0] > 40 and counts[1] > 10 and counts[2] > 20 and counts[3] > 40 and counts[4] > 5, counts


def test_values_shrink_to_small_integers():
    big = find(gst.tensors(min_value=-10, max_value=10), lambda x: bool((x > 2.5).any()), settings=SEARCH)
    assert big.shape == () and big.item() == 3.0


def test_shapes_shrink_to_few_small_dimensions_and_values_to_zero():
    row = find(gst.tensors(), lambda x: x.dim() == 2 and x.shape[0] == 1, settings=SEARCH)
    assert row.shape == (1, 1) and row.item() == 0.0


def test_layouts_shrink_to_a_stepped_slice_of_two_elements():
    strided = find(gst.tensors(), lambda x: not x.is_contiguous(), settings=SEARCH)
    assert strided.shape == (2,) and strided.stride() == (2,) and strided.storage_offset() == 0
    assert strided.tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_transposed_layouts_shrink_to_a_two_by_two_transpose():
    transposed = find(
        gst.tensors(), lambda x: x.dim() == 2 and min(x.shape) >= 2 and x.mT.is_contiguous(), settings=SEARCH
    )
    assert transposed.shape == (2, 2) and transposed.stride() == (1, 2) and transposed.storage_offset() == 0


def test_broadcastable_tensors_broadcast_and_share_a_drawn_dtype():
    for xs in _collect(gst.broadcastable_tensors(3, dtype=gst.float_dtypes(include_half=True)), n=100):
        assert len(xs) == 3
        broadcast(*(x.shape for x in xs))
        assert len({x.dtype for x in xs}) == 1


@QUICK
@given(gst.broadcastable_tensors(2, base_shape=(3,), max_value=[None, -1.0], requires_grad=[True, False]))
def test_broadcastable_tensors_per_input_keywords(xs):
    x, y = xs
    assert broadcast(x.shape, y.shape, (3,))[-1] == 3
    assert (y <= -1).all() and (x >= -100).all()
    assert x.requires_grad and not y.requires_grad


@QUICK
@given(gst.tensor_inputs("(m,n),(n)"))
def test_tensor_inputs_share_named_sizes(xs):
    a, v = xs
    assert a.dim() == 2 and v.dim() == 1 and a.shape[1] == v.shape[0]
    assert (a @ v).shape == (a.shape[0],)


@QUICK
@given(gst.tensor_inputs("(m,n),(n,p)->(m,p)", max_dims=1, layout="contiguous", dtype=torch.float32))
def test_tensor_inputs_with_batch_dims_and_an_output_part(xs):
    a, b = xs
    assert a.dim() in (2, 3) and b.dim() in (2, 3)
    assert a.shape[-1] == b.shape[-2]
    assert a.dtype == b.dtype == torch.float32
    torch.matmul(a, b)


@QUICK
@given(gst.tensor_inputs("(3),(3)"))
def test_tensor_inputs_frozen_sizes(xs):
    assert [tuple(x.shape) for x in xs] == [(3,), (3,)]
    torch.linalg.cross(*xs)


def test_tensor_inputs_shrink_to_the_smallest_matching_sizes():
    a, v = find(gst.tensor_inputs("(m,n),(n)"), lambda xs: xs[0].shape[1] >= 2, settings=SEARCH)
    assert a.shape == (1, 2) and v.shape == (2,)
    assert a.tolist() == [[0.0, 0.0]] and v.tolist() == [0.0, 0.0]


def test_torch_randn_inside_given_is_reproducible():
    seen = []

    @settings(max_examples=10, database=None)
    @given(st.integers())
    def draw(_):
        seen.append(torch.randn(3))

    before = torch.random.get_rng_state()
    draw()
    draw()
    expected = torch.randn(3, generator=torch.Generator().manual_seed(0))
    assert len(seen) >= 20 and all(torch.equal(x, expected) for x in seen)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: gst.tensors(layout="weird"), "layout='weird' is not one of 'any', 'contiguous', 'noncontiguous'"),
        (
            lambda: gst.tensors(dtype=torch.int64),
            "dtype=torch.int64 is not a floating or complex dtype; expected one of "
            "torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128, torch.complex64",
        ),
        (lambda: gst.tensors(min_value=3, max_value=1), "min_value=3.0 must be <= max_value=1.0"),
        (lambda: gst.tensors(min_value=math.nan), "min_value=nan must not be NaN"),
        (lambda: gst.tensors(max_value="1"), "max_value='1' must be a real number or None"),
        (lambda: gst.tensors(shape=(2, -1)), "shape=(2, -1) must be a tuple of ints >= 0"),
        (lambda: gst.tensors(elements=[1.0]), "elements=[1.0] must be a Hypothesis strategy of floats"),
        (
            lambda: gst.tensors(elements=st.floats(), min_value=0),
            "pass min_value=0 / max_value=None or elements=floats(), not both (bound the elements strategy itself)",
        ),
        (lambda: gst.tensors(requires_grad=1), "requires_grad=1 must be a bool"),
        (lambda: gst.tensors(device="blah"), "device='blah' is not a torch device"),
        (
            lambda: gst.broadcastable_tensors(2, foo=1),
            "unknown tensor keyword(s) foo=1; known: dtype, min_value, max_value, elements, requires_grad, "
            "layout, device, unique, min_gap, gap_dim, allow_nan, allow_infinity",
        ),
        (lambda: gst.broadcastable_tensors(0), "num_tensors=0 must be >= 1"),
        (
            lambda: gst.tensor_inputs("(m,n),(n)", dtype=[torch.float64]),
            "dtype=[torch.float64] has 1 entries, expected one per input (2)",
        ),
        (
            lambda: gst.tensor_inputs("(m,n),(n)", layout=["any", "bad"]),
            "layout[1]='bad' is not one of 'any', 'contiguous', 'noncontiguous'",
        ),
        (
            lambda: gst.tensor_inputs("(m,n"),
            "signature='(m,n' is not a valid signature: write one parenthesised shape per input, "
            "with named or numeric sizes, e.g. '(m,n),(n)' or '(3),(3)'",
        ),
        (lambda: gst.tensor_inputs(3), "signature=3 must be a string such as '(m,n),(n)'"),
    ],
)
def test_bad_arguments_raise_invalid_argument_naming_them(make, message):
    with pytest.raises(InvalidArgument) as info:
        make()
    assert str(info.value) == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_device_is_refused_up_front():
    with pytest.raises(InvalidArgument, match=r"device='cuda' is not available"):
        gst.tensors(device="cuda")
