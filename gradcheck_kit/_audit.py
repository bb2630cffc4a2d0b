"""The audit: a catalogue of torch operations and the runner behind ``gradcheck-kit audit``.

Each :class:`AuditOp` names an operation as torch spells it (``tanh``, ``softmax``, ``layer_norm``,
``linalg.solve``), the function checked (the op, wrapped where the numerical side needs it, as
torch's own OpInfo ``gradcheck_wrapper_*`` do: ``linalg.eigvalsh(A + A.mT)``), and an input builder
that draws inputs valid for the op from a private generator: positive values for ``log``,
well-conditioned matrices for ``linalg.solve``, symmetric positive definite ones for ``cholesky``.
Kinks are avoided unless an entry includes them on purpose (``abs`` and ``relu`` at 0, ties in
``amax`` and ``maximum``, ``clamp`` at its bounds), where the checker must accept torch's convention.

Functions of the user's (``--ops mylib.ops:my_sparsemax=4,8:float32``) join the catalogue as
:func:`function_op` entries of the family ``user``.

Every op is checked in float32 and float64 with :func:`gradcheck_kit.check_gradients` (first and,
outside ``--quick``, second order; forward mode where the op supports it) and, for elementwise ops,
inside random expressions drawn from :func:`gradcheck_kit.strategies.expressions` when available.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import time
import zlib
from typing import Any, Callable, Sequence, TextIO

import torch
import torch.nn.functional as F

from gradcheck_kit._text import Style, UsageError, format_ratio, format_table

__all__ = [
    "AuditOp", "KnownIssue", "AuditRow", "AuditResult", "catalogue", "select", "run_audit", "format_results",
    "Progress", "split_ops", "function_op",
]

FAMILIES = ("elementwise", "reduction", "linalg", "normalisation", "convolution", "loss")
#: the family of the user's own MODULE:FUNCTION entries
USER_FAMILY = "user"

#: ops run by ``--quick``: one or two per family, kinks and linear algebra included
QUICK = (
    "tanh",
    "log",
    "relu",
    "softmax",
    "amax",
    "matmul",
    "linalg.solve",
    "layer_norm",
    "conv1d",
    "cross_entropy",
    "mse_loss",
)

VERDICTS = ("pass", "FAIL", "error", "known")
COLOURS = {"pass": "green", "FAIL": "red", "error": "yellow", "known": "yellow"}

#: random expressions per elementwise op and dtype
EXAMPLES_FULL = 20
EXAMPLES_QUICK = 4


@dataclasses.dataclass(frozen=True)
class ExpressionSpec:
    """How random expressions use an elementwise op: its smooth domain and sympy counterpart."""

    domain: tuple[float | None, float | None] | None = None
    sympy: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class KnownIssue:
    """A failure investigated and explained: which dtypes, which checks may fail, and why.

    ``source`` is ``"torch"`` (a limitation of torch's implementation) or ``"gradcheck_kit"`` (a
    limitation of our checker, reported upstream). Only failures of the listed ``checks`` are
    covered; any other failure of the op is still a FAIL."""

    dtypes: tuple[str, ...]
    checks: tuple[str, ...]
    reason: str
    source: str = "torch"

    def describe(self) -> str:
        who = "known torch issue" if self.source == "torch" else "known gradcheck_kit limitation"
        return f"{who}: {self.reason}"


_SECOND_ORDER = ("second_order", "second_order_forward")
_TRIGAMMA = (
    "torch's trigamma (digamma's derivative, lgamma's second) is a truncated asymptotic series "
    "(calc_trigamma in ATen's Math.h), accurate to ~5e-10 relative against mpmath, not to float64's 1e-16"
)
_NEAR_ONE = KnownIssue(
    ("float64",),
    ("expressions",),
    "log(x/10 + 1) at x = 0: the rounding of the argument near 1 is missing from the numerical error "
    "estimate (|diff| 7e-12 vs allowed 4.8e-12; reported)",
    source="gradcheck_kit",
)


@dataclasses.dataclass(frozen=True)
class AuditOp:
    """One catalogue entry.

    ``make_inputs(dtype, generator)`` returns the positional inputs (differentiated tensors have
    ``requires_grad=True``); ``call`` says how the op is applied (``conv1d(x, w, b, padding=1)``);
    ``expression`` is set for elementwise unary ops that random expressions use: the open interval
    where the op is defined and smooth (``None`` for an open end; Hypothesis keeps arguments inside)
    and, where numpy can evaluate it, a sympy counterpart that gives an analytic gradient
    independent of torch.
    """

    name: str
    family: str
    fn: Callable[..., Any]
    make_inputs: Callable[[torch.dtype, torch.Generator], tuple]
    call: str
    note: str = ""
    order: int = 2
    expression: ExpressionSpec | None = None
    known: tuple[KnownIssue, ...] = ()
    #: the dtypes this op runs in (``None``: every dtype the audit runs)
    dtypes: tuple[str, ...] | None = None

    def known_issues(self, dtype: str) -> tuple[KnownIssue, ...]:
        """The known issues that explain failures of this op in ``dtype``."""
        return tuple(k for k in self.known if dtype in k.dtypes)

    @property
    def quick(self) -> bool:
        return self.name in QUICK


# --------------------------------------------------------------------------------------------
# input builders (values drawn in float64 from the private generator, then cast)


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _away_from_zero(gen: torch.Generator, shape: tuple[int, ...], lo: float = 0.5, hi: float = 2.0) -> torch.Tensor:
    sign = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return sign * _uniform(gen, shape, lo, hi)


def _as(values: torch.Tensor, dtype: torch.dtype, grad: bool = True) -> torch.Tensor:
    return values.to(dtype).requires_grad_(grad)


def _well_conditioned(gen: torch.Generator, n: int, m: int | None = None) -> torch.Tensor:
    """A random matrix with singular values in [1, 3]: condition number at most 3."""
    m = n if m is None else m
    q1, _ = torch.linalg.qr(_randn(gen, n, n))
    q2, _ = torch.linalg.qr(_randn(gen, m, m))
    k = min(n, m)
    s = torch.linspace(1.0, 3.0, k, dtype=torch.float64)
    s = s[torch.randperm(k, generator=gen)]
    middle = torch.zeros(n, m, dtype=torch.float64)
    middle[range(k), range(k)] = s
    return q1 @ middle @ q2


def _spd_half(gen: torch.Generator, n: int) -> torch.Tensor:
    """``B`` such that ``B + B.mT`` is symmetric positive definite with eigenvalues in [1, 3]."""
    q, _ = torch.linalg.qr(_randn(gen, n, n))
    spd = q @ torch.diag(torch.linspace(1.0, 3.0, n, dtype=torch.float64)) @ q.mT
    noise = _randn(gen, n, n, scale=0.05)
    return spd / 2 + (noise - noise.mT) / 2  # the antisymmetric part cancels in B + B.mT


def _unary(lo: float | None = None, hi: float | None = None, shape: tuple[int, ...] = (3, 4), away: bool = False):
    def build(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        if away:
            values = _away_from_zero(gen, shape)
        elif lo is None:
            values = _randn(gen, *shape)
        else:
            values = _uniform(gen, shape, lo, hi)  # type: ignore[arg-type]
        return (_as(values, dtype),)

    return build


def _with_values(values: Sequence[float], shape: tuple[int, ...] = (3, 4), scale: float = 1.0):
    """Random normal inputs with ``values`` written into the first elements (kinks on purpose)."""

    def build(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        x = _randn(gen, *shape, scale=scale).flatten()
        x[: len(values)] = torch.tensor(values, dtype=torch.float64)
        return (_as(x.reshape(shape), dtype),)

    return build


def _named(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name.replace(".", "_")
    return fn


# --------------------------------------------------------------------------------------------
# the catalogue


def catalogue() -> list[AuditOp]:
    """Every op the audit knows, in the order it runs them."""
    ops: list[AuditOp] = []

    def add(name, family, fn, make_inputs, call, note="", order=2, expr=None, known=None):
        known = tuple(known or ())
        ops.append(AuditOp(name, family, _named(name, fn), make_inputs, call, note, order, expr, known))

    import sympy as sp

    def E(domain=None, sym=None):  # noqa: N802 - reads as a declaration
        return ExpressionSpec(domain, sym)

    def _softplus(s):
        return sp.log(1 + sp.exp(s))

    # ---- elementwise, unary ----
    add("exp", "elementwise", lambda x: torch.exp(x), _unary(), "exp(x)", expr=E((None, 3.5), sp.exp))
    add("log", "elementwise", lambda x: torch.log(x), _unary(0.5, 3.0), "log(x), x in [0.5, 3]", expr=E((0, None), sp.log),
        known=[_NEAR_ONE])
    add("log1p", "elementwise", lambda x: torch.log1p(x), _unary(-0.5, 2.0), "log1p(x), x in [-0.5, 2]",
        expr=E((-1, None), lambda s: sp.log(1 + s)))
    add("expm1", "elementwise", lambda x: torch.expm1(x), _unary(), "expm1(x)", expr=E((None, 3.5), lambda s: sp.exp(s) - 1))
    add("sqrt", "elementwise", lambda x: torch.sqrt(x), _unary(0.5, 3.0), "sqrt(x), x in [0.5, 3]",
        expr=E((0, None), sp.sqrt))
    add("rsqrt", "elementwise", lambda x: torch.rsqrt(x), _unary(0.5, 3.0), "rsqrt(x), x in [0.5, 3]",
        expr=E((0, None), lambda s: 1 / sp.sqrt(s)))
    add("sin", "elementwise", lambda x: torch.sin(x), _unary(), "sin(x)", expr=E(None, sp.sin))
    add("cos", "elementwise", lambda x: torch.cos(x), _unary(), "cos(x)", expr=E(None, sp.cos))
    add("tan", "elementwise", lambda x: torch.tan(x), _unary(-1.2, 1.2), "tan(x), |x| < 1.2", expr=E((-1.5, 1.5), sp.tan))
    add("tanh", "elementwise", lambda x: torch.tanh(x), _unary(), "tanh(x)", expr=E(None, sp.tanh))
    add("sigmoid", "elementwise", lambda x: torch.sigmoid(x), _unary(), "sigmoid(x)", expr=E(None, lambda s: 1 / (1 + sp.exp(-s))))
    add("atan", "elementwise", lambda x: torch.atan(x), _unary(), "atan(x)", expr=E(None, sp.atan))
    add("asin", "elementwise", lambda x: torch.asin(x), _unary(-0.9, 0.9), "asin(x), |x| < 0.9",
        expr=E((-1, 1), sp.asin))
    add("erf", "elementwise", lambda x: torch.erf(x), _unary(), "erf(x)", expr=E())
    add("erfinv", "elementwise", lambda x: torch.erfinv(x), _unary(-0.9, 0.9), "erfinv(x), |x| < 0.9",
        expr=E((-1, 1)))
    add("lgamma", "elementwise", lambda x: torch.lgamma(x), _unary(0.5, 4.0), "lgamma(x), x in [0.5, 4]",
        expr=E((0, None)), known=[KnownIssue(("float64",), _SECOND_ORDER, _TRIGAMMA)])
    add("digamma", "elementwise", lambda x: torch.digamma(x), _unary(0.5, 4.0), "digamma(x), x in [0.5, 4]",
        expr=E((0, None)),
        known=[KnownIssue(("float64",), ("backward", "forward_ad"), _TRIGAMMA)])
    add("reciprocal", "elementwise", lambda x: torch.reciprocal(x), _unary(away=True),
        "reciprocal(x), 0.5 <= |x| <= 2", expr=E((0, None), lambda s: 1 / s))
    add("sinc", "elementwise", lambda x: torch.sinc(x), _unary(), "sinc(x)", expr=E(),
        known=[KnownIssue(("float32",), ("expressions",), "torch's sinc backward, (pi*x*cos(pi*x) - sin(pi*x)) "
                          "/ (pi*x**2), cancels catastrophically near 0 in float32 (1.4% off at x = 1e-3)")])
    add("abs", "elementwise", lambda x: torch.abs(x), _with_values([0.0]), "abs(x), one x exactly 0",
        note="kink at 0 included on purpose (torch: gradient 0 there)", expr=E())
    add("relu", "elementwise", lambda x: F.relu(x), _with_values([0.0, 0.0]), "relu(x), two x exactly 0",
        note="kink at 0 included on purpose (torch: gradient 0 there)", expr=E())
    add("leaky_relu", "elementwise", lambda x: F.leaky_relu(x, 0.1), _with_values([0.0]),
        "leaky_relu(x, 0.1), one x exactly 0", note="kink at 0 included on purpose", expr=E())
    add("hardtanh", "elementwise", lambda x: F.hardtanh(x), _with_values([1.0, -1.0], scale=1.5),
        "hardtanh(x), x = +-1 included", note="kinks at +-1 included on purpose", expr=E())
    add("gelu", "elementwise", lambda x: F.gelu(x), _unary(), "gelu(x)", expr=E())
    add("silu", "elementwise", lambda x: F.silu(x), _unary(), "silu(x)", expr=E(None, lambda s: s / (1 + sp.exp(-s))))
    add("softplus", "elementwise", lambda x: F.softplus(x), _unary(), "softplus(x)", expr=E(None, _softplus))
    add("elu", "elementwise", lambda x: F.elu(x), _unary(away=True), "elu(x), 0.5 <= |x| <= 2", expr=E())
    add("mish", "elementwise", lambda x: F.mish(x), _unary(), "mish(x)", expr=E(None, lambda s: s * sp.tanh(_softplus(s))))
    add("logsigmoid", "elementwise", lambda x: F.logsigmoid(x), _unary(), "logsigmoid(x)", expr=E(None, lambda s: -_softplus(-s)))

    # ---- elementwise, several inputs ----
    def pow_inputs(dtype, gen):
        return _as(_uniform(gen, (3, 4), 0.5, 2.0), dtype), _as(_randn(gen, 3, 4), dtype)

    add("pow", "elementwise", lambda x, y: torch.pow(x, y), pow_inputs, "pow(x, y), x in [0.5, 2]")

    def atan2_inputs(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_away_from_zero(gen, (3, 4)), dtype)

    add("atan2", "elementwise", lambda y, x: torch.atan2(y, x), atan2_inputs, "atan2(y, x), 0.5 <= |x| <= 2")

    def broadcast_inputs(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_away_from_zero(gen, (4,)), dtype)

    add("mul", "elementwise", lambda x, y: torch.mul(x, y), broadcast_inputs, "mul(x[3,4], y[4]) (broadcast)")
    add("div", "elementwise", lambda x, y: torch.div(x, y), broadcast_inputs, "div(x[3,4], y[4]) (broadcast)")

    def clamp_inputs(dtype, gen):
        x = _randn(gen, 3, 4, scale=1.5).flatten()
        x[:2] = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        return (_as(x.reshape(3, 4), dtype),)

    add("clamp", "elementwise", lambda x: torch.clamp(x, -1.0, 1.0), clamp_inputs,
        "clamp(x, -1, 1), x = +-1 included", note="kinks at the bounds included on purpose")

    def maximum_inputs(dtype, gen):
        x, y = _randn(gen, 3, 4), _randn(gen, 3, 4)
        y[0, :2] = x[0, :2]  # ties
        return _as(x, dtype), _as(y, dtype)

    add("maximum", "elementwise", lambda x, y: torch.maximum(x, y), maximum_inputs, "maximum(x, y), two ties",
        note="ties included on purpose (torch splits the gradient evenly)")

    def where_inputs(dtype, gen):
        cond = torch.rand((3, 4), generator=gen) < 0.5
        return cond, _as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 3, 4), dtype)

    add("where", "elementwise", lambda c, x, y: torch.where(c, x, y), where_inputs, "where(cond, x, y)")

    # ---- reductions ----
    add("sum", "reduction", lambda x: torch.sum(x, dim=1), _unary(), "sum(x, dim=1)")
    add("mean", "reduction", lambda x: torch.mean(x), _unary(), "mean(x)")
    add("prod", "reduction", lambda x: torch.prod(x, dim=1), _with_values([0.0]), "prod(x, dim=1), one x exactly 0",
        note="a zero factor included on purpose (torch's special backward path)")
    add("amax", "reduction", lambda x: torch.amax(x, dim=1), _amax_inputs, "amax(x, dim=1), ties in row 0",
        note="ties included on purpose (torch splits the gradient evenly)")
    add("max", "reduction", lambda x: torch.max(x, dim=1).values, _unary(), "max(x, dim=1).values")
    add("logsumexp", "reduction", lambda x: torch.logsumexp(x, dim=1), _unary(), "logsumexp(x, dim=1)")
    add("var", "reduction", lambda x: torch.var(x, dim=1), _unary(), "var(x, dim=1)")
    add("std", "reduction", lambda x: torch.std(x, dim=1), _unary(), "std(x, dim=1)")
    add("linalg.vector_norm", "reduction", lambda x: torch.linalg.vector_norm(x, dim=1), _unary(),
        "linalg.vector_norm(x, dim=1)")
    add("cumsum", "reduction", lambda x: torch.cumsum(x, dim=1), _unary(), "cumsum(x, dim=1)")
    add("cumprod", "reduction", lambda x: torch.cumprod(x, dim=1), _unary(away=True),
        "cumprod(x, dim=1), 0.5 <= |x| <= 2")
    add("softmax", "reduction", lambda x: torch.softmax(x, dim=-1), _unary(), "softmax(x, dim=-1)")
    add("log_softmax", "reduction", lambda x: torch.log_softmax(x, dim=-1), _unary(), "log_softmax(x, dim=-1)")
    add("sort", "reduction", lambda x: torch.sort(x, dim=1).values, _unary(), "sort(x, dim=1).values")
    add("trace", "reduction", lambda x: torch.trace(x), _unary(shape=(4, 4)), "trace(x[4,4])")

    # ---- linear algebra ----
    def matmul_inputs(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 4, 5), dtype)

    add("matmul", "linalg", lambda a, b: torch.matmul(a, b), matmul_inputs, "matmul(a[3,4], b[4,5])")

    def bmm_inputs(dtype, gen):
        return _as(_randn(gen, 2, 3, 4), dtype), _as(_randn(gen, 2, 4, 2), dtype)

    add("bmm", "linalg", lambda a, b: torch.bmm(a, b), bmm_inputs, "bmm(a[2,3,4], b[2,4,2])")
    add("einsum", "linalg", lambda a, b: torch.einsum("ij,jk->ik", a, b), matmul_inputs,
        "einsum('ij,jk->ik', a, b)")

    def solve_inputs(dtype, gen):
        return _as(_well_conditioned(gen, 4), dtype), _as(_randn(gen, 4, 2), dtype)

    add("linalg.solve", "linalg", lambda a, b: torch.linalg.solve(a, b), solve_inputs,
        "linalg.solve(A[4,4], B[4,2]), cond(A) <= 3")

    def square(dtype, gen):
        return (_as(_well_conditioned(gen, 4), dtype),)

    add("linalg.inv", "linalg", lambda a: torch.linalg.inv(a), square, "linalg.inv(A[4,4]), cond(A) <= 3")
    add("linalg.det", "linalg", lambda a: torch.linalg.det(a), square, "linalg.det(A[4,4]), cond(A) <= 3")
    add("linalg.slogdet", "linalg", lambda a: torch.linalg.slogdet(a).logabsdet, square,
        "linalg.slogdet(A[4,4]).logabsdet")

    def spd(dtype, gen):
        return (_as(_spd_half(gen, 4), dtype),)

    add("linalg.cholesky", "linalg", lambda a: torch.linalg.cholesky(a + a.mT), spd,
        "linalg.cholesky(A + A.mT), A + A.mT positive definite",
        note="symmetrised as torch's OpInfo does: cholesky reads one triangle only")
    add("linalg.eigvalsh", "linalg", lambda a: torch.linalg.eigvalsh(a + a.mT), spd,
        "linalg.eigvalsh(A + A.mT), distinct eigenvalues", note="symmetrised as torch's OpInfo does")

    def eigh(a):
        values, vectors = torch.linalg.eigh(a + a.mT)
        return values, vectors.abs()

    add("linalg.eigh", "linalg", eigh, spd, "linalg.eigh(A + A.mT) -> (L, |V|)",
        note="|V|: eigenvectors are defined up to sign, as in torch's OpInfo")
    add("linalg.qr", "linalg", lambda a: torch.linalg.qr(a), square, "linalg.qr(A[4,4]) -> (Q, R)")
    add("linalg.svdvals", "linalg", lambda a: torch.linalg.svdvals(a), square,
        "linalg.svdvals(A[4,4]), distinct singular values")

    def small_square(dtype, gen):
        return (_as(_randn(gen, 3, 3, scale=0.5), dtype),)

    add("linalg.matrix_exp", "linalg", lambda a: torch.linalg.matrix_exp(a), small_square,
        "linalg.matrix_exp(A[3,3])")

    def tall(dtype, gen):
        return (_as(_well_conditioned(gen, 4, 3), dtype),)

    add("linalg.pinv", "linalg", lambda a: torch.linalg.pinv(a), tall, "linalg.pinv(A[4,3]), full rank")

    def cross_inputs(dtype, gen):
        return _as(_randn(gen, 4, 3), dtype), _as(_randn(gen, 4, 3), dtype)

    add("linalg.cross", "linalg", lambda a, b: torch.linalg.cross(a, b), cross_inputs, "linalg.cross(a[4,3], b[4,3])")
    add("linalg.matrix_norm", "linalg", lambda a: torch.linalg.matrix_norm(a), _unary(shape=(3, 4)),
        "linalg.matrix_norm(A[3,4]) (Frobenius)")

    # ---- normalisation, attention ----
    def layer_norm_inputs(dtype, gen):
        return _as(_randn(gen, 2, 3, 5), dtype), _as(_randn(gen, 5), dtype), _as(_randn(gen, 5), dtype)

    add("layer_norm", "normalisation", lambda x, w, b: F.layer_norm(x, (5,), w, b), layer_norm_inputs,
        "layer_norm(x[2,3,5], (5,), w, b)")

    def group_norm_inputs(dtype, gen):
        return _as(_randn(gen, 2, 4, 3), dtype), _as(_randn(gen, 4), dtype), _as(_randn(gen, 4), dtype)

    add("group_norm", "normalisation", lambda x, w, b: F.group_norm(x, 2, w, b), group_norm_inputs,
        "group_norm(x[2,4,3], 2 groups, w, b)")
    add("batch_norm", "normalisation", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        group_norm_inputs, "batch_norm(x[2,4,3], w, b, training=True)",
        known=[KnownIssue(("float64",), _SECOND_ORDER, "the numerical second derivative's error estimate is "
                          "too small here (|diff| 4e-11 vs allowed 2e-11); torch's double backward agrees with an "
                          "independent composite formula to 7e-16 (reported)", source="gradcheck_kit")])
    add("instance_norm", "normalisation", lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
        group_norm_inputs, "instance_norm(x[2,4,3], w, b)")
    add("rms_norm", "normalisation", lambda x, w: F.rms_norm(x, (5,), w),
        lambda dtype, gen: layer_norm_inputs(dtype, gen)[:2], "rms_norm(x[2,3,5], (5,), w)")
    add("normalize", "normalisation", lambda x: F.normalize(x, dim=1), _unary(), "normalize(x, dim=1)")

    def attention_inputs(dtype, gen):
        return tuple(_as(_randn(gen, 1, 2, 3, 4), dtype) for _ in range(3))

    add("scaled_dot_product_attention", "normalisation",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v), attention_inputs,
        "scaled_dot_product_attention(q, k, v [1,2,3,4])", order=1,
        note="first order only: torch has no double backward for the CPU flash-attention kernel")

    # ---- convolution, pooling, linear layers ----
    def conv1d_inputs(dtype, gen):
        return _as(_randn(gen, 2, 3, 7), dtype), _as(_randn(gen, 4, 3, 3), dtype), _as(_randn(gen, 4), dtype)

    add("conv1d", "convolution", lambda x, w, b: F.conv1d(x, w, b, padding=1), conv1d_inputs,
        "conv1d(x[2,3,7], w[4,3,3], b, padding=1)")

    def conv2d_inputs(dtype, gen):
        return _as(_randn(gen, 1, 2, 5, 5), dtype), _as(_randn(gen, 3, 2, 3, 3), dtype), _as(_randn(gen, 3), dtype)

    add("conv2d", "convolution", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), conv2d_inputs,
        "conv2d(x[1,2,5,5], w[3,2,3,3], b, stride=2, padding=1)")

    def conv_t_inputs(dtype, gen):
        return _as(_randn(gen, 2, 3, 5), dtype), _as(_randn(gen, 3, 2, 3), dtype), _as(_randn(gen, 2), dtype)

    add("conv_transpose1d", "convolution", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2), conv_t_inputs,
        "conv_transpose1d(x[2,3,5], w[3,2,3], b, stride=2)")

    def pool_inputs(dtype, gen):
        return (_as(_randn(gen, 1, 2, 4, 4), dtype),)

    add("avg_pool2d", "convolution", lambda x: F.avg_pool2d(x, 2), pool_inputs, "avg_pool2d(x[1,2,4,4], 2)")
    add("max_pool2d", "convolution", lambda x: F.max_pool2d(x, 2), pool_inputs,
        "max_pool2d(x[1,2,4,4], 2), no ties")
    add("interpolate", "convolution",
        lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), pool_inputs,
        "interpolate(x[1,2,4,4], scale_factor=2, mode='bilinear')")

    def linear_inputs(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 2, 4), dtype), _as(_randn(gen, 2), dtype)

    add("linear", "convolution", lambda x, w, b: F.linear(x, w, b), linear_inputs, "linear(x[3,4], w[2,4], b[2])")

    def embedding_inputs(dtype, gen):
        return torch.randint(0, 5, (2, 3), generator=gen), _as(_randn(gen, 5, 4), dtype)

    add("embedding", "convolution", lambda i, w: F.embedding(i, w), embedding_inputs,
        "embedding(indices[2,3], w[5,4]), repeated indices")

    # ---- losses ----
    def logits_target(dtype, gen):
        return _as(_randn(gen, 4, 5), dtype), torch.randint(0, 5, (4,), generator=gen)

    add("cross_entropy", "loss", lambda x, t: F.cross_entropy(x, t), logits_target, "cross_entropy(x[4,5], t[4])")
    add("nll_loss", "loss", lambda x, t: F.nll_loss(torch.log_softmax(x, dim=1), t), logits_target,
        "nll_loss(log_softmax(x[4,5]), t[4])")

    def pair(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 3, 4), dtype)

    add("mse_loss", "loss", lambda x, y: F.mse_loss(x, y), pair, "mse_loss(x, y), both differentiated")
    add("l1_loss", "loss", lambda x, y: F.l1_loss(x, y), pair, "l1_loss(x, y), x != y")
    add("smooth_l1_loss", "loss", lambda x, y: F.smooth_l1_loss(x, y), pair, "smooth_l1_loss(x, y)")
    add("huber_loss", "loss", lambda x, y: F.huber_loss(x, y, delta=0.5), pair, "huber_loss(x, y, delta=0.5)")

    def probs_target(dtype, gen):
        return _as(_uniform(gen, (3, 4), 0.1, 0.9), dtype), _as(_uniform(gen, (3, 4), 0.0, 1.0), dtype, grad=False)

    add("binary_cross_entropy", "loss", lambda p, t: F.binary_cross_entropy(p, t), probs_target,
        "binary_cross_entropy(p in [0.1, 0.9], t)")

    def logits_soft_target(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_uniform(gen, (3, 4), 0.0, 1.0), dtype)

    add("binary_cross_entropy_with_logits", "loss", lambda x, t: F.binary_cross_entropy_with_logits(x, t),
        logits_soft_target, "binary_cross_entropy_with_logits(x, t), both differentiated")

    def kl_inputs(dtype, gen):
        return _as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 3, 4), dtype)

    add("kl_div", "loss",
        lambda x, y: F.kl_div(torch.log_softmax(x, 1), torch.softmax(y, 1), reduction="batchmean"), kl_inputs,
        "kl_div(log_softmax(x), softmax(y), reduction='batchmean')")
    add("cosine_similarity", "loss", lambda x, y: F.cosine_similarity(x, y), pair, "cosine_similarity(x[3,4], y[3,4])")

    def gaussian_inputs(dtype, gen):
        return (_as(_randn(gen, 3, 4), dtype), _as(_randn(gen, 3, 4), dtype),
                _as(_uniform(gen, (3, 4), 0.5, 2.0), dtype))

    add("gaussian_nll_loss", "loss", lambda x, t, v: F.gaussian_nll_loss(x, t, v), gaussian_inputs,
        "gaussian_nll_loss(x, t, var in [0.5, 2])")
    add("poisson_nll_loss", "loss", lambda x, t: F.poisson_nll_loss(x, t), kl_inputs,
        "poisson_nll_loss(x, t) (log input)")
    return ops


def _amax_inputs(dtype: torch.dtype, gen: torch.Generator) -> tuple:
    x = _randn(gen, 3, 4)
    x[0, 1] = x[0, 2] = x[0].abs().max() + 0.5  # a tie for the maximum of row 0
    return (_as(x, dtype),)


def _normalise_name(name: str) -> str:
    name = name.strip()
    for prefix in ("torch.nn.functional.", "nn.functional.", "F.", "torch.", "Tensor."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def select(ops: Sequence[AuditOp], names: Sequence[str] | None, *, quick: bool = False) -> list[AuditOp]:
    """The ops named (as torch spells them; ``torch.`` and ``nn.functional.`` prefixes allowed), in
    catalogue order; all of them, or the quick subset, when ``names`` is None.

    Raises :class:`UsageError` for an unknown name, listing close matches.
    """
    by_name = {op.name: op for op in ops}
    if names is None:
        return [op for op in ops if op.quick] if quick else list(ops)
    chosen: list[str] = []
    for raw in names:
        name = _normalise_name(raw)
        if name not in by_name and f"linalg.{name}" in by_name:
            name = f"linalg.{name}"
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"--ops: unknown op {raw!r}{hint} ('gradcheck-kit audit --list' lists all)")
        if name not in chosen:
            chosen.append(name)
    return [op for op in ops if op.name in chosen]


def split_ops(values: Sequence[str]) -> list[str]:
    """The entries of every ``--ops`` value: comma-separated, where the commas of a
    ``MODULE:FUNCTION=SHAPE`` entry's shapes stay with it (``f=4,8:float32,tanh`` is two entries).

    Raises :class:`UsageError` when no entry is left (``--ops ","``)."""
    entries: list[str] = []
    for value in values:
        current: list[str] = []
        for token in value.split(","):
            token = token.strip()
            continues = current and "=" in current[0] and (not token or token[0] in "0123456789?():;[]")
            if continues:
                current.append(token)
                continue
            if current:
                entries.append(",".join(current))
            current = [token] if token else []
        if current:
            entries.append(",".join(current))
    if not entries:
        raise UsageError(f"--ops {','.join(values)!r}: no op names given ('gradcheck-kit audit --list' lists them)")
    return entries


def is_function_entry(entry: str) -> bool:
    """``MODULE:FUNCTION`` (with or without ``=SHAPES``), not a catalogue name."""
    return ":" in entry.partition("=")[0]


def function_op(
    target: str,
    fn: Callable[..., Any],
    specs: Sequence[Any],
    explicit: Sequence[bool],
    make_input: Callable[..., Any],
    order: int = 1,
) -> AuditOp:
    """An audit entry for the user's function ``target``: ``specs`` (``InputSpec``) are its inputs;
    a floating input whose dtype was not written (``explicit`` False) is drawn in each dtype of the
    audit, written ones keep theirs (when all are written, the op runs in that dtype only)."""
    floating = [i for i, spec in enumerate(specs) if spec.dtype in _FLOATING_NAMES]
    if not floating:
        raise UsageError(f"--ops {target!r}: no floating input to differentiate among {len(specs)} input(s)")
    fixed = None
    if all(explicit[i] for i in floating):
        fixed = (specs[floating[0]].dtype,)

    def make_inputs(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        name = str(dtype).replace("torch.", "")
        return tuple(
            make_input(spec if explicit[i] or spec.dtype not in _FLOATING_NAMES else dataclasses.replace(spec, dtype=name), gen)
            for i, spec in enumerate(specs)
        )

    shown = ", ".join(
        (",".join(str(s) for s in spec.shape) or "()") + (f":{spec.dtype}" if explicit[i] else "")
        for i, spec in enumerate(specs)
    )
    return AuditOp(target, USER_FAMILY, fn, make_inputs, f"{target}({shown})", order=order, dtypes=fixed)


_FLOATING_NAMES = frozenset({"float64", "float32", "float16", "bfloat16", "complex128", "complex64"})


# --------------------------------------------------------------------------------------------
# running


@dataclasses.dataclass
class AuditRow:
    """The verdict for one op in one dtype."""

    op: str
    family: str
    dtype: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    worst_ratio: float | None = None
    elapsed: float = 0.0
    details: list[str] = dataclasses.field(default_factory=list)
    report: dict[str, Any] | None = None
    expressions: int = 0
    known: tuple[KnownIssue, ...] = ()
    failed_checks: list[str] = dataclasses.field(default_factory=list)
    #: the function itself failed (raised, returned no tensors): its report's ``fn_failed``
    fn_failed: bool = False

    @property
    def known_issue(self) -> str:
        """Why this row's failures are expected ('' when they are not, or when nothing failed)."""
        if not self.failed or not self.known:
            return ""
        if not set(self.failed_checks) <= {c for k in self.known for c in k.checks}:
            return ""
        return "; ".join(k.describe() for k in self.known if set(k.checks) & set(self.failed_checks))

    @property
    def verdict(self) -> str:
        if self.failed:
            return "known" if self.known_issue else "FAIL"
        if self.errors:
            return "error"
        return "pass"

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "known")

    def checks_cell(self) -> str:
        ran = self.passed + self.failed + self.errors
        cell = f"{self.passed}/{ran}"
        if self.skipped:
            cell += f" +{self.skipped} skipped"
        return cell

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "family": self.family,
            "dtype": self.dtype,
            "verdict": self.verdict,
            "checks": {"passed": self.passed, "failed": self.failed, "skipped": self.skipped, "errors": self.errors},
            "expressions": self.expressions,
            "worst_ratio": _finite_or_str(self.worst_ratio),
            "elapsed": round(self.elapsed, 4),
            "details": self.details,
            "known_issue": self.known_issue,
            "failed_checks": self.failed_checks,
            "fn_failed": self.fn_failed,
            "report": self.report,
        }


