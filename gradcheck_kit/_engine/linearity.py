"""The backward is linear in ``grad_output``: three backwards over the graph the check already built.

The main check builds Jacobian rows from one-hot ``grad_output``s and directional checks project on
vectors with entries in (-1, 1): a backward that clamps, takes ``abs``/``sign``/powers of, or normalises
its ``grad_output`` gives the right rows there and passes. Here ``b(v)`` (autograd's gradient for the
``grad_output`` ``v``) is taken for two random vectors ``v1``, ``v2`` with entries of size 1 to 4 and
opposite signs, and for ``c = 3·v1 - 2·v2``; a linear backward gives ``b(c) = 3·b(v1) - 2·b(v2)`` up to
rounding. The entries are multiples of 1/2 below 21 in magnitude, so ``v1``, ``v2`` and ``c`` are exact in
every floating dtype down to bfloat16, and only the backward's own rounding separates the two sides.

Opposite signs make the check decisive for any elementwise non-linearity: ``c`` has ``v1``'s sign and a
larger magnitude in every element, so ``b(c)`` differs from the combination wherever ``b`` is not a single
line through 0 (``sign`` gives 1 against 5, ``abs`` ``3|v1| + 2|v2|`` against ``3|v1| - 2|v2|``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch

from gradcheck_kit._engine.evaluate import describe_exception
from gradcheck_kit._inputs import coord_index, coords64
from gradcheck_kit.report import CheckResult, format_index
from gradcheck_kit._engine.tolerances import coarsest_precision, eps

__all__ = [
    "linearity_check", "draw", "rounding_eps", "smallest_normal", "subnormal_spacing", "natural_size", "COEFFICIENTS",
]

#: b(c) is compared with A·b(v1) + B·b(v2) for c = A·v1 + B·v2
COEFFICIENTS = (3.0, -2.0)
#: roundings (``rounding_eps``) allowed, of the sizes |b(c)| + 3|b(v1)| + 2|b(v2)| of the element plus the
#: largest element's of any input or the natural size of the terms (``natural_size``), whichever is larger:
#: a correct backward whose terms cancel rounds at the size of its terms
ULPS = 8.0
#: times the conditioning probe's spread allowed per backward (as the main comparison allows up to 4x)
CONDITIONING_TIMES = 4.0
HINT = (
    "a backward must be linear in grad_output: it must not clamp, take abs, sign or powers of, or normalise "
    "grad_output"
)


#: random codes drawn per grad_output; larger outputs repeat the block (drawing and looking up 10^6 codes cost
#: as much as a backward of a cheap function)
BLOCK = 4099
#: TF32's significand (10 bits): float32 matmuls and convolutions on CUDA where TF32 is allowed
TF32_EPS = 2.0**-10


def rounding_eps(grads: Sequence[torch.Tensor], outs: Sequence[torch.Tensor] = ()) -> float:
    """The rounding unit of a backward's results ``grads`` of outputs ``outs``: the coarsest of their dtypes';
    float32's at least for float64 (a float64 function may compute in float32 inside: its backward rounds
    like float32, a thousandth of what a non-linear or changing backward moves); that of bfloat16 or float16
    where the results are all values of it (a backward that computes in it inside); TF32's for float32 on
    CUDA where TF32 is allowed."""
    real = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
    real = [g for g in real if g.is_floating_point()]
    if not real:
        return 0.0
    own = max(eps(t.dtype) for t in [*real, *outs] if t.is_floating_point() or t.is_complex())
    own = max(own, eps(torch.float32))
    if any(g.is_cuda for g in real) and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
        own = max(own, TF32_EPS)
    coarse = coarsest_precision(real, (torch.bfloat16, torch.float16), finer_than=own)
    return own if coarse is None else eps(coarse)


def smallest_normal(e: float) -> float:
    """The smallest normal number of the precision whose eps is ``e``: a result below it may come from an
    intermediate that underflowed to a subnormal and kept few of its bits, so two computations of it that
    round in another order can differ by a large part of it."""
    return subnormal_spacing(e) / e


@lru_cache(maxsize=None)
def subnormal_spacing(e: float) -> float:
    """The spacing of subnormal numbers of the precision whose eps is ``e`` (TF32: float32's): the absolute
    rounding of results below its smallest normal number, which no multiple of ``eps·|value|`` covers."""
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        info = torch.finfo(dtype)
        if info.eps == e:
            return info.tiny * info.eps
    return torch.finfo(torch.float32).tiny * torch.finfo(torch.float32).eps


def natural_size(outs: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor], leaf: torch.Tensor) -> float:
    """``sum over outputs of rms(out)·|v|₂ / max(rms(x), 1)``: the size a gradient's terms have before they
    cancel (a bias in front of a normalisation has a zero gradient made of terms of this size), which bounds
    the rounding of a correct backward where its results are far smaller than its terms."""

    def rms(t: torch.Tensor) -> float:
        c = coords64(t.detach())
        c = c[torch.isfinite(c)]
        return float(c.square().mean().sqrt()) if c.numel() else 0.0

    total = sum(rms(o) * float(torch.linalg.vector_norm(coords64(v))) for o, v in zip(outs, vectors))
    return total / max(rms(leaf), 1.0)


@lru_cache(maxsize=None)
def _tables() -> torch.Tensor:
    """``(3, 50)`` float64: v1, v2 and c = 3·v1 - 2·v2 for each code 0..49 (a sign, k1, k2 in 0..4):
    ``v1 = ±(2 + k1/2)``, ``v2 = ∓(1 + k2/2)``."""
    code = torch.arange(50)
    sign = (code % 2).to(torch.float64) * 2 - 1
    v1 = sign * (2 + ((code // 2) % 5).to(torch.float64) / 2)
    v2 = -sign * (1 + (code // 10).to(torch.float64) / 2)
    return torch.stack([v1, v2, COEFFICIENTS[0] * v1 + COEFFICIENTS[1] * v2])


def _vectors(out: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
    """v1, v2 and c for ``out``: one random code per real coordinate, looked up in ``_tables``; beyond
    ``BLOCK`` coordinates a block of codes repeats (a prime length, so the pattern does not align with rows)."""
    parts = (*out.shape, 2) if out.is_complex() else tuple(out.shape)
    n = math.prod(parts)
    code = torch.randint(0, 50, (min(n, BLOCK),), generator=gen)
    real = torch.float64 if out.dtype in (torch.float64, torch.complex128) else torch.float32
    vectors = []
    for row in _tables().to(real):
        v = row[code]
        if n > BLOCK:
            v = v.repeat(-(-n // BLOCK))[:n]
        v = v.reshape(parts)
        if out.is_complex():
            v = torch.view_as_complex(v)
        vectors.append(v.to(device=out.device, dtype=out.dtype))
    return vectors


def _real(t: torch.Tensor) -> torch.Tensor:
    if t._is_zerotensor():  # autograd's immutable zero (the second derivative of abs): a plain one
        t = torch.zeros(t.shape, dtype=t.dtype, device=t.device)
    return torch.view_as_real(t) if t.is_complex() else t


def _largest(t: torch.Tensor) -> float:
    """max |t| (NaN where t holds NaN), one pass."""
    return float(torch.linalg.vector_norm(_real(t), ord=float("inf"))) if t.numel() else 0.0


def draw(outs: Sequence[torch.Tensor], seed: int) -> tuple[tuple, tuple, tuple]:
    """``(v1, v2, c)``, each a tuple over ``outs``: the vectors ``linearity_check`` draws for ``seed``."""
    gen = torch.Generator().manual_seed((seed * 1000003 + 7) % (2**63))
    v1, v2, c = zip(*[_vectors(o, gen) for o in outs])  # exact: multiples of 1/2 below 21
    return v1, v2, c


def _backward(outs, leaves, vectors) -> list[torch.Tensor]:
    grads = torch.autograd.grad(outs, leaves, grad_outputs=vectors, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g.detach() for g, leaf in zip(grads, leaves)]


def linearity_check(
    outs: Sequence[torch.Tensor],
    leaves: Sequence[torch.Tensor],
    names: Sequence[str],
    seed: int,
    nondet_tol: float = 0.0,
    eps_floor: float = 0.0,
    jacobians: Sequence[Sequence[torch.Tensor | None]] | None = None,
    conditioning: Sequence[Sequence[torch.Tensor | None]] | None = None,
    passes: tuple | None = None,
) -> CheckResult:
    """``outs``: the outputs that require grad (of one graph, kept); ``leaves``: the differentiated inputs
    and ``names`` theirs. Three backwards; ``nondet_tol`` is allowed per backward on top of rounding, whose
    unit is at least ``eps_floor`` (fn computes in a lower precision inside). ``jacobians[leaf][output]``:
    the checked Jacobian ``(leaf coordinates, output coordinates)`` where known, whose ``|J|^T |c|`` sizes the
    terms of ``b(c)`` before they cancel (``inv`` of a nearly singular matrix: terms 10^12 times the result).
    ``conditioning[leaf][output]``: how far the float64 Jacobian moves when the inputs move by a few roundings
    (``allowance.full_conditioning``), where measured: ``CONDITIONING_TIMES`` times its projection on |w| is allowed
    on top, for the three backwards of an ill-conditioned low-precision function. ``passes``: the three
    backwards ``(b(v1), b(v2), b(c))`` (per leaf) where already made (one batched backward: ``one_vector``)."""
    if not outs:
        return CheckResult("linearity", "skipped", "no output requires grad")
    a, b = COEFFICIENTS
    v1, v2, c = draw(outs, seed)
    try:
        g1, g2, gc = passes or (_backward(outs, leaves, v1), _backward(outs, leaves, v2), _backward(outs, leaves, c))
    except Exception as exc:  # noqa: BLE001 - the function's backward failing is reported
        raised = describe_exception(exc)
        return CheckResult("linearity", "error", f"a backward with a random grad_output raised {raised}")
    spread = abs(a) + abs(b) + 1.0
    # per input: the largest size of an element (of the results; the terms before they cancel below)
    tops = [_largest(z) + abs(a) * _largest(x) + abs(b) * _largest(y) for x, y, z in zip(g1, g2, gc)]
    top_all = max((t for t in tops if math.isfinite(t)), default=0.0)
    e0 = max(eps(torch.float32), *(eps(t.dtype) for t in [*g1, *outs] if t.is_floating_point() or t.is_complex()))
    for pos, (x, y, z) in enumerate(zip(g1, g2, gc)):
        # the usual case, in a few passes of the gradient's dtype: every element within the smallest
        # allowance the element-wise comparison below could give (less the residual's own roundings)
        if math.isfinite(tops[pos]) and (z.is_floating_point() or z.is_complex()):
            residual = torch.add(_real(z), _real(x), alpha=-a).add_(_real(y), alpha=-b)
            if _largest(residual) <= spread * nondet_tol + (ULPS - 4) * e0 * top_all:
                continue
        leaf, name = leaves[pos], names[pos]
        e = max(rounding_eps([x, y, z], outs), eps_floor)
        x, y, z = coords64(x), coords64(y), coords64(z)
        combined = a * x + b * y
        size = z.abs() + abs(a) * x.abs() + abs(b) * y.abs()
        finite = torch.isfinite(size) & torch.isfinite(combined)
        if not bool(finite.any()):
            continue
        top = max(top_all, natural_size(outs, c, leaf))
        # where the Jacobian is known: how far its terms exceed what they sum to, |J|^T |w| - |J^T w| for w = c,
        # v1, v2 (weighted 1, 3, 2): the cancellation a correct backward of these vectors goes through
        cancelled = size.new_zeros(())
        if jacobians is not None:
            cancelled = _cancelled(cancelled, jacobians[pos], (c, v1, v2))
        allowed = spread * (nondet_tol + ULPS * subnormal_spacing(e)) + ULPS * e * (size + cancelled + top)
        if conditioning is not None:
            allowed = _conditioned(allowed, conditioning[pos], (c, v1, v2))
        diff = (z - combined).abs()
        bad = finite & ~(diff <= allowed)
        if not bool(bad.any()):
            continue
        ratio = torch.where(bad, diff / allowed.clamp_min(1e-300), torch.zeros_like(diff))
        j = int(ratio.argmax())
        index, part = coord_index(j, leaf.shape, leaf.is_complex())
        where = f"{name}{format_index(index)}" + (f" ({part})" if part else "")
        return CheckResult(
            "linearity",
            "failed",
            f"backward is not linear in grad_output: at {where}, backward(3·v1 - 2·v2) = {z[j].item():.6g} but "
            f"3·backward(v1) - 2·backward(v2) = {combined[j].item():.6g} (|diff| {diff[j].item():.1e} > allowed "
            f"{allowed[j].item():.1e}; {int(bad.sum())} of {int(finite.sum())} element(s)), for random "
            f"grad_outputs v1, v2 with entries of size 1 to 4; {HINT}",
        )
    return CheckResult("linearity", "passed", "backward(3·v1 - 2·v2) = 3·backward(v1) - 2·backward(v2)")


def _cancelled(total: torch.Tensor, jacobians, vectors) -> torch.Tensor:
    """``total`` plus ``|J|^T |w| - |J^T w|`` over the known Jacobians and the vectors ``(c, v1, v2)``
    (weighted 1, 3, 2): how far the terms of a correct backward of them exceed what they sum to."""
    a, b = COEFFICIENTS
    for jac, *ws in zip(jacobians, *vectors):
        if jac is not None:
            jac = jac.to(torch.float64)
            for weight, w in zip((1.0, abs(a), abs(b)), ws):
                w = coords64(w)
                total = total + weight * (jac.abs() @ w.abs() - (jac @ w).abs())
    return total


def _conditioned(allowed: torch.Tensor, conditioning, vectors) -> torch.Tensor:
    """``allowed`` plus ``CONDITIONING_TIMES`` times the conditioning's projection on ``|w|`` for each of
    ``(c, v1, v2)`` (weighted 1, 3, 2)."""
    a, b = COEFFICIENTS
    for moved, *ws in zip(conditioning, *vectors):
        if moved is not None:
            moved = moved.to(torch.float64).abs()
            for weight, w in zip((1.0, abs(a), abs(b)), ws):
                allowed = allowed + CONDITIONING_TIMES * weight * (moved @ coords64(w).abs())
    return allowed
