"""The catalogue of the audit, as data: one :class:`~gradcheck_kit.audit.AuditOp` per torch operation, by family.

Each entry names the op as torch spells it, the function checked (the op, wrapped where the numerical side
needs it, as torch's own OpInfo ``gradcheck_wrapper_*`` do), how its inputs are drawn, how it is shown
(``call``), and on purpose: kinks and ties it includes (``note``), the highest order checked, the smooth
domain and sympy counterpart random expressions use (``expr``), and the known issues that explain
expected failures (``known``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import sympy as sp
import torch
import torch.nn.functional as F

from gradcheck_kit.audit._builders import (
    amax_inputs,
    as_input,
    away_from_zero,
    randn,
    spd_half,
    unary,
    uniform,
    well_conditioned,
    with_values,
)
from gradcheck_kit.audit._types import AuditOp, ExpressionSpec, KnownIssue

__all__ = ["CATALOGUE", "catalogue", "entry"]

#: an expression spec: the open interval where the op is smooth, and its sympy counterpart
E = ExpressionSpec

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


def entry(
    name: str,
    family: str,
    fn: Callable[..., Any],
    make_inputs: Callable[[torch.dtype, torch.Generator], tuple],
    call: str,
    note: str = "",
    order: int = 2,
    expr: ExpressionSpec | None = None,
    known: Sequence[KnownIssue] = (),
) -> AuditOp:
    """A catalogue entry; ``fn`` is renamed after the op (``linalg.solve`` -> ``linalg_solve``)."""
    fn.__name__ = fn.__qualname__ = name.replace(".", "_")
    return AuditOp(name, family, fn, make_inputs, call, note, order, expr, tuple(known))


def _softplus(s: Any) -> Any:
    return sp.log(1 + sp.exp(s))


def pow_inputs(dtype, gen):
    return as_input(uniform(gen, (3, 4), 0.5, 2.0), dtype), as_input(randn(gen, 3, 4), dtype)


def atan2_inputs(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(away_from_zero(gen, (3, 4)), dtype)


def broadcast_inputs(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(away_from_zero(gen, (4,)), dtype)


def clamp_inputs(dtype, gen):
    x = randn(gen, 3, 4, scale=1.5).flatten()
    x[:2] = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    return (as_input(x.reshape(3, 4), dtype),)


def maximum_inputs(dtype, gen):
    x, y = randn(gen, 3, 4), randn(gen, 3, 4)
    y[0, :2] = x[0, :2]  # ties
    return as_input(x, dtype), as_input(y, dtype)


def where_inputs(dtype, gen):
    cond = torch.rand((3, 4), generator=gen) < 0.5
    return cond, as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 3, 4), dtype)


def matmul_inputs(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 4, 5), dtype)


def bmm_inputs(dtype, gen):
    return as_input(randn(gen, 2, 3, 4), dtype), as_input(randn(gen, 2, 4, 2), dtype)


def solve_inputs(dtype, gen):
    return as_input(well_conditioned(gen, 4), dtype), as_input(randn(gen, 4, 2), dtype)


def square(dtype, gen):
    return (as_input(well_conditioned(gen, 4), dtype),)


def spd(dtype, gen):
    return (as_input(spd_half(gen, 4), dtype),)


def eigh(a):
    values, vectors = torch.linalg.eigh(a + a.mT)
    return values, vectors.abs()


def small_square(dtype, gen):
    return (as_input(randn(gen, 3, 3, scale=0.5), dtype),)


def tall(dtype, gen):
    return (as_input(well_conditioned(gen, 4, 3), dtype),)


def cross_inputs(dtype, gen):
    return as_input(randn(gen, 4, 3), dtype), as_input(randn(gen, 4, 3), dtype)


def layer_norm_inputs(dtype, gen):
    return as_input(randn(gen, 2, 3, 5), dtype), as_input(randn(gen, 5), dtype), as_input(randn(gen, 5), dtype)


def group_norm_inputs(dtype, gen):
    return as_input(randn(gen, 2, 4, 3), dtype), as_input(randn(gen, 4), dtype), as_input(randn(gen, 4), dtype)


def attention_inputs(dtype, gen):
    return tuple(as_input(randn(gen, 1, 2, 3, 4), dtype) for _ in range(3))


def conv1d_inputs(dtype, gen):
    return as_input(randn(gen, 2, 3, 7), dtype), as_input(randn(gen, 4, 3, 3), dtype), as_input(randn(gen, 4), dtype)


def conv2d_inputs(dtype, gen):
    return as_input(randn(gen, 1, 2, 5, 5), dtype), as_input(randn(gen, 3, 2, 3, 3), dtype), as_input(randn(gen, 3), dtype)


def conv_t_inputs(dtype, gen):
    return as_input(randn(gen, 2, 3, 5), dtype), as_input(randn(gen, 3, 2, 3), dtype), as_input(randn(gen, 2), dtype)


def pool_inputs(dtype, gen):
    return (as_input(randn(gen, 1, 2, 4, 4), dtype),)


def linear_inputs(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 2, 4), dtype), as_input(randn(gen, 2), dtype)


def embedding_inputs(dtype, gen):
    return torch.randint(0, 5, (2, 3), generator=gen), as_input(randn(gen, 5, 4), dtype)


def logits_target(dtype, gen):
    return as_input(randn(gen, 4, 5), dtype), torch.randint(0, 5, (4,), generator=gen)


def pair(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 3, 4), dtype)


def probs_target(dtype, gen):
    return as_input(uniform(gen, (3, 4), 0.1, 0.9), dtype), as_input(uniform(gen, (3, 4), 0.0, 1.0), dtype, grad=False)


def logits_soft_target(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(uniform(gen, (3, 4), 0.0, 1.0), dtype)


def kl_inputs(dtype, gen):
    return as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 3, 4), dtype)


def gaussian_inputs(dtype, gen):
    return (as_input(randn(gen, 3, 4), dtype), as_input(randn(gen, 3, 4), dtype),
            as_input(uniform(gen, (3, 4), 0.5, 2.0), dtype))


ELEMENTWISE_UNARY = (
    entry("exp", "elementwise", lambda x: torch.exp(x), unary(), "exp(x)", expr=E((None, 3.5), sp.exp)),
    entry("log", "elementwise", lambda x: torch.log(x), unary(0.5, 3.0), "log(x), x in [0.5, 3]", expr=E((0, None), sp.log),
        known=[_NEAR_ONE]),
    entry("log1p", "elementwise", lambda x: torch.log1p(x), unary(-0.5, 2.0), "log1p(x), x in [-0.5, 2]",
        expr=E((-1, None), lambda s: sp.log(1 + s))),
    entry("expm1", "elementwise", lambda x: torch.expm1(x), unary(), "expm1(x)", expr=E((None, 3.5), lambda s: sp.exp(s) - 1)),
    entry("sqrt", "elementwise", lambda x: torch.sqrt(x), unary(0.5, 3.0), "sqrt(x), x in [0.5, 3]",
        expr=E((0, None), sp.sqrt)),
    entry("rsqrt", "elementwise", lambda x: torch.rsqrt(x), unary(0.5, 3.0), "rsqrt(x), x in [0.5, 3]",
        expr=E((0, None), lambda s: 1 / sp.sqrt(s))),
    entry("sin", "elementwise", lambda x: torch.sin(x), unary(), "sin(x)", expr=E(None, sp.sin)),
    entry("cos", "elementwise", lambda x: torch.cos(x), unary(), "cos(x)", expr=E(None, sp.cos)),
    entry("tan", "elementwise", lambda x: torch.tan(x), unary(-1.2, 1.2), "tan(x), |x| < 1.2", expr=E((-1.5, 1.5), sp.tan)),
    entry("tanh", "elementwise", lambda x: torch.tanh(x), unary(), "tanh(x)", expr=E(None, sp.tanh)),
    entry("sigmoid", "elementwise", lambda x: torch.sigmoid(x), unary(), "sigmoid(x)", expr=E(None, lambda s: 1 / (1 + sp.exp(-s)))),
    entry("atan", "elementwise", lambda x: torch.atan(x), unary(), "atan(x)", expr=E(None, sp.atan)),
    entry("asin", "elementwise", lambda x: torch.asin(x), unary(-0.9, 0.9), "asin(x), |x| < 0.9",
        expr=E((-1, 1), sp.asin)),
    entry("erf", "elementwise", lambda x: torch.erf(x), unary(), "erf(x)", expr=E()),
    entry("erfinv", "elementwise", lambda x: torch.erfinv(x), unary(-0.9, 0.9), "erfinv(x), |x| < 0.9",
        expr=E((-1, 1))),
    entry("lgamma", "elementwise", lambda x: torch.lgamma(x), unary(0.5, 4.0), "lgamma(x), x in [0.5, 4]",
        expr=E((0, None)), known=[KnownIssue(("float64",), _SECOND_ORDER, _TRIGAMMA)]),
    entry("digamma", "elementwise", lambda x: torch.digamma(x), unary(0.5, 4.0), "digamma(x), x in [0.5, 4]",
        expr=E((0, None)),
        known=[KnownIssue(("float64",), ("backward", "forward_ad"), _TRIGAMMA)]),
    entry("reciprocal", "elementwise", lambda x: torch.reciprocal(x), unary(away=True),
        "reciprocal(x), 0.5 <= |x| <= 2", expr=E((0, None), lambda s: 1 / s)),
    entry("sinc", "elementwise", lambda x: torch.sinc(x), unary(), "sinc(x)", expr=E(),
        known=[KnownIssue(("float32",), ("expressions",), "torch's sinc backward, (pi*x*cos(pi*x) - sin(pi*x)) "
                          "/ (pi*x**2), cancels catastrophically near 0 in float32 (1.4% off at x = 1e-3)")]),
    entry("abs", "elementwise", lambda x: torch.abs(x), with_values([0.0]), "abs(x), one x exactly 0",
        note="kink at 0 included on purpose (torch: gradient 0 there)", expr=E()),
    entry("relu", "elementwise", lambda x: F.relu(x), with_values([0.0, 0.0]), "relu(x), two x exactly 0",
        note="kink at 0 included on purpose (torch: gradient 0 there)", expr=E()),
    entry("leaky_relu", "elementwise", lambda x: F.leaky_relu(x, 0.1), with_values([0.0]),
        "leaky_relu(x, 0.1), one x exactly 0", note="kink at 0 included on purpose", expr=E()),
    entry("hardtanh", "elementwise", lambda x: F.hardtanh(x), with_values([1.0, -1.0], scale=1.5),
        "hardtanh(x), x = +-1 included", note="kinks at +-1 included on purpose", expr=E()),
    entry("gelu", "elementwise", lambda x: F.gelu(x), unary(), "gelu(x)", expr=E()),
    entry("silu", "elementwise", lambda x: F.silu(x), unary(), "silu(x)", expr=E(None, lambda s: s / (1 + sp.exp(-s)))),
    entry("softplus", "elementwise", lambda x: F.softplus(x), unary(), "softplus(x)", expr=E(None, _softplus)),
    entry("elu", "elementwise", lambda x: F.elu(x), unary(away=True), "elu(x), 0.5 <= |x| <= 2", expr=E()),
    entry("mish", "elementwise", lambda x: F.mish(x), unary(), "mish(x)", expr=E(None, lambda s: s * sp.tanh(_softplus(s)))),
    entry("logsigmoid", "elementwise", lambda x: F.logsigmoid(x), unary(), "logsigmoid(x)", expr=E(None, lambda s: -_softplus(-s))),
)

ELEMENTWISE_SEVERAL = (
    entry("pow", "elementwise", lambda x, y: torch.pow(x, y), pow_inputs, "pow(x, y), x in [0.5, 2]"),
    entry("atan2", "elementwise", lambda y, x: torch.atan2(y, x), atan2_inputs, "atan2(y, x), 0.5 <= |x| <= 2"),
    entry("mul", "elementwise", lambda x, y: torch.mul(x, y), broadcast_inputs, "mul(x[3,4], y[4]) (broadcast)"),
    entry("div", "elementwise", lambda x, y: torch.div(x, y), broadcast_inputs, "div(x[3,4], y[4]) (broadcast)"),
    entry("clamp", "elementwise", lambda x: torch.clamp(x, -1.0, 1.0), clamp_inputs,
        "clamp(x, -1, 1), x = +-1 included", note="kinks at the bounds included on purpose"),
    entry("maximum", "elementwise", lambda x, y: torch.maximum(x, y), maximum_inputs, "maximum(x, y), two ties",
        note="ties included on purpose (torch splits the gradient evenly)"),
    entry("where", "elementwise", lambda c, x, y: torch.where(c, x, y), where_inputs, "where(cond, x, y)"),
)

REDUCTIONS = (
    entry("sum", "reduction", lambda x: torch.sum(x, dim=1), unary(), "sum(x, dim=1)"),
    entry("mean", "reduction", lambda x: torch.mean(x), unary(), "mean(x)"),
    entry("prod", "reduction", lambda x: torch.prod(x, dim=1), with_values([0.0]), "prod(x, dim=1), one x exactly 0",
        note="a zero factor included on purpose (torch's special backward path)"),
    entry("amax", "reduction", lambda x: torch.amax(x, dim=1), amax_inputs, "amax(x, dim=1), ties in row 0",
        note="ties included on purpose (torch splits the gradient evenly)"),
    entry("max", "reduction", lambda x: torch.max(x, dim=1).values, unary(), "max(x, dim=1).values"),
    entry("logsumexp", "reduction", lambda x: torch.logsumexp(x, dim=1), unary(), "logsumexp(x, dim=1)"),
    entry("var", "reduction", lambda x: torch.var(x, dim=1), unary(), "var(x, dim=1)"),
    entry("std", "reduction", lambda x: torch.std(x, dim=1), unary(), "std(x, dim=1)"),
    entry("linalg.vector_norm", "reduction", lambda x: torch.linalg.vector_norm(x, dim=1), unary(),
        "linalg.vector_norm(x, dim=1)"),
    entry("cumsum", "reduction", lambda x: torch.cumsum(x, dim=1), unary(), "cumsum(x, dim=1)"),
    entry("cumprod", "reduction", lambda x: torch.cumprod(x, dim=1), unary(away=True),
        "cumprod(x, dim=1), 0.5 <= |x| <= 2"),
    entry("softmax", "reduction", lambda x: torch.softmax(x, dim=-1), unary(), "softmax(x, dim=-1)"),
    entry("log_softmax", "reduction", lambda x: torch.log_softmax(x, dim=-1), unary(), "log_softmax(x, dim=-1)"),
    entry("sort", "reduction", lambda x: torch.sort(x, dim=1).values, unary(), "sort(x, dim=1).values"),
    entry("trace", "reduction", lambda x: torch.trace(x), unary(shape=(4, 4)), "trace(x[4,4])"),
)

LINEAR_ALGEBRA = (
    entry("matmul", "linalg", lambda a, b: torch.matmul(a, b), matmul_inputs, "matmul(a[3,4], b[4,5])"),
    entry("bmm", "linalg", lambda a, b: torch.bmm(a, b), bmm_inputs, "bmm(a[2,3,4], b[2,4,2])"),
    entry("einsum", "linalg", lambda a, b: torch.einsum("ij,jk->ik", a, b), matmul_inputs,
        "einsum('ij,jk->ik', a, b)"),
    entry("linalg.solve", "linalg", lambda a, b: torch.linalg.solve(a, b), solve_inputs,
        "linalg.solve(A[4,4], B[4,2]), cond(A) <= 3"),
    entry("linalg.inv", "linalg", lambda a: torch.linalg.inv(a), square, "linalg.inv(A[4,4]), cond(A) <= 3"),
    entry("linalg.det", "linalg", lambda a: torch.linalg.det(a), square, "linalg.det(A[4,4]), cond(A) <= 3"),
    entry("linalg.slogdet", "linalg", lambda a: torch.linalg.slogdet(a).logabsdet, square,
        "linalg.slogdet(A[4,4]).logabsdet"),
    entry("linalg.cholesky", "linalg", lambda a: torch.linalg.cholesky(a + a.mT), spd,
        "linalg.cholesky(A + A.mT), A + A.mT positive definite",
        note="symmetrised as torch's OpInfo does: cholesky reads one triangle only"),
    entry("linalg.eigvalsh", "linalg", lambda a: torch.linalg.eigvalsh(a + a.mT), spd,
        "linalg.eigvalsh(A + A.mT), distinct eigenvalues", note="symmetrised as torch's OpInfo does"),
    entry("linalg.eigh", "linalg", eigh, spd, "linalg.eigh(A + A.mT) -> (L, |V|)",
        note="|V|: eigenvectors are defined up to sign, as in torch's OpInfo"),
    entry("linalg.qr", "linalg", lambda a: torch.linalg.qr(a), square, "linalg.qr(A[4,4]) -> (Q, R)"),
    entry("linalg.svdvals", "linalg", lambda a: torch.linalg.svdvals(a), square,
        "linalg.svdvals(A[4,4]), distinct singular values"),
    entry("linalg.matrix_exp", "linalg", lambda a: torch.linalg.matrix_exp(a), small_square,
        "linalg.matrix_exp(A[3,3])"),
    entry("linalg.pinv", "linalg", lambda a: torch.linalg.pinv(a), tall, "linalg.pinv(A[4,3]), full rank"),
    entry("linalg.cross", "linalg", lambda a, b: torch.linalg.cross(a, b), cross_inputs, "linalg.cross(a[4,3], b[4,3])"),
    entry("linalg.matrix_norm", "linalg", lambda a: torch.linalg.matrix_norm(a), unary(shape=(3, 4)),
        "linalg.matrix_norm(A[3,4]) (Frobenius)"),
)

NORMALISATION = (
    entry("layer_norm", "normalisation", lambda x, w, b: F.layer_norm(x, (5,), w, b), layer_norm_inputs,
        "layer_norm(x[2,3,5], (5,), w, b)"),
    entry("group_norm", "normalisation", lambda x, w, b: F.group_norm(x, 2, w, b), group_norm_inputs,
        "group_norm(x[2,4,3], 2 groups, w, b)"),
    entry("batch_norm", "normalisation", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        group_norm_inputs, "batch_norm(x[2,4,3], w, b, training=True)",
        known=[KnownIssue(("float64",), _SECOND_ORDER, "the numerical second derivative's error estimate is "
                          "too small here (|diff| 4e-11 vs allowed 2e-11); torch's double backward agrees with an "
                          "independent composite formula to 7e-16 (reported)", source="gradcheck_kit")]),
    entry("instance_norm", "normalisation", lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
        group_norm_inputs, "instance_norm(x[2,4,3], w, b)"),
    entry("rms_norm", "normalisation", lambda x, w: F.rms_norm(x, (5,), w),
        lambda dtype, gen: layer_norm_inputs(dtype, gen)[:2], "rms_norm(x[2,3,5], (5,), w)"),
    entry("normalize", "normalisation", lambda x: F.normalize(x, dim=1), unary(), "normalize(x, dim=1)"),
    entry("scaled_dot_product_attention", "normalisation",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v), attention_inputs,
        "scaled_dot_product_attention(q, k, v [1,2,3,4])", order=1,
        note="first order only: torch has no double backward for the CPU flash-attention kernel"),
)

CONVOLUTION = (
    entry("conv1d", "convolution", lambda x, w, b: F.conv1d(x, w, b, padding=1), conv1d_inputs,
        "conv1d(x[2,3,7], w[4,3,3], b, padding=1)"),
    entry("conv2d", "convolution", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), conv2d_inputs,
        "conv2d(x[1,2,5,5], w[3,2,3,3], b, stride=2, padding=1)"),
    entry("conv_transpose1d", "convolution", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2), conv_t_inputs,
        "conv_transpose1d(x[2,3,5], w[3,2,3], b, stride=2)"),
    entry("avg_pool2d", "convolution", lambda x: F.avg_pool2d(x, 2), pool_inputs, "avg_pool2d(x[1,2,4,4], 2)"),
    entry("max_pool2d", "convolution", lambda x: F.max_pool2d(x, 2), pool_inputs,
        "max_pool2d(x[1,2,4,4], 2), no ties"),
    entry("interpolate", "convolution",
        lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), pool_inputs,
        "interpolate(x[1,2,4,4], scale_factor=2, mode='bilinear')"),
    entry("linear", "convolution", lambda x, w, b: F.linear(x, w, b), linear_inputs, "linear(x[3,4], w[2,4], b[2])"),
    entry("embedding", "convolution", lambda i, w: F.embedding(i, w), embedding_inputs,
        "embedding(indices[2,3], w[5,4]), repeated indices"),
)

LOSSES = (
    entry("cross_entropy", "loss", lambda x, t: F.cross_entropy(x, t), logits_target, "cross_entropy(x[4,5], t[4])"),
    entry("nll_loss", "loss", lambda x, t: F.nll_loss(torch.log_softmax(x, dim=1), t), logits_target,
        "nll_loss(log_softmax(x[4,5]), t[4])"),
    entry("mse_loss", "loss", lambda x, y: F.mse_loss(x, y), pair, "mse_loss(x, y), both differentiated"),
    entry("l1_loss", "loss", lambda x, y: F.l1_loss(x, y), pair, "l1_loss(x, y), x != y"),
    entry("smooth_l1_loss", "loss", lambda x, y: F.smooth_l1_loss(x, y), pair, "smooth_l1_loss(x, y)"),
    entry("huber_loss", "loss", lambda x, y: F.huber_loss(x, y, delta=0.5), pair, "huber_loss(x, y, delta=0.5)"),
    entry("binary_cross_entropy", "loss", lambda p, t: F.binary_cross_entropy(p, t), probs_target,
        "binary_cross_entropy(p in [0.1, 0.9], t)"),
    entry("binary_cross_entropy_with_logits", "loss", lambda x, t: F.binary_cross_entropy_with_logits(x, t),
        logits_soft_target, "binary_cross_entropy_with_logits(x, t), both differentiated"),
    entry("kl_div", "loss",
        lambda x, y: F.kl_div(torch.log_softmax(x, 1), torch.softmax(y, 1), reduction="batchmean"), kl_inputs,
        "kl_div(log_softmax(x), softmax(y), reduction='batchmean')"),
    entry("cosine_similarity", "loss", lambda x, y: F.cosine_similarity(x, y), pair, "cosine_similarity(x[3,4], y[3,4])"),
    entry("gaussian_nll_loss", "loss", lambda x, t, v: F.gaussian_nll_loss(x, t, v), gaussian_inputs,
        "gaussian_nll_loss(x, t, var in [0.5, 2])"),
    entry("poisson_nll_loss", "loss", lambda x, t: F.poisson_nll_loss(x, t), kl_inputs,
        "poisson_nll_loss(x, t) (log input)"),
)

#: every op the audit knows, in the order it runs them
CATALOGUE: tuple[AuditOp, ...] = (
    *ELEMENTWISE_UNARY,
    *ELEMENTWISE_SEVERAL,
    *REDUCTIONS,
    *LINEAR_ALGEBRA,
    *NORMALISATION,
    *CONVOLUTION,
    *LOSSES,
)


def catalogue() -> list[AuditOp]:
    """Every op the audit knows, in the order it runs them."""
    return list(CATALOGUE)