def _finite_or_str(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


@dataclasses.dataclass
class AuditResult:
    rows: list[AuditRow]
    elapsed: float
    seed: int
    quick: bool
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    expressions_available: bool = False

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        from gradcheck_kit import __version__

        counts = {v: sum(1 for r in self.rows if r.verdict == v) for v in VERDICTS}
        return {
            "ok": self.ok,
            "torch": torch.__version__,
            "gradcheck_kit": __version__,
            "seed": self.seed,
            "quick": self.quick,
            "elapsed": round(self.elapsed, 3),
            "expressions": self.expressions_available,
            "summary": {"rows": len(self.rows), "passed": counts["pass"], "failed": counts["FAIL"],
                        "errors": counts["error"], "known": counts["known"]},
            "results": [row.to_dict() for row in self.rows],
            "notes": self.notes,
        }


class Progress:
    """Progress on stderr: one rewritten line on a terminal, one line per op and dtype otherwise."""

    def __init__(self, stream: TextIO, style: Style):
        self.stream = stream
        self.style = style
        isatty = getattr(stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.width = 0

    def start(self, index: int, total: int, op: AuditOp, dtype: str) -> None:
        self.prefix = f"[{index:>{len(str(total))}}/{total}] {op.name} {dtype}"
        if self.live:
            self.stream.write(f"\r\x1b[K{self.prefix} ...")
            self.stream.flush()

    def done(self, row: AuditRow) -> None:
        colour = COLOURS[row.verdict]
        line = f"{self.prefix}: {self.style(row.verdict, colour)} ({row.elapsed:.2f} s)"
        if self.live:
            self.stream.write(f"\r\x1b[K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run_audit(
    ops: Sequence[AuditOp],
    *,
    dtypes: Sequence[str] = ("float32", "float64"),
    quick: bool = False,
    examples: int | None = None,
    seed: int = 0,
    order: int | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> AuditResult:
    """Check every op in every dtype; never raises for an op that fails or errors.

    A failure explained by a :class:`KnownIssue` of the op (``AuditOp.known``: those dtypes, only
    those checks failing) gets the verdict ``known`` and does not fail the audit, unless ``strict``."""
    import gradcheck_kit as gk

    expressions = _expressions_module()
    n_examples = examples if examples is not None else (EXAMPLES_QUICK if quick else EXAMPLES_FULL)
    start = time.perf_counter()
    rows: list[AuditRow] = []
    total = sum(len(op.dtypes or dtypes) for op in ops)
    index = 0
    for op in ops:
        for dtype_name in op.dtypes or dtypes:
            index += 1
            if progress is not None:
                progress.start(index, total, op, dtype_name)
            highest = min(op.order, order if order is not None else (1 if quick else 2))
            row = _audit_one(gk, op, dtype_name, seed=seed, order=highest, strict=strict)
            if expressions is not None and op.expression is not None and n_examples > 0:
                _expression_checks(row, op, dtype_name, n_examples, seed, expressions)
            rows.append(row)
            if progress is not None:
                progress.done(row)
    if progress is not None:
        progress.finish()
    notes = {op.name: op.note for op in ops if op.note}
    return AuditResult(rows, time.perf_counter() - start, seed, quick, notes, expressions is not None)


def _op_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _audit_one(gk: Any, op: AuditOp, dtype_name: str, *, seed: int, order: int, strict: bool = False) -> AuditRow:
    row = AuditRow(op.name, op.family, dtype_name, known=() if strict else op.known_issues(dtype_name))
    t0 = time.perf_counter()
    try:
        gen = torch.Generator().manual_seed(_op_seed(seed, op.name))
        inputs = op.make_inputs(getattr(torch, dtype_name), gen)
        report = gk.check_gradients(op.fn, *inputs, order=order, forward_ad="auto", seed=seed)
    except Exception as exc:  # the checker itself failed: say so, keep auditing
        row.errors += 1
        row.details.append(f"check_gradients raised {type(exc).__name__}: {_first_line(exc)}")
        row.elapsed = time.perf_counter() - t0
        return row
    _absorb_report(row, report)
    row.elapsed = time.perf_counter() - t0
    return row


def _absorb_report(row: AuditRow, report: Any) -> None:
    for check in getattr(report, "checks", []):
        status = getattr(check, "status", "passed")
        if status == "passed":
            row.passed += 1
        elif status == "failed":
            row.failed += 1
            row.failed_checks.append(getattr(check, "name", "?"))
        elif status == "skipped":
            row.skipped += 1
        else:
            row.errors += 1
    if not report.ok and not row.failed and not row.errors:
        # a report that failed without a failed check (mismatches or errors only)
        if getattr(report, "mismatches", None):
            row.failed += 1
            row.failed_checks.append("report")
        else:
            row.errors += 1
    row.fn_failed = row.fn_failed or bool(getattr(report, "fn_failed", False))
    worst = getattr(report, "worst_ratio", None)
    if worst is not None:
        row.worst_ratio = worst if row.worst_ratio is None else max(row.worst_ratio, worst)
    if not report.ok:
        row.details.append(str(report))
    try:
        row.report = report.to_dict()
    except Exception:  # pragma: no cover - a report that cannot be serialised is still shown
        row.report = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# random expressions around elementwise ops


def _expressions_module() -> Any:
    """The expressions strategy, or None where it is not part of this build."""
    try:
        import importlib

        importlib.import_module("gradcheck_kit.strategies.symbolic")
        from gradcheck_kit import strategies as gst

        gst.expressions  # noqa: B018
        gst.Op  # noqa: B018
    except (ImportError, AttributeError):
        return None
    return gst


def _expression_checks(row: AuditRow, op: AuditOp, dtype_name: str, n: int, seed: int, gst: Any) -> None:
    """Up to ``n`` random expressions containing ``op`` (Hypothesis, shrinking a failure): autograd
    against finite differences (``check_gradients``) and, where every op has a sympy counterpart,
    against the expression's analytic gradient. Adds one check, passed or failed, to ``row``."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    import gradcheck_kit as gk

    t0 = time.perf_counter()
    spec = op.expression
    dtype = getattr(torch, dtype_name)
    try:
        user_op = gst.Op(f"torch_{op.name}", op.fn, sympy=spec.sympy, domain=spec.domain)
        strategy = gst.expressions(extra_ops=[user_op], max_depth=2)
    except Exception as exc:
        row.errors += 1
        row.details.append(f"random expressions: could not register {op.name}: {type(exc).__name__}: {exc}")
        return
    state: dict[str, Any] = {"count": 0, "failure": None, "worst": None}

    def probe(data: Any) -> None:
        expr = data.draw(strategy, label="expression")
        xs = data.draw(expr.inputs(dtype=dtype, max_side=3), label="inputs")
        state["count"] += 1
        report = gk.check_gradients(expr, *xs, seed=seed, forward_ad=False)
        worst = getattr(report, "worst_ratio", None)
        if worst is not None and math.isfinite(worst):
            state["worst"] = worst if state["worst"] is None else max(state["worst"], worst)
        problems = [] if report.ok else [str(report)]
        if expr.has_analytic_gradient:
            grad_outputs = data.draw(expr.grad_outputs(*xs), label="grad_outputs")
            try:
                gk.assert_grad_equals(
                    expr, tuple(xs), expr.gradient(*xs, grad_outputs=grad_outputs), grad_outputs=grad_outputs
                )
            except AssertionError as exc:
                problems.append(f"autograd against the sympy gradient: {exc}")
        if problems:
            shapes = ", ".join(f"{tuple(x.shape)}" for x in xs)
            state["failure"] = f"random expression {expr} on inputs of shape {shapes}:\n" + "\n".join(problems)
            raise _ExpressionFailed

    test = given(st.data())(probe)
    test = settings(
        max_examples=n,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )(test)
    test = hypothesis_seed(_op_seed(seed, f"{op.name}/{dtype_name}"))(test)
    try:
        test()
    except _ExpressionFailed:
        row.failed += 1
        row.failed_checks.append("expressions")
        row.details.append(state["failure"])
    except Exception as exc:  # the strategy or the checker broke: report it, keep auditing
        row.errors += 1
        row.details.append(f"random expressions with {op.name} raised {type(exc).__name__}: {_first_line(exc)}")
    else:
        row.passed += 1
    row.expressions += state["count"]
    if state["worst"] is not None:
        row.worst_ratio = state["worst"] if row.worst_ratio is None else max(row.worst_ratio, state["worst"])
    row.elapsed += time.perf_counter() - t0


class _ExpressionFailed(Exception):
    """Raised inside the Hypothesis probe so that Hypothesis shrinks the failing expression."""


# --------------------------------------------------------------------------------------------
# output


def format_results(result: AuditResult, style: Style) -> str:
    """The closing table, the failures' reports, and a summary line."""
    headers = ["op", "family", "dtype", "checks", "verdict", "worst err/allowed", "time"]
    rows = [
        [r.op, r.family, r.dtype, r.checks_cell(), r.verdict, format_ratio(r.worst_ratio), f"{r.elapsed:.2f}s"]
        for r in result.rows
    ]
    colours = COLOURS

    def colour(r: int, c: int, cell: str) -> str:
        if c == 4:
            return style(cell, colours[result.rows[r].verdict])
        return cell

    parts = [format_table(headers, rows, align="lllrlrr", colour=colour)]
    for r in result.rows:
        if r.verdict == "pass":
            continue
        parts.append("")
        reason = f" - {r.known_issue}" if r.verdict == "known" else ""
        parts.append(style(f"{r.verdict}: {r.op} ({r.dtype}){reason}", colours[r.verdict]))
        for detail in r.details:
            parts.append(_indent(_cap_lines(detail, 14)))
    noted = [name for name in dict.fromkeys(r.op for r in result.rows) if name in result.notes]
    if noted:
        parts.append("")
        parts.append("Notes:")
        parts.extend(f"  {name}: {result.notes[name]}" for name in noted)
    counts = {v: sum(1 for r in result.rows if r.verdict == v) for v in VERDICTS}
    n_ops = len(dict.fromkeys(r.op for r in result.rows))
    dtypes = ", ".join(dict.fromkeys(r.dtype for r in result.rows))
    summary = (
        f"{n_ops} ops x {dtypes}: {counts['pass']} passed, {counts['FAIL']} failed, "
        f"{counts['error']} errors{f', {n} known issues' if (n := counts['known']) else ''}"
        f" in {result.elapsed:.1f} s"
        f" (torch {torch.__version__}, seed {result.seed}{', quick' if result.quick else ''}"
        f"{'' if result.expressions_available else ', no random expressions in this build'})"
    )
    parts.append("")
    parts.append(style(summary, "green" if result.ok else "red"))
    return "\n".join(parts)


def _cap_lines(text: str, limit: int) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text
    return "\n".join([*lines[:limit], f"... ({len(lines) - limit} more lines; --json has the full report)"])


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run 'gradcheck-kit audit'")
