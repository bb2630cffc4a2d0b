"""Strategies of shapes: single shapes, shapes that broadcast with a given one, and several shapes
that broadcast together (optionally with generalised-ufunc signatures). Built on
``hypothesis.extra.numpy``, so they shrink to few dimensions and small sides."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.arguments import check_dims_and_sides, check_int, check_shape, validated

__all__ = ["BroadcastableShapes", "broadcastable_shapes", "mutually_broadcastable_shapes", "shapes"]

BroadcastableShapes = hnp.BroadcastableShapes


def shapes(*, min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy:
    """Shapes (tuples of ints) with ``min_dims``..``max_dims`` dimensions of ``min_side``..``max_side``.

    Built on ``hypothesis.extra.numpy.array_shapes``; shrinks towards ``min_dims`` dimensions of
    ``min_side``. Sides start at 1: empty tensors have no gradient to check.

    >>> gst.shapes(max_dims=2, max_side=3)   # (), (3,), (2, 1), ...
    """
    check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    shape: tuple[int, ...], *, min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 5
) -> st.SearchStrategy:
    """Shapes that broadcast with ``shape``, as ``hypothesis.extra.numpy.broadcastable_shapes``.

    ``min_dims`` .. ``max_dims`` dimensions; sides not aligned with ``shape`` lie in
    ``min_side`` .. ``max_side``. Shrinks towards ``min_dims`` dimensions and sides of 1.

    >>> gst.broadcastable_shapes((2, 3))     # (), (3,), (1, 3), (4, 2, 1), ...
    """
    shape = check_shape("shape", shape)
    check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    return validated(
        hnp.broadcastable_shapes(shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)
    )


def mutually_broadcastable_shapes(
    num_shapes: int | None = None,
    *,
    signature: str | None = None,
    base_shape: tuple[int, ...] = (),
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 5,
) -> st.SearchStrategy:
    """``num_shapes`` shapes that broadcast together (and with ``base_shape``).

    Draws ``BroadcastableShapes(input_shapes, result_shape)``, as
    ``hypothesis.extra.numpy.mutually_broadcastable_shapes`` does, with the same ``signature=``
    alternative for generalised-ufunc shapes sharing named dimensions, e.g.
    ``signature="(m,n),(n)->(m)"``; then ``min_dims`` / ``max_dims`` count the broadcast (loop)
    dimensions added in front of the core ones.

    >>> gst.mutually_broadcastable_shapes(2)   # BroadcastableShapes(((3, 1), (4,)), (3, 4)), ...
    """
    if (num_shapes is None) == (signature is None):
        raise InvalidArgument(
            f"pass exactly one of num_shapes={num_shapes!r} and signature={signature!r}"
        )
    base_shape = check_shape("base_shape", base_shape)
    check_dims_and_sides(min_dims, max_dims, min_side, max_side)
    if num_shapes is not None:
        check_int("num_shapes", num_shapes, 1)
        how = {"num_shapes": num_shapes}
    else:
        if not isinstance(signature, str):
            raise InvalidArgument(f"signature={signature!r} must be a string such as '(m,n),(n)->(m)'")
        how = {"signature": signature.replace(" ", "")}
    return validated(
        hnp.mutually_broadcastable_shapes(
            **how, base_shape=base_shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        ),
        prefix=f"signature={signature!r}: " if signature is not None else "",
    )

