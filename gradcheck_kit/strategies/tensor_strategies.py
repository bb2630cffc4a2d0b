"""Strategies of leaf tensors for gradient checks, one at a time or several related ones.

Everything is built on ``hypothesis.extra.numpy`` and ``@st.composite``, so counterexamples shrink
the way Hypothesis users expect: shapes to few dimensions and small sides, values to ``0``, ``1`` and
small integers, layouts to contiguous. How one tensor is drawn: :mod:`gradcheck_kit.strategies.tensor_spec`.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.arguments import check_dims_and_sides, check_int, check_shape
from gradcheck_kit.strategies.dtypes import check_dtype
from gradcheck_kit.strategies.shape_strategies import mutually_broadcastable_shapes, shapes
from gradcheck_kit.strategies.tensor_spec import TensorSpec, per_input_specs

__all__ = ["broadcastable_tensors", "tensor_inputs", "tensors"]


@st.composite
def tensor_from_spec(draw, shape, spec: TensorSpec) -> torch.Tensor:
    """A tensor drawn by ``spec``; ``shape`` is a tuple, or a strategy of tuples drawn first."""
    if not isinstance(shape, tuple):
        shape = check_shape("shape (drawn)", draw(shape))
    return spec.draw(draw, shape)


@st.composite
def tensor_tuple_from_specs(draw, shape_strategy, specs: list[TensorSpec], shared_dtype) -> tuple[torch.Tensor, ...]:
    """One tensor per spec, in the input shapes drawn from ``shape_strategy`` (a strategy of
    ``BroadcastableShapes``); a ``shared_dtype`` strategy is drawn once for all of them."""
    input_shapes = draw(shape_strategy).input_shapes
    dtype = None
    if shared_dtype is not None:
        dtype = draw(shared_dtype)
        check_dtype("dtype (drawn)", dtype)
    return tuple(spec.draw(draw, shape, dtype) for spec, shape in zip(specs, input_shapes))


def tensors(
    *,
    shape=None,
    dtype=torch.float64,
    min_value: float | None = None,
    max_value: float | None = None,
    elements: st.SearchStrategy | None = None,
    requires_grad: bool = True,
    layout: str = "any",
    device="cpu",
    unique: bool = False,
    min_gap: float | None = None,
    gap_dim: int | None = -1,
    allow_nan: bool = False,
    allow_infinity: bool = False,
) -> st.SearchStrategy:
    """Leaf tensors for gradient checks, shrinking to few dimensions, small sides and simple values.

    * ``shape``: a tuple, or a strategy of tuples (default ``shapes()``).
    * ``dtype``: a floating or complex torch dtype, or a strategy of them (e.g. ``float_dtypes()``,
      ``complex_dtypes()``). For complex dtypes ``min_value`` / ``max_value`` bound the modulus
      ``|z|`` (default at most 100): the real and imaginary parts are drawn like real values (0, ±1,
      ±tiny, ±0 often) and a point outside the bounds is moved radially onto them.
    * Values are finite and lie in [``min_value``, ``max_value``]; a bound left ``None`` is
      ``-100`` / ``100`` (or 200 beyond the other bound when that one lies outside them), so that
      finite differences stay meaningful. Pass ``-math.inf`` / ``math.inf`` for the whole finite
      range of the dtype. 0, +-1, +-``finfo.tiny`` and the bounds are drawn often, and so are
      repeated values (ties).
    * ``elements``: a strategy of floats to use instead (values rounded to ``dtype``; they must be
      finite); not combined with the bounds.
    * ``requires_grad=True`` gives a leaf that requires grad, with the drawn layout.
    * ``layout="any"`` draws contiguous tensors, contiguous views at a storage offset, and (half of
      the time) non-contiguous strided views of a larger buffer: dimensions permuted (transposed),
      stepped slices, leading offsets. ``"contiguous"`` forces a fresh contiguous tensor;
      ``"noncontiguous"`` forces a strided view, with ``is_contiguous()`` False whenever the tensor
      has two or more elements (torch counts a one-element tensor as contiguous: it is then a view at
      a storage offset). Shrinking goes towards contiguous, and within strided views towards a
      stepped slice of the last dimension. Buffer elements outside the view are NaN.
    * ``device``: where the tensor lives.
    * ``allow_nan=True`` / ``allow_infinity=True``: some elements (for complex dtypes, either part) are
      NaN / ±inf, for functions that must handle them.
    * ``unique=True``: no two elements are equal (ties are drawn often otherwise). Values that would
      repeat move to the next values of the dtype, so near-ties (equal up to rounding) remain possible.
    * ``min_gap=g``: any two elements of one slice along ``gap_dim`` (default the last dimension;
      ``None``: the whole tensor) differ by at least ``g``, so one-sided slopes of sort-like functions
      stay apart. Values are drawn as usual, then a cluster is spread: its first element (in sorted
      order) stays and the others move up by ``g`` steps (down where ``max_value`` leaves no room). Both
      rules are a fixed function of the drawn values, so shrinking works as usual: a shrunk
      counterexample has values 0, g, 2g, ... where the draw shrank to equal values.
      ``InvalidArgument`` when the bounds leave no room (``(side - 1)·g > max_value − min_value``).

    >>> gst.tensors(shape=(3, 4), min_value=-5, max_value=5, layout="noncontiguous")
    >>> gst.tensors(shape=(8, 64), unique=True)        # no ties
    >>> gst.tensors(shape=(2, 5), min_gap=1e-2)         # each row's values at least 0.01 apart
    """
    if shape is None:
        shape = shapes()
    elif not isinstance(shape, st.SearchStrategy):
        shape = check_shape("shape", shape)
    spec = TensorSpec(
        dtype=dtype,
        min_value=min_value,
        max_value=max_value,
        elements=elements,
        requires_grad=requires_grad,
        layout=layout,
        device=device,
        unique=unique,
        min_gap=min_gap,
        gap_dim=gap_dim,
        allow_nan=allow_nan,
        allow_infinity=allow_infinity,
    )
    return tensor_from_spec(shape, spec)


def broadcastable_tensors(
    num_tensors: int,
    *,
    base_shape: tuple[int, ...] = (),
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 5,
    **tensor_keywords: Any,
) -> st.SearchStrategy:
    """Tuples of ``num_tensors`` tensors whose shapes broadcast together (and with ``base_shape``).

    Shapes come from ``mutually_broadcastable_shapes(num_tensors, ...)`` with the same ``base_shape``,
    ``min_dims``, ``max_dims``, ``min_side`` and ``max_side``. ``tensor_keywords`` are those of
    :func:`tensors` (``dtype``, ``min_value``, ``max_value``, ``elements``, ``requires_grad``,
    ``layout``, ``device``): a value applies to every tensor, a list gives one value per tensor. A
    dtype strategy (not in a list) is drawn once and shared by all the tensors.

    >>> gst.broadcastable_tensors(2, max_value=[None, -1.0])   # (x, y) with x + y valid, y <= -1
    """
    check_int("num_tensors", num_tensors, 1)
    shapes_strategy = mutually_broadcastable_shapes(
        num_tensors, base_shape=base_shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )
    specs, shared_dtype = per_input_specs(num_tensors, tensor_keywords)
    return tensor_tuple_from_specs(shapes_strategy, specs, shared_dtype)


def tensor_inputs(
    signature: str,
    *,
    min_dims: int = 0,
    max_dims: int = 0,
    min_side: int = 1,
    max_side: int = 5,
    **tensor_keywords: Any,
) -> st.SearchStrategy:
    """Tuples of tensors whose shapes share named dimensions, written as a signature.

    ``"(m,n),(n)"`` draws a matrix and a vector of matching size; ``"(m,n),(n,p)"`` two matrices
    that multiply; ``"(3),(3)"`` fixes a size; ``"(m?,n),(n,p?)"`` may drop the optional dimensions
    (as ``matmul`` accepts). The generalised-ufunc syntax of
    ``hypothesis.extra.numpy.mutually_broadcastable_shapes(signature=...)`` is used; an output part
    (``"->(m)"``) may be given and is ignored. Named sizes lie in ``min_side`` .. ``max_side``.
    ``min_dims`` / ``max_dims`` (default 0) add that many broadcast batch dimensions in front.
    ``tensor_keywords`` as for :func:`broadcastable_tensors` (one value, or a list with one per
    input; a dtype strategy is drawn once and shared).

    >>> gst.tensor_inputs("(m,n),(n)", requires_grad=[True, False])   # (A, v) for A @ v
    """
    if not isinstance(signature, str):
        raise InvalidArgument(f"signature={signature!r} must be a string such as '(m,n),(n)'")
    compact = signature.replace(" ", "")
    full = compact if "->" in compact else compact + "->()"
    check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    try:
        shapes_strategy = mutually_broadcastable_shapes(
            signature=full, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        )
    except InvalidArgument:
        raise InvalidArgument(
            f"signature={signature!r} is not a valid signature: write one parenthesised shape per input, "
            "with named or numeric sizes, e.g. '(m,n),(n)' or '(3),(3)'"
        ) from None
    count = compact.split("->")[0].count("(")
    specs, shared_dtype = per_input_specs(count, tensor_keywords)
    return tensor_tuple_from_specs(shapes_strategy, specs, shared_dtype)
