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

Domains stay valid by construction: every subtree carries an interval (interval arithmetic over the
input bounds), and an operation whose argument could leave its safe region gets the argument shifted
or scaled first (``log(x + 3)``, ``1/(y**2 + 1)``-style guards, ``abs(x - 3)`` keeps ``abs`` off its
kink, ``exp`` arguments stay below 3, every subtree stays within ``[-50, 50]``).  So a failing check
always means a wrong gradient, never a bad input.

Shrinking goes simplest first: each node draws its kind from ``integers`` (a leaf first), operations
from lists whose first entries are the user's ops, so a failing expression shrinks to a bare op
applied to one input.

This module imports Hypothesis and sympy; it is reached only through ``gradcheck_kit.strategies``.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from sympy.printing.str import StrPrinter

from gradcheck_kit._strategies import broadcastable_tensors, tensors
from gradcheck_kit.errors import InvalidArgument, NoAnalyticGradient

__all__ = ["Expression", "NoAnalyticGradient", "Op", "expressions"]

INF = math.inf
#: default range of every input's values
DEFAULT_BOUNDS = (-2.0, 2.0)
#: every subtree of a random expression stays inside [-_CAP, _CAP]
_CAP = 50.0
#: distance kept from the edge of a half-bounded domain (log, sqrt, division, abs's kink, ...)
_MARGIN = 0.5
#: exp's argument stays at or below this (exp(3) ~ 20)
_EXP_MAX = 3.0
#: tanh and sigmoid arguments stay in [-3, 3]
_SATURATE = 3.0
_VARIABLES = ("x", "y", "z")
_REDUCTIONS = ("sum", "mean", "none")


# --------------------------------------------------------------------------------------------------
# sympy side: the two functions sympy lacks, their numpy versions, and a printer that writes abs()


class softplus(sympy.Function):  # noqa: N801 - the printed name
    """log(1 + exp(x)), with d/dx = sigmoid(x)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class sigmoid(sympy.Function):  # noqa: N801 - the printed name
    """1 / (1 + exp(-x)), with d/dx = sigmoid(x) * (1 - sigmoid(x))."""

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


_NUMPY_MODULES = [{"softplus": _np_softplus, "sigmoid": _np_sigmoid}, "numpy"]


class _Printer(StrPrinter):
    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"


def _to_text(expr: sympy.Expr) -> str:
    return _Printer().doprint(expr)


# --------------------------------------------------------------------------------------------------
# intervals


def _iv_mul(a, b):
    products = [p for p in (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]) if not math.isnan(p)]
    return (min(products), max(products))


def _iv_pow(a, k: Fraction):
    lo, hi = a
    if k.denominator != 1 or k < 0:  # base is kept positive
        ends = sorted((lo ** float(k), hi ** float(k)))
        return (ends[0], ends[1])
    k = int(k)
    if k % 2 == 1 or lo >= 0:
        return tuple(sorted((lo**k, hi**k)))
    if hi <= 0:
        return (hi**k, lo**k)
    return (0.0, max(lo**k, hi**k))


def _iv_abs(a):
    lo, hi = a
    if lo >= 0:
        return a
    if hi <= 0:
        return (-hi, -lo)
    return (0.0, max(-lo, hi))


def _monotone(f):
    return lambda a: (f(a[0]), f(a[1]))


def _softplus_float(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _sigmoid_float(v):
    return math.exp(-_softplus_float(-v))


def _within(iv, domain) -> bool:
    return domain[0] < iv[0] and iv[1] < domain[1]


def _safe_target(domain):
    """The closed region random expressions keep an argument in, for an op defined on open ``domain``."""
    lo, hi = domain
    if math.isinf(lo) and math.isinf(hi):
        return (-_CAP, _CAP)
    if math.isinf(hi):
        return (lo + _MARGIN, max(_CAP, lo + 2 * _MARGIN))
    if math.isinf(lo):
        return (min(-_CAP, hi - 2 * _MARGIN), hi - _MARGIN)
    pad = 0.1 * (hi - lo)
    return (lo + pad, hi - pad)


# --------------------------------------------------------------------------------------------------
# operations


def _parse_domain(domain, arity: int, name: str):
    """The hull ``(lo, hi)`` of each argument's domain (see :func:`_parse_intervals`)."""
    return tuple((ivs[0][0], ivs[-1][1]) for ivs in _parse_intervals(domain, arity, name))


def _is_pair_list(d) -> bool:
    return isinstance(d, Sequence) and not isinstance(d, str) and len(d) > 0 and all(
        isinstance(p, Sequence) and not isinstance(p, str) for p in d
    )


