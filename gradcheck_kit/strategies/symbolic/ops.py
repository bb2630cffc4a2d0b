"""The operations random expressions are built from: :class:`Op` (the user's ops and the built-in ones),
their domains and kinks, and the two functions sympy lacks (``softplus``, ``sigmoid``) with their
numpy versions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.symbolic.intervals import (
    CAP,
    EXP_MAX,
    INF,
    MARGIN,
    SATURATE,
    iv_abs,
    iv_mul,
    iv_pow,
    monotone,
    safe_target,
    sigmoid_float,
    softplus_float,
)

__all__ = [
    "ADD",
    "BINARY_BUILTINS",
    "CONSTANTS",
    "DIV",
    "EXPONENTS",
    "MUL",
    "NUMPY_MODULES",
    "Op",
    "POW_OPS",
    "SUB",
    "UNARY",
    "UNARY_BUILTINS",
    "VARIABLES",
    "np_sigmoid",
    "np_softplus",
    "pow_op",
    "sigmoid",
    "softplus",
]

#: the names of the inputs, in order
VARIABLES = ("x", "y", "z")


# --------------------------------------------------------------------------------------------------
# the two functions sympy lacks, and their numpy versions


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


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


NUMPY_MODULES = [{"softplus": np_softplus, "sigmoid": np_sigmoid}, "numpy"]


# --------------------------------------------------------------------------------------------------
# domains and kinks


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

    Read by the expression machinery: ``builtin`` (one of the kit's own ops), ``safe`` (per argument,
    the closed region random expressions keep it in), :meth:`image_of`, :meth:`display` and
    :meth:`analytic`.
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
        self.builtin = False
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise InvalidArgument(f"name={name!r} must be a Python identifier not starting with '_'")
        if name in _BUILTIN_NAMES or name in _RESERVED or name in VARIABLES:
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
        self.safe = tuple(safe_target(max(ivs, key=lambda iv: iv[1] - iv[0])) for ivs in self.intervals)
        self._interval_fn = None
        self._image_cache: dict = {}
        self._function_class = None

    @classmethod
    def _make_builtin(cls, name, fn, sym, *, arity=1, domain=None, safe=None, interval=None):
        op = cls.__new__(cls)
        op.builtin = True
        op.name = name
        op.fn = fn
        op.sympy = sym
        op.arity = arity
        op.domain = _parse_domain(domain, arity, name)
        op.intervals = tuple((d,) for d in op.domain)
        op.kinks = ((),) * arity
        op.image = None
        op.safe = safe if safe is not None else tuple(safe_target(d) for d in op.domain)
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

    def display(self, *args):
        """The sympy expression printed for this op applied to ``args``."""
        if self.builtin:
            return self.sympy(*args)
        if self._function_class is None:
            self._function_class = type(self.name, (sympy.Function,), {"nargs": self.arity})
        return self._function_class(*args)

    def analytic(self, *args):
        """This op applied to sympy ``args`` as a formula sympy can differentiate."""
        return self.sympy(*args)

    def image_of(self, *ivs):
        """An interval holding this op's values for arguments in the intervals ``ivs``."""
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


def pow_op(k: Fraction) -> Op:
    exponent = int(k) if k.denominator == 1 else float(k)
    sym_k = sympy.Rational(k.numerator, k.denominator)
    positive = k.denominator != 1 or k < 0
    domain = (0, None) if positive else None
    return Op._make_builtin(
        f"pow({k})",
        lambda a: a**exponent,
        lambda s: s**sym_k,
        domain=domain,
        interval=lambda a: iv_pow(a, k),
    )


ADD = Op._make_builtin(
    "add", torch.add, lambda a, b: a + b, arity=2, interval=lambda a, b: (a[0] + b[0], a[1] + b[1])
)
SUB = Op._make_builtin(
    "sub", torch.sub, lambda a, b: a - b, arity=2, interval=lambda a, b: (a[0] - b[1], a[1] - b[0])
)
MUL = Op._make_builtin("mul", torch.mul, lambda a, b: a * b, arity=2, interval=iv_mul)
DIV = Op._make_builtin(
    "div",
    torch.div,
    lambda a, b: a / b,
    arity=2,
    domain=((None, None), (0, None)),  # denominators are kept positive (and >= 0.5)
    interval=lambda a, b: iv_mul(a, (1.0 / b[1], 1.0 / b[0])),
)
UNARY_BUILTINS = [
    Op._make_builtin("sin", torch.sin, sympy.sin, interval=lambda a: (-1.0, 1.0)),
    Op._make_builtin("cos", torch.cos, sympy.cos, interval=lambda a: (-1.0, 1.0)),
    Op._make_builtin(
        "exp",
        torch.exp,
        sympy.exp,
        safe=((-CAP, EXP_MAX),),  # no overflow, values stay below exp(EXP_MAX)
        interval=monotone(math.exp),
    ),
    Op._make_builtin("log", torch.log, sympy.log, domain=(0, None), interval=monotone(math.log)),
    # off the flat tails, where float32 autograd computes 1 - y**2 (or y*(1 - y)) from a y rounded
    # near 1 and its gradient has no correct digit left
    Op._make_builtin(
        "tanh", torch.tanh, sympy.tanh, safe=((-SATURATE, SATURATE),), interval=monotone(math.tanh)
    ),
    Op._make_builtin(
        "sigmoid", torch.sigmoid, sigmoid, safe=((-SATURATE, SATURATE),), interval=monotone(sigmoid_float)
    ),
    Op._make_builtin("softplus", _softplus_torch, softplus, interval=monotone(softplus_float)),
    Op._make_builtin("sqrt", torch.sqrt, sympy.sqrt, domain=(0, None), interval=monotone(math.sqrt)),
    Op._make_builtin(
        "abs",
        torch.abs,
        sympy.Abs,
        safe=((-CAP, -MARGIN),),  # keep off the kink at 0 (and make abs flip the sign)
        interval=iv_abs,
    ),
]
BINARY_BUILTINS = [ADD, SUB, MUL, DIV]
EXPONENTS = [Fraction(2), Fraction(3), Fraction(-1), Fraction(3, 2), Fraction(-1, 2), Fraction(1, 3)]
POW_OPS = {k: pow_op(k) for k in EXPONENTS}
CONSTANTS = [Fraction(2), Fraction(1), Fraction(3), Fraction(1, 2), Fraction(10)]
#: the built-in unary ops by name
UNARY = {op.name: op for op in UNARY_BUILTINS}
_BUILTIN_NAMES = {op.name for op in UNARY_BUILTINS + BINARY_BUILTINS} | {"pow"}
