"""Random differentiable expressions whose gradient is known analytically (sympy), not from autograd.

An :class:`Expression` is a small tree of elementwise operations over one to three tensor inputs whose
shapes broadcast together, followed by a reduction (``sum``, ``mean`` or none).  It is

* callable on tensors (torch ops, so autograd runs through it, custom ops included);
* printable as maths (``mean(2*(x + 2)**2)``), and ``Expression.parse`` reads that text back;
* able to draw its own valid inputs (``expr.inputs()``, contiguous and non-contiguous layouts);
* able to give its gradient **without autograd** (``expr.gradient(*xs)``): the tree is rebuilt as a
  sympy expression over scalar symbols, differentiated with ``sympy.diff``, lambdified to numpy,
  evaluated in float64 with broadcasting, weighted by the reduction and summed back to each input's
  shape.

Random ones come from :func:`gradcheck_kit.strategies.expressions`
(:mod:`gradcheck_kit.strategies.symbolic.builder`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence

import numpy as np
import sympy
import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from gradcheck_kit.errors import InvalidArgument, NoAnalyticGradient
from gradcheck_kit.strategies.arguments import check_between
from gradcheck_kit.strategies.symbolic.intervals import DEFAULT_BOUNDS
from gradcheck_kit.strategies.symbolic.ops import VARIABLES, Op
from gradcheck_kit.strategies.symbolic.sympy_bridge import gradient_function, parse_expression, to_sympy, to_text
from gradcheck_kit.strategies.symbolic.tree import Apply, evaluate, walk
from gradcheck_kit.strategies.tensor_strategies import broadcastable_tensors, tensors

__all__ = ["REDUCTIONS", "Expression"]

#: what an expression's elementwise body is reduced by
REDUCTIONS = ("sum", "mean", "none")


def _sum_to_shape(array: np.ndarray, shape: tuple) -> np.ndarray:
    extra = array.ndim - len(shape)
    if extra:
        array = array.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, (want, have) in enumerate(zip(shape, array.shape)) if want == 1 and have != 1)
    if axes:
        array = array.sum(axis=axes, keepdims=True)
    return array.reshape(shape)


class Expression:
    """A differentiable expression over tensors with an analytic (sympy) gradient.

    Build one with :func:`expressions` (random) or :meth:`Expression.parse` (by hand)."""

    def __init__(self, node, *, n_inputs: int, reduction: str, variables=None, bounds=None):
        if reduction not in REDUCTIONS:
            raise InvalidArgument(f"reduction={reduction!r} must be one of {list(REDUCTIONS)}")
        self._node = node
        self.n_inputs = n_inputs
        self.reduction = reduction
        self.variables = tuple(variables) if variables is not None else VARIABLES[:n_inputs]
        self.bounds = tuple(bounds) if bounds is not None else (DEFAULT_BOUNDS,) * n_inputs
        self._symbols = tuple(sympy.Symbol(v, real=True) for v in self.variables)
        self._display = None
        self._analytic = None
        self.ops = tuple(
            dict.fromkeys(n.op for n in walk(node) if isinstance(n, Apply) and not n.op.builtin)
        )

    # ---- construction by hand
    @classmethod
    def parse(cls, text: str, *, ops: Iterable[Op] = (), variables: Sequence[str] | None = None, bounds=None):
        """Read an expression written as maths, e.g. ``Expression.parse("mean(2*(x + 2)**2)")``.

        A top-level ``sum(...)`` or ``mean(...)`` is the reduction (none otherwise).  Functions: exp, log,
        sin, cos, tanh, sigmoid, softplus, sqrt, abs, ``**`` with a constant exponent, and the ``ops``
        given.  ``variables`` orders the inputs (default: the names sorted); ``bounds`` is one
        ``(lo, hi)`` range for every input's values, or one per input (default ``(-2, 2)``).  The
        expression must be valid over those ranges (no log of a value that can be <= 0, ...)."""
        node, reduction, variables, bounds = parse_expression(text, ops, variables, bounds)
        return cls(node, n_inputs=len(variables), reduction=reduction, variables=variables, bounds=bounds)

    # ---- maths
    @property
    def node(self):
        """The expression tree (:mod:`gradcheck_kit.strategies.symbolic.tree`) of the elementwise body."""
        return self._node

    @property
    def sympy(self) -> sympy.Expr:
        """The elementwise body as a sympy expression (user ops appear by name)."""
        if self._display is None:
            self._display = to_sympy(self._node, self._symbols, analytic=False)
        return self._display

    @property
    def has_analytic_gradient(self) -> bool:
        """False when an op without a sympy counterpart is used: check with ``gk.check_gradients``."""
        return all(op.has_sympy for op in self.ops)

    def __str__(self) -> str:
        body = to_text(self.sympy)
        return body if self.reduction == "none" else f"{self.reduction}({body})"

    def __repr__(self) -> str:
        extra = ""
        if self.ops:
            extra += f", ops=[{', '.join(op.name for op in self.ops)}]"
        if list(self.variables) != sorted(self.variables):
            extra += f", variables={list(self.variables)!r}"
        if any(b != DEFAULT_BOUNDS for b in self.bounds):
            extra += f", bounds={self.bounds!r}"
        return f"Expression.parse({str(self)!r}{extra})"

    @property
    def __name__(self) -> str:  # checkers and reports name the function by it
        return str(self)

    @property
    def __signature__(self) -> inspect.Signature:  # so that messages name the inputs x, y, z
        kind = inspect.Parameter.POSITIONAL_ONLY
        return inspect.Signature([inspect.Parameter(v, kind) for v in self.variables])

    # ---- evaluation
    def _check_inputs(self, xs):
        if len(xs) != self.n_inputs:
            raise InvalidArgument(f"{len(xs)} inputs given to {self}, which takes {self.n_inputs}")
        for i, x in enumerate(xs):
            if not isinstance(x, torch.Tensor):
                raise InvalidArgument(f"input {i} ({self.variables[i]}) must be a tensor, got {type(x).__name__}")

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        self._check_inputs(xs)
        out = evaluate(self._node, xs)
        if self.reduction == "sum":
            return out.sum()
        if self.reduction == "mean":
            return out.mean()
        return out

    def output_shape(self, *xs) -> tuple:
        """The shape of the elementwise body for these inputs (their broadcast shape)."""
        return tuple(np.broadcast_shapes(*(tuple(x.shape) for x in xs)))

    def gradient(self, *xs: torch.Tensor, grad_outputs: torch.Tensor | None = None) -> tuple:
        """One gradient per input, derived with sympy and evaluated in float64, not by autograd.

        Returned in each input's dtype, device and shape (broadcast dimensions summed).  With
        ``reduction="none"``, ``grad_outputs`` is the vector given to ``backward`` (default: ones);
        with ``sum``/``mean`` it may be a scalar that multiplies the gradient.  Where an argument of an op
        declared with ``kinks=`` sits on a kink, each gradient is a :class:`gradcheck_kit.GradientRange`:
        the same values, with the one-sided derivatives as ``low``/``high`` bounds (``assert_grad_equals``
        accepts anything between them)."""
        self._check_inputs(xs)
        if not self.has_analytic_gradient:
            missing = ", ".join(op.name for op in self.ops if not op.has_sympy)
            raise NoAnalyticGradient(
                f"{self} uses {missing}, registered without sympy=; check it numerically with "
                "gk.check_gradients(expr, *xs) instead"
            )
        grads = self._analytic_values(xs, grad_outputs)
        if any(any(k) for op in self.ops for k in op.kinks) and self._at_kink(xs):
            return self._one_sided(xs, grads, grad_outputs)
        return grads

    def _analytic_values(self, xs, grad_outputs) -> tuple:
        """The sympy gradient's values at ``xs`` (what ``gradient`` returns away from kinks)."""
        if self._analytic is None:
            self._analytic = to_sympy(self._node, self._symbols, analytic=True)
        fn = gradient_function(self._analytic, self._symbols)
        arrays = [x.detach().to("cpu", torch.float64).numpy() for x in xs]
        shape = self.output_shape(*xs)
        with np.errstate(all="ignore"):
            derivatives = fn(*arrays)
        weight = np.ones(())
        if self.reduction == "mean":
            weight = weight / max(1, math.prod(shape))
        if grad_outputs is not None:
            v = torch.as_tensor(grad_outputs).detach().to("cpu", torch.float64).numpy()
            expected = shape if self.reduction == "none" else ()
            if v.shape != expected:
                raise InvalidArgument(
                    f"grad_outputs of shape {tuple(v.shape)} does not match the output shape {expected}"
                )
            weight = weight * v
        grads = []
        for x, d in zip(xs, derivatives):
            full = np.broadcast_to(np.asarray(d, dtype=np.float64), shape) * weight
            g = _sum_to_shape(np.asarray(full), tuple(x.shape))
            grads.append(torch.from_numpy(np.array(g, dtype=np.float64, order="C")).to(dtype=x.dtype, device=x.device))
        return tuple(grads)

    #: the one-sided derivatives at a kink are the analytic gradient at x moved by this much (relative)
    KINK_STEP = 2.0**-30

    def _at_kink(self, xs) -> bool:
        """Whether some argument of a user op with ``kinks`` sits on one (within 1e-12, relative)."""
        xs64 = [x.detach().to("cpu", torch.float64) for x in xs]
        for node in walk(self._node):
            if not isinstance(node, Apply) or not any(node.op.kinks):
                continue
            for arg, points in zip(node.args, node.op.kinks):
                if not points:
                    continue
                value = torch.as_tensor(evaluate(arg, xs64), dtype=torch.float64)
                for k in points:
                    if bool(((value - k).abs() <= 1e-12 * max(1.0, abs(k))).any()):
                        return True
        return False

    def _one_sided(self, xs, grads, grad_outputs) -> tuple:
        """Each input's gradient as a ``GradientRange``: bounds from the analytic gradient at that input moved
        by ``+-KINK_STEP`` (relative, the other inputs kept), i.e. the one-sided derivatives."""
        from gradcheck_kit import GradientRange

        out = []
        for i, x in enumerate(xs):
            x64 = x.detach().to("cpu", torch.float64)
            delta = self.KINK_STEP * x64.abs().clamp_min(1.0)
            sides = []
            for sign in (1.0, -1.0):
                moved = list(xs)
                moved[i] = (x64 + sign * delta).to(x.device)
                sides.append(self._analytic_values(moved, grad_outputs)[i].to("cpu", torch.float64))
            value = grads[i]
            low = torch.minimum(sides[0], sides[1]).to(dtype=x.dtype, device=x.device)
            high = torch.maximum(sides[0], sides[1]).to(dtype=x.dtype, device=x.device)
            out.append(GradientRange(value, low, high))
        return tuple(out)

    # ---- strategies
    def inputs(
        self,
        *,
        dtype=torch.float64,
        layout: str = "any",
        requires_grad: bool = True,
        max_dims: int = 3,
        max_side: int = 4,
    ) -> SearchStrategy:
        """A strategy of input tuples for this expression (``gst.broadcastable_tensors``): shapes that
        broadcast together, values in ``self.bounds``, contiguous or strided views of NaN-filled
        buffers (``layout`` = "any", "contiguous" or "noncontiguous"), leaves that require grad.
        ``dtype`` is a torch dtype or a strategy of them (drawn once, shared by the inputs)."""
        check_between("max_dims", max_dims, 0, 5)
        check_between("max_side", max_side, 1, 16)
        return broadcastable_tensors(
            self.n_inputs,
            max_dims=max_dims,
            max_side=max_side,
            dtype=dtype,
            min_value=[lo for lo, _ in self.bounds],
            max_value=[hi for _, hi in self.bounds],
            layout=layout,
            requires_grad=requires_grad,
        )

    def grad_outputs(self, *xs: torch.Tensor) -> SearchStrategy:
        """A strategy of the ``grad_outputs`` to use with these inputs: a tensor of the output's shape
        when ``reduction="none"``, else ``None``."""
        if self.reduction != "none":
            return st.none()
        self._check_inputs(xs)
        return tensors(
            shape=self.output_shape(*xs), dtype=xs[0].dtype, min_value=-2, max_value=2,
            requires_grad=False, layout="contiguous",
        )


#: the functions ``Expression.parse`` reads by name (besides the user's ops)