def _parse_intervals(domain, arity: int, name: str):
    """Per argument, the sorted disjoint open intervals where the op is defined and smooth.

    ``domain``: ``(lo, hi)``; several intervals ``[(lo, hi), (lo, hi), ...]``; or, for ``arity=2``, one
    such entry per argument (a list of two entries, each a pair or a list of pairs)."""
    if domain is None:
        return (((-INF, INF),),) * arity
    if arity > 1 and isinstance(domain, Sequence) and len(domain) == arity and all(
        _is_pair_list(d) or (isinstance(d, Sequence) and not isinstance(d, str)) for d in domain
    ) and all(not isinstance(d, (int, float)) and d is not None for d in domain):
        entries = list(domain)
    else:
        entries = [domain] * arity
    out = []
    for entry in entries:
        pairs = list(entry) if _is_pair_list(entry) else [entry]
        ivs = []
        for pair in pairs:
            try:
                lo, hi = pair
                lo = -INF if lo is None else float(lo)
                hi = INF if hi is None else float(hi)
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"domain={domain!r} for op {name!r} must be (lo, hi), None for an open end, a list of such "
                    "intervals, or one such entry per argument"
                ) from None
            if not lo < hi or math.isnan(lo) or math.isnan(hi):
                raise InvalidArgument(f"domain={domain!r} for op {name!r} needs lo < hi")
            ivs.append((lo, hi))
        ivs.sort()
        if any(a[1] > b[0] for a, b in zip(ivs, ivs[1:])):
            raise InvalidArgument(f"domain={domain!r} for op {name!r} has overlapping intervals")
        out.append(tuple(ivs))
    return tuple(out)


def _parse_kinks(kinks, arity: int, name: str):
    """Per argument, the sorted points where the op's derivative jumps: ``[k1, k2, ...]`` (every
    argument) or, for ``arity=2``, one such list per argument."""
    if kinks is None:
        return ((),) * arity
    bad = InvalidArgument(
        f"kinks={kinks!r} for op {name!r} must be a list of finite numbers, or one such list per argument"
    )
    if not isinstance(kinks, Sequence) or isinstance(kinks, str):
        raise bad
    if arity > 1 and len(kinks) == arity and all(isinstance(k, Sequence) and not isinstance(k, str) for k in kinks):
        entries = list(kinks)
    else:
        entries = [kinks] * arity
    out = []
    for entry in entries:
        try:
            points = sorted(float(k) for k in entry)
        except (TypeError, ValueError):
            raise bad from None
        if not all(math.isfinite(k) for k in points):
            raise bad
        out.append(tuple(points))
    return tuple(out)


_RESERVED = {"sum", "mean", "abs", "Abs", "E", "I", "S", "N", "O", "Q", "pi", "oo", "zoo", "nan"}


