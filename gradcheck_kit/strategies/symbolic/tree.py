"""Expression trees: input variables, constants and op applications; their values on tensors, their
intervals, and the guards that keep every op's arguments inside its safe region."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from gradcheck_kit.strategies.symbolic.intervals import CAP, nice_ceil
from gradcheck_kit.strategies.symbolic.ops import ADD, DIV, SUB, Op

__all__ = ["Apply", "Const", "Var", "apply_guarded", "evaluate", "interval_of", "renumber", "walk"]


@dataclass(frozen=True)
class Var:
    """The input at ``index`` (x, y, z)."""

    index: int


@dataclass(frozen=True)
class Const:
    """An exact constant."""

    value: Fraction


@dataclass(frozen=True, eq=False)
class Apply:
    """``op`` applied to the subtrees ``args``."""

    op: Op
    args: tuple


def walk(node):
    """Every node of the tree, the root first."""
    yield node
    if isinstance(node, Apply):
        for arg in node.args:
            yield from walk(arg)


def interval_of(node, bounds):
    """An interval holding the node's values for inputs within ``bounds`` (one ``(lo, hi)`` per input)."""
    if isinstance(node, Var):
        return bounds[node.index]
    if isinstance(node, Const):
        return (float(node.value), float(node.value))
    return node.op.image_of(*(interval_of(a, bounds) for a in node.args))



def evaluate(node, xs):
    """The node's value on the input tensors ``xs`` (torch ops, so autograd runs through it)."""
    if isinstance(node, Var):
        return xs[node.index]
    if isinstance(node, Const):
        return float(node.value)
    args = [evaluate(a, xs) for a in node.args]
    if not node.op.builtin or not any(isinstance(a, torch.Tensor) for a in args):
        # a user's op gets tensors only, and so does a builtin applied to constants alone (softplus(0))
        like = next(a for a in args if isinstance(a, torch.Tensor)) if any(
            isinstance(a, torch.Tensor) for a in args
        ) else xs[0]
        args = [a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=like.dtype, device=like.device) for a in args]
    return node.op.fn(*args)


def _fit(node, iv, target):
    """Shift (and if needed scale) ``node`` so that its interval lies in the closed ``target``."""
    tlo, thi = target
    lo, hi = iv
    if tlo <= lo and hi <= thi:
        return node, iv
    if isinstance(node, Const):  # a constant simply moves inside
        value = nice_ceil(tlo) if float(node.value) < tlo else Fraction(math.floor(thi))
        if not tlo <= float(value) <= thi:
            value = Fraction((tlo + thi) / 2).limit_denominator(64)
        return Const(value), (float(value), float(value))
    width, room = hi - lo, thi - tlo
    if width > 0.9 * room:  # scale down by a power of two first
        k = 2 ** math.ceil(math.log2(width / (0.9 * room)))
        node = Apply(DIV, (node, Const(Fraction(k))))
        lo, hi = lo / k, hi / k
    if lo < tlo:
        shift = nice_ceil(tlo - lo)
        if hi + float(shift) > thi:
            shift = Fraction(tlo - lo + 0.05 * (room - (hi - lo))).limit_denominator(1024)
        return Apply(ADD, (node, Const(shift))), (lo + float(shift), hi + float(shift))
    if hi > thi:
        shift = nice_ceil(hi - thi)
        if lo - float(shift) < tlo:
            shift = Fraction(hi - thi + 0.05 * (room - (hi - lo))).limit_denominator(1024)
        return Apply(SUB, (node, Const(shift))), (lo - float(shift), hi - float(shift))
    return node, (lo, hi)


def apply_guarded(op, children):
    """``op`` applied to ``children`` (pairs of node and interval), guarding every argument."""
    nodes, ivs = [], []
    for (node, iv), target in zip(children, op.safe):
        node, iv = _fit(node, iv, target)
        nodes.append(node)
        ivs.append(iv)
    node = Apply(op, tuple(nodes))
    iv = op.image_of(*ivs)
    return _fit(node, iv, (-CAP, CAP))


def renumber(node, mapping):
    """The tree with every input index ``i`` replaced by ``mapping[i]``."""
    if isinstance(node, Var):
        return Var(mapping[node.index])
    if isinstance(node, Apply):
        return Apply(node.op, tuple(renumber(a, mapping) for a in node.args))
    return node
