"""The strategy of random expressions: a tree builder drawing node kinds and ops from Hypothesis, so a
failing expression shrinks simplest first.

Each node draws its kind from ``integers`` (a leaf first), operations from lists whose first entries
are the user's ops, so a failing expression shrinks to a bare op applied to one input. Domains stay
valid by construction: every subtree carries an interval (interval arithmetic over the input
bounds), and an operation whose argument could leave its safe region gets the argument shifted or
scaled first (``log(x + 3)``, ``1/(y**2 + 1)``-style guards, ``abs(x - 3)`` keeps ``abs`` off its
kink, ``exp`` arguments stay below 3, every subtree stays within ``[-50, 50]``). So a failing check
always means a wrong gradient, never a bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.arguments import check_between
from gradcheck_kit.strategies.symbolic.expression import REDUCTIONS, Expression
from gradcheck_kit.strategies.symbolic.intervals import DEFAULT_BOUNDS
from gradcheck_kit.strategies.symbolic.ops import (
    ADD,
    BINARY_BUILTINS,
    CONSTANTS,
    EXPONENTS,
    POW_OPS,
    UNARY_BUILTINS,
    Op,
)
from gradcheck_kit.strategies.symbolic.tree import Apply, Const, Var, apply_guarded, renumber, walk

__all__ = ["expressions"]


class _Builder:
    """Draws a random tree, node by node, with every argument guarded into its op's safe region."""

    def __init__(self, draw, n_inputs, unary, binary, bounds, leaf_root):
        self.draw = draw
        self.n = n_inputs
        self.unary = unary
        self.binary = binary
        self.bounds = bounds
        self.leaf_root = leaf_root

    def leaf(self):
        i = self.draw(st.integers(0, self.n - 1))
        return Var(i), self.bounds[i]

    def build(self, depth, root=False):
        if depth <= 0:
            return self.leaf()
        # kinds, simplest first: leaf, unary op, op with a constant, power, op of two subtrees
        kind = self.draw(st.integers(0 if (not root or self.leaf_root) else 1, 4))
        if kind == 0:
            return self.leaf()
        if kind == 1:
            op = self.draw(st.sampled_from(self.unary))
            return apply_guarded(op, [self.build(depth - 1)])
        if kind == 2:
            op = self.draw(st.sampled_from(self.binary))
            c = self.draw(st.sampled_from(CONSTANTS))
            child = self.build(depth - 1)
            const = (Const(c), (float(c), float(c)))
            const_first = self.draw(st.booleans())
            return apply_guarded(op, [const, child] if const_first else [child, const])
        if kind == 3:
            k = self.draw(st.sampled_from(EXPONENTS))
            return apply_guarded(POW_OPS[k], [self.build(depth - 1)])
        op = self.draw(st.sampled_from(self.binary))
        return apply_guarded(op, [self.build(depth - 1), self.build(depth - 1)])


def expressions(
    *,
    n_inputs: int | None = None,
    max_depth: int = 3,
    extra_ops: Iterable[Op] = (),
    reduction: str | Sequence[str] | None = None,
) -> SearchStrategy[Expression]:
    """A strategy of random differentiable :class:`Expression` objects.

    * ``n_inputs``: 1 to 3 tensor inputs; by default the leaves choose among x, y, z and the
      expression takes the inputs it uses (shrinking to one).  Every input appears.
    * ``max_depth``: the most operations on a path from the root to a leaf (default 3).
    * ``extra_ops``: :class:`Op` objects to use among the built-in ones; every expression then uses
      at least one of them (shrinking towards ``op(x)``).
    * ``reduction``: "sum", "mean", "none" (no reduction: check with a ``grad_outputs`` vector, see
      :meth:`Expression.grad_outputs`), a list of them, or None for any.
    """
    if n_inputs is not None:
        check_between("n_inputs", n_inputs, 1, 3)
    check_between("max_depth", max_depth, 1, 8)
    if isinstance(extra_ops, Op):
        extra_ops = [extra_ops]
    try:
        extra_ops = list(extra_ops)
    except TypeError:
        raise InvalidArgument(f"extra_ops={extra_ops!r} must be a list of Op") from None
    for op in extra_ops:
        if not isinstance(op, Op) or op.builtin:
            raise InvalidArgument(f"extra_ops={extra_ops!r} must hold Op instances made with gst.Op(...)")
    if len({op.name for op in extra_ops}) != len(extra_ops):
        raise InvalidArgument(f"extra_ops={extra_ops!r} has two ops with the same name")
    if reduction is None:
        reductions = list(REDUCTIONS)
    elif isinstance(reduction, str):
        reductions = [reduction]
    else:
        reductions = list(reduction)
    if not reductions or any(r not in REDUCTIONS for r in reductions):
        raise InvalidArgument(f"reduction={reduction!r} must be one of {list(REDUCTIONS)}, a list of them, or None")

    unary = [op for op in extra_ops if op.arity == 1] + UNARY_BUILTINS
    binary = BINARY_BUILTINS + [op for op in extra_ops if op.arity == 2]

    return _draw_expression(n_inputs, max_depth, extra_ops, unary, binary, reductions)


@st.composite
def _draw_expression(draw, n_inputs, max_depth, extra_ops, unary, binary, reductions):
    # With n_inputs=None the leaves choose among three variables and the expression takes those it
    # uses (renumbered x, y, z in order): shrinking a leaf's index towards 0 drops an input.
    n = n_inputs if n_inputs is not None else 3
    bounds = (DEFAULT_BOUNDS,) * n
    builder = _Builder(draw, n, unary, binary, bounds, leaf_root=bool(extra_ops))
    node, iv = builder.build(max_depth, root=True)
    used_ops = {x.op for x in walk(node) if isinstance(x, Apply)}
    if extra_ops and not used_ops.intersection(extra_ops):
        op = draw(st.sampled_from(extra_ops))
        children = [(node, iv)]
        if op.arity == 2:  # the simplest second argument is another input (y), where broadcasting happens
            j = (draw(st.integers(0, n - 1)) + 1) % n
            children.append((Var(j), bounds[j]))
        node, iv = apply_guarded(op, children)
    used = sorted({x.index for x in walk(node) if isinstance(x, Var)})
    if n_inputs is None:
        n = len(used)
        node = renumber(node, {old: new for new, old in enumerate(used)})
        bounds = bounds[:n]
    else:
        for j in range(n):
            if j not in used:
                node, iv = apply_guarded(ADD, [(node, iv), (Var(j), bounds[j])])
    reduction = draw(st.sampled_from(reductions))
    return Expression(node, n_inputs=n, reduction=reduction, bounds=bounds)