class Op:
    """An elementwise operation that random expressions may use.

    ``Op(name, fn, sympy=None, *, domain=None, arity=1, image=None, kinks=None)``

    * ``fn`` takes ``arity`` tensors and returns one (a torch function, a ``torch.autograd.Function``'s
      ``apply``, any callable autograd runs through).  Its arguments broadcast like ``torch.mul``'s.
    * ``sympy`` (optional) takes ``arity`` sympy expressions and returns the same function in sympy,
      e.g. ``lambda s: sympy.log(1 + sympy.exp(s))``.  Without it the op still appears in random
      compositions, but expressions using it have ``has_analytic_gradient == False``: check them with
      the numerical checker (``gk.check_gradients``) instead of ``expr.gradient``.
    * ``domain`` is the open interval ``(lo, hi)`` where ``fn`` is defined and smooth (``None`` for an
      open end), several such intervals (``[(None, -1), (1, None)]``), or one such entry per argument.
      Random expressions keep its arguments well inside (the widest interval); a parsed expression must
      keep each argument within one interval over its bounds.
    * ``kinks`` (optional) lists the points where ``fn``'s derivative jumps (``[0.0]`` for a relu-like
      op; one list per argument for ``arity=2``). Where an argument sits on one, ``expr.gradient``
      returns a :class:`gradcheck_kit.GradientRange` (the one-sided derivatives as bounds), which
      ``gk.assert_grad_equals`` accepts anywhere between them.
    * ``image`` (optional) bounds the op's values ``(lo, hi)``; by default they are estimated by
      evaluating ``fn`` on a grid over its arguments' ranges.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        sympy: Callable[..., Any] | None = None,
        *,
        domain=None,
        arity: int = 1,
        image=None,
        kinks=None,
    ):
        self._builtin = False
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise InvalidArgument(f"name={name!r} must be a Python identifier not starting with '_'")
        if name in _BUILTIN_NAMES or name in _RESERVED or name in _VARIABLES:
            raise InvalidArgument(f"name={name!r} is reserved (a built-in operation or variable name)")
        if not callable(fn):
            raise InvalidArgument(f"fn={fn!r} for op {name!r} must be callable")
        if sympy is not None and not callable(sympy):
            raise InvalidArgument(f"sympy={sympy!r} for op {name!r} must be callable or None")
        if not isinstance(arity, int) or isinstance(arity, bool) or arity not in (1, 2):
            raise InvalidArgument(f"arity={arity!r} for op {name!r} must be 1 or 2")
        if image is not None:
            try:
                image = (float(image[0]), float(image[1]))
            except (TypeError, ValueError, IndexError):
                raise InvalidArgument(f"image={image!r} for op {name!r} must be a (lo, hi) pair") from None
            if not (math.isfinite(image[0]) and math.isfinite(image[1]) and image[0] <= image[1]):
                raise InvalidArgument(f"image={image!r} for op {name!r} must be finite with lo <= hi")
        self.name = name
        self.fn = fn
        self.sympy = sympy
        self.arity = arity
        self.intervals = _parse_intervals(domain, arity, name)
        self.domain = tuple((ivs[0][0], ivs[-1][1]) for ivs in self.intervals)
        self.kinks = _parse_kinks(kinks, arity, name)
        self.image = image
        self._safe = tuple(_safe_target(max(ivs, key=lambda iv: iv[1] - iv[0])) for ivs in self.intervals)
        self._interval_fn = None
        self._image_cache: dict = {}
        self._function_class = None

    @classmethod
    def _make_builtin(cls, name, fn, sym, *, arity=1, domain=None, safe=None, interval=None):
        op = cls.__new__(cls)
        op._builtin = True
        op.name = name
        op.fn = fn
        op.sympy = sym
        op.arity = arity
        op.domain = _parse_domain(domain, arity, name)
        op.intervals = tuple((d,) for d in op.domain)
        op.kinks = ((),) * arity
        op.image = None
        op._safe = safe if safe is not None else tuple(_safe_target(d) for d in op.domain)
        op._interval_fn = interval
        op._image_cache = {}
        op._function_class = None
        return op

    @property
    def has_sympy(self) -> bool:
        return self.sympy is not None

    def __repr__(self) -> str:
        extra = "" if self.arity == 1 else f", arity={self.arity}"
        return f"Op({self.name!r}{extra})"

    # ---- private helpers
    def _display(self, *args):
        """The sympy expression printed for this op applied to ``args``."""
        if self._builtin:
            return self.sympy(*args)
        if self._function_class is None:
            self._function_class = type(self.name, (sympy.Function,), {"nargs": self.arity})
        return self._function_class(*args)

    def _analytic(self, *args):
        return self.sympy(*args)

    def _interval(self, *ivs):
        if self._interval_fn is not None:
            return self._interval_fn(*ivs)
        if self.image is not None:
            return self.image
        key = tuple((round(lo, 6), round(hi, 6)) for lo, hi in ivs)
        cached = self._image_cache.get(key)
        if cached is None:
            cached = self._image_cache[key] = self._estimate_image(ivs)
        return cached

    def _estimate_image(self, ivs):
        points = 257 if self.arity == 1 else 33
        grids = [torch.linspace(lo, hi, points, dtype=torch.float64) for lo, hi in ivs]
        if self.arity == 2:
            grids = [grids[0][:, None], grids[1][None, :]]
        values = None
        for dtype in (torch.float64, torch.float32):
            try:
                with torch.no_grad():
                    values = self.fn(*(g.to(dtype) for g in grids))
                break
            except Exception:  # the op may not support this dtype: try the next one
                continue
        if values is None:
            raise InvalidArgument(f"op {self.name!r}: fn raised when called on float64 and float32 tensors")
        values = torch.as_tensor(values).detach().to(torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise InvalidArgument(
                f"op {self.name!r} returned non-finite values for arguments in {list(ivs)}; "
                "declare where it is defined with domain=(lo, hi)"
            )
        lo, hi = float(values.min()), float(values.max())
        pad = 0.1 * (hi - lo) + 1e-3 * max(1.0, abs(lo), abs(hi))
        return (lo - pad, hi + pad)


def _softplus_torch(x):
    return torch.nn.functional.softplus(x)


def _pow_op(k: Fraction) -> Op:
    exponent = int(k) if k.denominator == 1 else float(k)
    sym_k = sympy.Rational(k.numerator, k.denominator)
    positive = k.denominator != 1 or k < 0
    domain = (0, None) if positive else None
    return Op._make_builtin(
        f"pow({k})",
        lambda a: a**exponent,
        lambda s: s**sym_k,
        domain=domain,
        interval=lambda a: _iv_pow(a, k),
    )


_ADD = Op._make_builtin(
    "add", torch.add, lambda a, b: a + b, arity=2, interval=lambda a, b: (a[0] + b[0], a[1] + b[1])
)
_SUB = Op._make_builtin(
    "sub", torch.sub, lambda a, b: a - b, arity=2, interval=lambda a, b: (a[0] - b[1], a[1] - b[0])
)
_MUL = Op._make_builtin("mul", torch.mul, lambda a, b: a * b, arity=2, interval=_iv_mul)
_DIV = Op._make_builtin(
    "div",
    torch.div,
    lambda a, b: a / b,
    arity=2,
    domain=((None, None), (0, None)),  # denominators are kept positive (and >= 0.5)
    interval=lambda a, b: _iv_mul(a, (1.0 / b[1], 1.0 / b[0])),
)
_UNARY_BUILTINS = [
    Op._make_builtin("sin", torch.sin, sympy.sin, interval=lambda a: (-1.0, 1.0)),
    Op._make_builtin("cos", torch.cos, sympy.cos, interval=lambda a: (-1.0, 1.0)),
    Op._make_builtin(
        "exp",
        torch.exp,
        sympy.exp,
        safe=((-_CAP, _EXP_MAX),),  # no overflow, values stay below ~20
        interval=_monotone(math.exp),
    ),
    Op._make_builtin("log", torch.log, sympy.log, domain=(0, None), interval=_monotone(math.log)),
    # off the flat tails, where float32 autograd computes 1 - y**2 (or y*(1 - y)) from a y rounded
    # near 1 and its gradient has no correct digit left
    Op._make_builtin(
        "tanh", torch.tanh, sympy.tanh, safe=((-_SATURATE, _SATURATE),), interval=_monotone(math.tanh)
    ),
    Op._make_builtin(
        "sigmoid", torch.sigmoid, sigmoid, safe=((-_SATURATE, _SATURATE),), interval=_monotone(_sigmoid_float)
    ),
    Op._make_builtin("softplus", _softplus_torch, softplus, interval=_monotone(_softplus_float)),
    Op._make_builtin("sqrt", torch.sqrt, sympy.sqrt, domain=(0, None), interval=_monotone(math.sqrt)),
    Op._make_builtin(
        "abs",
        torch.abs,
        sympy.Abs,
        safe=((-_CAP, -_MARGIN),),  # keep off the kink at 0 (and make abs flip the sign)
        interval=_iv_abs,
    ),
]
_BINARY_BUILTINS = [_ADD, _SUB, _MUL, _DIV]
_EXPONENTS = [Fraction(2), Fraction(3), Fraction(-1), Fraction(3, 2), Fraction(-1, 2), Fraction(1, 3)]
_POW_OPS = {k: _pow_op(k) for k in _EXPONENTS}
_BUILTIN_NAMES = {op.name for op in _UNARY_BUILTINS + _BINARY_BUILTINS} | {"pow"}
_CONSTANTS = [Fraction(2), Fraction(1), Fraction(3), Fraction(1, 2), Fraction(10)]


# --------------------------------------------------------------------------------------------------
# trees


@dataclass(frozen=True)
class _Var:
    index: int


@dataclass(frozen=True)
class _Const:
    value: Fraction


@dataclass(frozen=True, eq=False)
class _Apply:
    op: Op
    args: tuple


def _walk(node):
    yield node
    if isinstance(node, _Apply):
        for arg in node.args:
            yield from _walk(arg)


def _interval_of(node, bounds):
    if isinstance(node, _Var):
        return bounds[node.index]
    if isinstance(node, _Const):
        return (float(node.value), float(node.value))
    return node.op._interval(*(_interval_of(a, bounds) for a in node.args))


def _sym_const(value: Fraction):
    return sympy.Rational(value.numerator, value.denominator)


def _to_sympy(node, symbols, analytic: bool):
    if isinstance(node, _Var):
        return symbols[node.index]
    if isinstance(node, _Const):
        return _sym_const(node.value)
    args = [_to_sympy(a, symbols, analytic) for a in node.args]
    return node.op._analytic(*args) if analytic else node.op._display(*args)


def _evaluate(node, xs):
    if isinstance(node, _Var):
        return xs[node.index]
    if isinstance(node, _Const):
        return float(node.value)
    args = [_evaluate(a, xs) for a in node.args]
    if not node.op._builtin or not any(isinstance(a, torch.Tensor) for a in args):
        # a user's op gets tensors only, and so does a builtin applied to constants alone (softplus(0))
        like = next(a for a in args if isinstance(a, torch.Tensor)) if any(
            isinstance(a, torch.Tensor) for a in args
        ) else xs[0]
        args = [a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=like.dtype, device=like.device) for a in args]
    return node.op.fn(*args)


def _nice_ceil(value: float) -> Fraction:
    """The simplest fraction >= value with a power-of-two denominator, no more than 1/d above it."""
    for denominator in (1, 2, 4, 8, 16, 64, 256):
        candidate = Fraction(math.ceil(value * denominator - 1e-12), denominator)
        if float(candidate) - value <= 1.0 / denominator:
            return candidate
    return Fraction(value).limit_denominator(1024)


def _fit(node, iv, target):
    """Shift (and if needed scale) ``node`` so that its interval lies in the closed ``target``."""
    tlo, thi = target
    lo, hi = iv
    if tlo <= lo and hi <= thi:
        return node, iv
    if isinstance(node, _Const):  # a constant simply moves inside
        value = _nice_ceil(tlo) if float(node.value) < tlo else Fraction(math.floor(thi))
        if not tlo <= float(value) <= thi:
            value = Fraction((tlo + thi) / 2).limit_denominator(64)
        return _Const(value), (float(value), float(value))
    width, room = hi - lo, thi - tlo
    if width > 0.9 * room:  # scale down by a power of two first
        k = 2 ** math.ceil(math.log2(width / (0.9 * room)))
        node = _Apply(_DIV, (node, _Const(Fraction(k))))
        lo, hi = lo / k, hi / k
    if lo < tlo:
        shift = _nice_ceil(tlo - lo)
        if hi + float(shift) > thi:
            shift = Fraction(tlo - lo + 0.05 * (room - (hi - lo))).limit_denominator(1024)
        return _Apply(_ADD, (node, _Const(shift))), (lo + float(shift), hi + float(shift))
    if hi > thi:
        shift = _nice_ceil(hi - thi)
        if lo - float(shift) < tlo:
            shift = Fraction(hi - thi + 0.05 * (room - (hi - lo))).limit_denominator(1024)
        return _Apply(_SUB, (node, _Const(shift))), (lo - float(shift), hi - float(shift))
    return node, (lo, hi)


def _apply(op, children):
    """``op`` applied to ``children`` (pairs of node and interval), guarding every argument."""
    nodes, ivs = [], []
    for (node, iv), target in zip(children, op._safe):
        node, iv = _fit(node, iv, target)
        nodes.append(node)
        ivs.append(iv)
    node = _Apply(op, tuple(nodes))
    iv = op._interval(*ivs)
    return _fit(node, iv, (-_CAP, _CAP))


# --------------------------------------------------------------------------------------------------
# the expression


_lambdified: dict = {}
_LAMBDIFIED_MAX = 4096


def _gradient_function(analytic: sympy.Expr, symbols: tuple):
    key = (analytic, symbols)
    fn = _lambdified.get(key)
    if fn is None:
        derivatives = [sympy.diff(analytic, s) for s in symbols]
        fn = sympy.lambdify(symbols, derivatives, modules=_NUMPY_MODULES)
        if len(_lambdified) >= _LAMBDIFIED_MAX:
            _lambdified.clear()
        _lambdified[key] = fn
    return fn


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
        if reduction not in _REDUCTIONS:
            raise InvalidArgument(f"reduction={reduction!r} must be one of {list(_REDUCTIONS)}")
        self._node = node
        self.n_inputs = n_inputs
        self.reduction = reduction
        self.variables = tuple(variables) if variables is not None else _VARIABLES[:n_inputs]
        self.bounds = tuple(bounds) if bounds is not None else (DEFAULT_BOUNDS,) * n_inputs
        self._symbols = tuple(sympy.Symbol(v, real=True) for v in self.variables)
        self._display = None
        self._analytic = None
        self.ops = tuple(
            dict.fromkeys(n.op for n in _walk(node) if isinstance(n, _Apply) and not n.op._builtin)
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
        if not isinstance(text, str):
            raise InvalidArgument(f"text={text!r} must be a string")
        ops = list(ops)
        for op in ops:
            if not isinstance(op, Op):
                raise InvalidArgument(f"ops={ops!r} must hold Op instances")
        user = {op.name: op for op in ops}
        functions = {**_PARSE_FUNCTIONS, **{name: op._display for name, op in user.items()}}
        reduction, parsed = _parse_text(text, functions)
        free = sorted(str(s) for s in parsed.free_symbols)
        if variables is None:
            variables = free
        variables = list(variables)
        if not 1 <= len(variables) <= 3 or set(variables) != set(free):
            raise InvalidArgument(
                f"variables={variables!r} must name the 1 to 3 variables of {text!r}, which are {free}"
            )
        index = {name: i for i, name in enumerate(variables)}
        node = _from_sympy(parsed, index, user, text)
        n = len(variables)
        if bounds is None:
            bounds = (DEFAULT_BOUNDS,) * n
        elif len(bounds) == 2 and not isinstance(bounds[0], (tuple, list)):
            bounds = (tuple(bounds),) * n
        bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
        if len(bounds) != n or any(not lo <= hi for lo, hi in bounds):
            raise InvalidArgument(f"bounds={bounds!r} must be one (lo, hi) pair, or one per variable")
        _check_domains(node, bounds, text, [sympy.Symbol(v) for v in variables])
        return cls(node, n_inputs=n, reduction=reduction, variables=variables, bounds=bounds)

    # ---- maths
    @property
    def sympy(self) -> sympy.Expr:
        """The elementwise body as a sympy expression (user ops appear by name)."""
        if self._display is None:
            self._display = _to_sympy(self._node, self._symbols, analytic=False)
        return self._display

    @property
    def has_analytic_gradient(self) -> bool:
        """False when an op without a sympy counterpart is used: check with ``gk.check_gradients``."""
        return all(op.has_sympy for op in self.ops)

    def __str__(self) -> str:
        body = _to_text(self.sympy)
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
        out = _evaluate(self._node, xs)
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
            self._analytic = _to_sympy(self._node, self._symbols, analytic=True)
        fn = _gradient_function(self._analytic, self._symbols)
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
        for node in _walk(self._node):
            if not isinstance(node, _Apply) or not any(node.op.kinks):
                continue
            for arg, points in zip(node.args, node.op.kinks):
                if not points:
                    continue
                value = torch.as_tensor(_evaluate(arg, xs64), dtype=torch.float64)
                for k in points:
                    if bool(((value - k).abs() <= 1e-12 * max(1.0, abs(k))).any()):
                        return True
        return False

    def _one_sided(self, xs, grads, grad_outputs) -> tuple:
        """Each input's gradient as a ``GradientRange``: bounds from the analytic gradient at that input moved
        by ``+-KINK_STEP`` (relative, the other inputs kept), i.e. the one-sided derivatives."""
        from gradcheck_kit._ranges import GradientRange

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
        _validate_int("max_dims", max_dims, 0, 5)
        _validate_int("max_side", max_side, 1, 16)
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
_PARSE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tanh": sympy.tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "sqrt": sympy.sqrt,
    "abs": sympy.Abs,
    "Abs": sympy.Abs,
}
_PARSE_REDUCTIONS = ("sum", "mean")
#: the largest numerator or denominator of an exponent, and of log10 of a constant power
_PARSE_MAX_EXPONENT = 10_000
_PARSE_MAX_DIGITS = 1_000
_PARSE_MAX_LENGTH = 10_000
_PARSE_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _parse_text(text: str, functions: dict[str, Callable[..., Any]]) -> tuple[str, sympy.Expr]:
    """``(reduction, body)`` read from ``text`` by a whitelist walk of its Python syntax tree.

    Only numbers, variable names, calls of the named ``functions`` (positional arguments), a top-level
    ``sum(...)`` or ``mean(...)``, and ``+ - * / **`` and unary ``-``/``+`` are accepted; the sympy
    expression is built from those nodes, and nothing of ``text`` is evaluated as code.
    """

    def reject(why: str) -> InvalidArgument:
        return InvalidArgument(
            f"text={text!r} could not be parsed: {why} (allowed: numbers, variable names, "
            "+ - * / **, and calls of " + ", ".join(sorted(set(functions) | set(_PARSE_REDUCTIONS))) + ")"
        )

    if len(text) > _PARSE_MAX_LENGTH:
        raise InvalidArgument(f"text of {len(text)} characters is longer than {_PARSE_MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise reject(f"invalid syntax ({error.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise reject("too deeply nested or not text") from None
    symbols: dict[str, sympy.Symbol] = {}

    def number(value, node) -> sympy.Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise reject(f"{ast.unparse(node)!r} is not a real number")
        if isinstance(value, int):
            return sympy.Integer(value)
        if not math.isfinite(value):
            raise reject(f"{ast.unparse(node)!r} is not finite")
        return sympy.Float(repr(value))

    def power(base: sympy.Expr, exponent: sympy.Expr, node) -> sympy.Expr:
        if exponent.is_Rational:
            if max(abs(int(exponent.p)), abs(int(exponent.q))) > _PARSE_MAX_EXPONENT:
                raise reject(f"the exponent in {ast.unparse(node)!r} is too large")
            if base.is_Number and base != 0:
                digits = abs(float(exponent)) * abs(math.log10(abs(float(base)))) if base.is_finite else INF
                if not digits <= _PARSE_MAX_DIGITS:
                    raise reject(f"{ast.unparse(node)!r} is too large a number")
        elif exponent.is_Float and base.is_Number:
            if not abs(float(exponent)) <= _PARSE_MAX_EXPONENT:
                raise reject(f"the exponent in {ast.unparse(node)!r} is too large")
        return base**exponent

    def convert(node, top: bool = False):
        if isinstance(node, ast.Constant):
            return number(node.value, node)
        if isinstance(node, ast.Name):
            name = node.id
            if name in functions or name in _PARSE_REDUCTIONS:
                raise reject(f"the function {name!r} is used without a call")
            if name.startswith("_"):
                raise reject(f"the name {name!r} starts with '_'")
            if name not in symbols:
                symbols[name] = sympy.Symbol(name, real=True)
            return symbols[name]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _PARSE_BINARY:
            return _PARSE_BINARY[type(node.op)](convert(node.left), convert(node.right))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return power(convert(node.left), convert(node.right), node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
            raise reject("'^' is not a power here; write **")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise reject(f"{ast.unparse(node.func)!r} is not a function name")
            name = node.func.id
            if node.keywords:
                raise reject(f"{name}() takes no keyword arguments")
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise reject(f"{name}() takes no starred arguments")
            if name in _PARSE_REDUCTIONS:
                if not top:
                    raise reject(f"{name}(...) is allowed only around the whole expression")
                if len(node.args) != 1:
                    raise reject(f"{name}() takes one argument")
                return name, convert(node.args[0])
            if name not in functions:
                raise reject(f"unknown function {name!r}")
            args = [convert(a) for a in node.args]
            try:
                return functions[name](*args)
            except (TypeError, ValueError) as error:
                raise reject(f"{name}() with {len(args)} arguments: {error}") from None
        raise reject(f"{type(node).__name__} {ast.unparse(node)!r} is not allowed")

    try:
        result = convert(tree.body, top=True)
    except RecursionError:
        raise reject("too deeply nested") from None
    if isinstance(result, tuple):
        return result
    return "none", result


def _from_sympy(expr, index, user, text):
    def fail(part):
        return InvalidArgument(f"text={text!r}: cannot express {part} (supported: + - * / ** with a constant "
                               "exponent, exp, log, sin, cos, tanh, sigmoid, softplus, sqrt, abs and the ops given)")

    def convert(e):
        if isinstance(e, sympy.Symbol):
            return _Var(index[str(e)])
        if e.is_Rational:
            return _Const(Fraction(int(e.p), int(e.q)))
        if e.is_Float:
            return _Const(Fraction(str(e)))
        if isinstance(e, sympy.Add):
            terms = list(e.args)
            # put constants last so the sum reads x + 2
            terms.sort(key=lambda t: t.is_number)
            node = convert(terms[0])
            for t in terms[1:]:
                if t.could_extract_minus_sign():
                    node = _Apply(_SUB, (node, convert(-t)))
                else:
                    node = _Apply(_ADD, (node, convert(t)))
            return node
        if isinstance(e, sympy.Mul):
            numerator, denominator = sympy.fraction(e)
            if denominator != 1:
                return _Apply(_DIV, (convert(numerator), convert(denominator)))
            factors = list(e.args)
            node = convert(factors[0])
            for f in factors[1:]:
                node = _Apply(_MUL, (node, convert(f)))
            return node
        if isinstance(e, sympy.Pow):
            base, exponent = e.args
            if not exponent.is_Rational:
                if base == sympy.E:
                    return _Apply(_UNARY["exp"], (convert(exponent),))
                raise fail(e)
            k = Fraction(int(exponent.p), int(exponent.q))
            if k == Fraction(1, 2):
                return _Apply(_UNARY["sqrt"], (convert(base),))
            if k == -1:
                return _Apply(_DIV, (_Const(Fraction(1)), convert(base)))
            op = _POW_OPS.get(k) or _pow_op(k)
            return _Apply(op, (convert(base),))
        if isinstance(e, sympy.Abs):
            return _Apply(_UNARY["abs"], (convert(e.args[0]),))
        name = type(e).__name__
        if isinstance(e, sympy.Function) and name in user:
            return _Apply(user[name], tuple(convert(a) for a in e.args))
        if isinstance(e, sympy.Function) and name in _UNARY:
            return _Apply(_UNARY[name], (convert(e.args[0]),))
        raise fail(e)

    return convert(expr)


def _check_domains(node, bounds, text, symbols):
    if not isinstance(node, _Apply):
        return
    for arg in node.args:
        _check_domains(arg, bounds, text, symbols)
    for position, (arg, domain) in enumerate(zip(node.args, node.op.domain)):
        iv = _interval_of(arg, bounds)
        intervals = node.op.intervals[position]
        if len(intervals) > 1 and any(_within(iv, d) for d in intervals):
            continue
        if not _within(iv, domain) or len(intervals) > 1:
            shown = _to_text(_to_sympy(arg, symbols, analytic=False))
            raise InvalidArgument(
                f"text={text!r}: argument {position} of {node.op.name} ({shown}) may reach {list(iv)}, outside "
                f"its domain ({domain[0]:g}, {domain[1]:g}) for inputs in bounds={list(bounds)}; narrow bounds="
            )


_UNARY = {op.name: op for op in _UNARY_BUILTINS}


# --------------------------------------------------------------------------------------------------
# strategies


class _Builder:
    def __init__(self, draw, n_inputs, unary, binary, bounds, leaf_root):
        self.draw = draw
        self.n = n_inputs
        self.unary = unary
        self.binary = binary
        self.bounds = bounds
        self.leaf_root = leaf_root

    def leaf(self):
        i = self.draw(st.integers(0, self.n - 1))
        return _Var(i), self.bounds[i]

    def build(self, depth, root=False):
        if depth <= 0:
            return self.leaf()
        # kinds, simplest first: leaf, unary op, op with a constant, power, op of two subtrees
        kind = self.draw(st.integers(0 if (not root or self.leaf_root) else 1, 4))
        if kind == 0:
            return self.leaf()
        if kind == 1:
            op = self.draw(st.sampled_from(self.unary))
            return _apply(op, [self.build(depth - 1)])
        if kind == 2:
            op = self.draw(st.sampled_from(self.binary))
            c = self.draw(st.sampled_from(_CONSTANTS))
            child = self.build(depth - 1)
            const = (_Const(c), (float(c), float(c)))
            const_first = self.draw(st.booleans())
            return _apply(op, [const, child] if const_first else [child, const])
        if kind == 3:
            k = self.draw(st.sampled_from(_EXPONENTS))
            return _apply(_POW_OPS[k], [self.build(depth - 1)])
        op = self.draw(st.sampled_from(self.binary))
        return _apply(op, [self.build(depth - 1), self.build(depth - 1)])


def _validate_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r} must be between {lo} and {hi}")


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
        _validate_int("n_inputs", n_inputs, 1, 3)
    _validate_int("max_depth", max_depth, 1, 8)
    if isinstance(extra_ops, Op):
        extra_ops = [extra_ops]
    try:
        extra_ops = list(extra_ops)
    except TypeError:
        raise InvalidArgument(f"extra_ops={extra_ops!r} must be a list of Op") from None
    for op in extra_ops:
        if not isinstance(op, Op) or op._builtin:
            raise InvalidArgument(f"extra_ops={extra_ops!r} must hold Op instances made with gst.Op(...)")
    if len({op.name for op in extra_ops}) != len(extra_ops):
        raise InvalidArgument(f"extra_ops={extra_ops!r} has two ops with the same name")
    if reduction is None:
        reductions = list(_REDUCTIONS)
    elif isinstance(reduction, str):
        reductions = [reduction]
    else:
        reductions = list(reduction)
    if not reductions or any(r not in _REDUCTIONS for r in reductions):
        raise InvalidArgument(f"reduction={reduction!r} must be one of {list(_REDUCTIONS)}, a list of them, or None")

    unary = [op for op in extra_ops if op.arity == 1] + _UNARY_BUILTINS
    binary = _BINARY_BUILTINS + [op for op in extra_ops if op.arity == 2]

    return _draw_expression(n_inputs, max_depth, extra_ops, unary, binary, reductions)


def _renumber(node, mapping):
    if isinstance(node, _Var):
        return _Var(mapping[node.index])
    if isinstance(node, _Apply):
        return _Apply(node.op, tuple(_renumber(a, mapping) for a in node.args))
    return node


@st.composite
def _draw_expression(draw, n_inputs, max_depth, extra_ops, unary, binary, reductions):
    # With n_inputs=None the leaves choose among three variables and the expression takes those it
    # uses (renumbered x, y, z in order): shrinking a leaf's index towards 0 drops an input.
    n = n_inputs if n_inputs is not None else 3
    bounds = (DEFAULT_BOUNDS,) * n
    builder = _Builder(draw, n, unary, binary, bounds, leaf_root=bool(extra_ops))
    node, iv = builder.build(max_depth, root=True)
    used_ops = {x.op for x in _walk(node) if isinstance(x, _Apply)}
    if extra_ops and not used_ops.intersection(extra_ops):
        op = draw(st.sampled_from(extra_ops))
        children = [(node, iv)]
        if op.arity == 2:  # the simplest second argument is another input (y), where broadcasting happens
            j = (draw(st.integers(0, n - 1)) + 1) % n
            children.append((_Var(j), bounds[j]))
        node, iv = _apply(op, children)
    used = sorted({x.index for x in _walk(node) if isinstance(x, _Var)})
    if n_inputs is None:
        n = len(used)
        node = _renumber(node, {old: new for new, old in enumerate(used)})
        bounds = bounds[:n]
    else:
        for j in range(n):
            if j not in used:
                node, iv = _apply(_ADD, [(node, iv), (_Var(j), bounds[j])])
    reduction = draw(st.sampled_from(reductions))
    return Expression(node, n_inputs=n, reduction=reduction, bounds=bounds)
