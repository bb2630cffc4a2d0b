"""A systematic error of a half-precision backward, too small for any one entry to show.

bfloat16 keeps 8 significant bits (its spacing is 0.8% of a value): a backward that is 2% too large on
every entry sits within a few roundings of each entry, so the per-entry comparison cannot tell it from
rounding. Many entries all off in the same direction can: independent roundings average out, a bias
does not. For float16 and bfloat16 inputs of a function that also runs in float64, one backward along a
random ``grad_output`` ``v`` (entries ±1 and ±1/2, exact in every dtype) is projected on the direction
``u = sign(g)`` of its own entries, and compared with the derivative of ``v·f`` along ``u`` by float64
finite differences at the same point (fn run in float64): the scale-weighted signed relative difference

    beta = (sum(|g|) - d/dt v·f(x + t·u)) / sum(|g|)

must stay within ``BIAS_ROUNDINGS`` roundings of the low precision (identical roundings of every entry,
as for a constant gradient, give at most half a rounding) and within ``Z_LIMIT`` standard deviations of
what independent roundings of the entries give. A check of fewer than ``MIN_ENTRIES`` non-zero entries
is skipped: too few to average. Nothing here raises; the result is a check.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._engine.evaluate import as_outputs, fresh_args, seed_global_rng
from gradcheck_kit._inputs import layout_clone
from gradcheck_kit.report import CheckResult

__all__ = ["bias_check", "HALF_DTYPES"]

HALF_DTYPES = (torch.float16, torch.bfloat16)
#: the bias allowed, in roundings (eps) of the low precision
BIAS_ROUNDINGS = 1.5
#: and in standard deviations of the bias that independent roundings of the entries give
Z_LIMIT = 6.0
#: fewer non-zero gradient entries than this are too few to average
MIN_ENTRIES = 64
#: the finite-difference step along the sign direction, relative to max(1, max|x|)
STEP = 2.0**-14
#: the half-precision outputs must agree with the float64 ones within this many roundings of their scale
FORWARD_ROUNDINGS = 16
CHECK = "bias"


def _half_inputs(inputs: Sequence[Any], wrt: Sequence[int]) -> list[int]:
    return [i for i in wrt if isinstance(inputs[i], torch.Tensor) and inputs[i].dtype in HALF_DTYPES]


def _signs(shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Entries ±1 and ±1/2 (exact in every floating dtype), float64."""
    magnitude = torch.randint(1, 3, shape, generator=gen).to(torch.float64).reciprocal()  # 1 or 1/2
    sign = torch.randint(0, 2, shape, generator=gen).to(torch.float64).mul_(2).sub_(1)
    return magnitude * sign


def _backward(fn: Callable, inputs: Sequence[Any], wrt: Sequence[int], dtype, vs, seed: int):
    """The outputs and the gradients of the differentiated inputs along ``vs``, computed in ``dtype`` for
    the half-precision inputs (float64: every floating input in float64)."""
    convert = layout_clone if dtype is None else (lambda t: t.detach().to(dtype))
    args, leaves = fresh_args(inputs, wrt, convert=convert, only_floating=True)
    seed_global_rng(seed)
    with torch.enable_grad():
        outs = as_outputs(fn(*args))
    graded = [k for k, o in enumerate(outs) if o.requires_grad and k < len(vs)]
    if not graded:
        return outs, None
    grads = torch.autograd.grad(
        [outs[k] for k in graded], [leaves[i] for i in wrt], [vs[k].to(outs[k].dtype) for k in graded],
        allow_unused=True,
    )
    return outs, {i: (torch.zeros_like(leaves[i]) if g is None else g) for i, g in zip(wrt, grads)}


def _directional(fn: Callable, inputs: Sequence[Any], i: int, u: torch.Tensor, vs, seed: int):
    """d/dt v·f(x + t·u) in float64 at the half-precision point (Richardson over central differences at h and
    h/2) and an estimate of its error; (None, None) where fn does not give finite values there."""
    base = [t.detach().to(torch.float64) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    x = base[i]
    h = STEP * max(1.0, float(x.abs().max()))

    def phi(t: float) -> float:
        args = list(base)
        args[i] = x + t * u
        seed_global_rng(seed)
        with torch.no_grad():
            outs = as_outputs(fn(*args))
        return sum(float((o.double() * v).sum()) for o, v in zip(outs, vs) if o.is_floating_point())

    values = {t: phi(t) for t in (h, -h, h / 2, -h / 2)}
    if not all(math.isfinite(v) for v in values.values()):
        return None, None
    d_h = (values[h] - values[-h]) / (2 * h)
    d_half = (values[h / 2] - values[-h / 2]) / h
    slope = (4 * d_half - d_h) / 3
    error = abs(slope - d_half) + 1e-14 * sum(abs(v) for v in values.values()) / h
    return slope, error


def bias_check(fn: Callable, inputs: Sequence[Any], wrt: Sequence[int], seed: int) -> CheckResult | None:
    """The check ``bias`` for float16/bfloat16 inputs, or None where there are none."""
    half = _half_inputs(inputs, wrt)
    if not half:
        return None
    gen = torch.Generator().manual_seed(seed ^ 0xB1A5)
    try:
        with torch.no_grad():
            seed_global_rng(seed)
            probe = as_outputs(fn(*[layout_clone(t) if isinstance(t, torch.Tensor) else t for t in inputs]))
        vs = [_signs(o.shape, gen) for o in probe]
        outs_low, low = _backward(fn, inputs, wrt, None, vs, seed)
        outs64, ref = _backward(fn, inputs, wrt, torch.float64, vs, seed)
    except Exception as exc:  # noqa: BLE001 - no float64 run: nothing to compare the average with
        return CheckResult(CHECK, "skipped", f"fn could not run in float64 for the comparison ({type(exc).__name__})")
    if low is None or ref is None:
        return None
    if any(o.dtype != torch.float64 for o in outs64 if o.is_floating_point()):
        return CheckResult(CHECK, "skipped", "fn does not compute in float64, so there is no reference to average against")
    coarse = max(torch.finfo(inputs[i].dtype).eps for i in half)
    for a, b in zip(outs_low, outs64):
        if a.is_floating_point() and a.shape == b.shape and a.numel():
            a64, b64 = a.detach().double(), b.detach()
            scale = float(b64.abs().max())
            if not bool(((a64 - b64).abs() <= FORWARD_ROUNDINGS * coarse * (b64.abs() + scale)).all()):
                return CheckResult(
                    CHECK, "skipped",
                    "fn's float64 outputs differ from its half-precision ones by more than rounding: not the same "
                    "function to average against",
                )
    worst = None
    for i in half:
        g = low[i].detach().double()
        u = torch.where(torch.isfinite(g), g.sign(), torch.zeros_like(g))
        n = int((u != 0).sum())
        if n < MIN_ENTRIES:
            continue
        slope, error = _directional(fn, inputs, i, u, vs, seed)
        if slope is None:
            continue
        eps = torch.finfo(inputs[i].dtype).eps
        weight = float((g * u).sum())  # sum |g|
        beta = (weight - slope) / weight
        sigma = eps * math.sqrt(float((g * g).sum())) / weight
        limit = max(BIAS_ROUNDINGS * eps, Z_LIMIT * sigma) + 4 * error / weight
        if worst is None or abs(beta) / limit > worst[0]:
            worst = (abs(beta) / limit, i, beta, limit, n, eps)
    if worst is None:
        return CheckResult(CHECK, "skipped", f"fewer than {MIN_ENTRIES} non-zero gradient entries of a half-precision input")
    ratio, i, beta, limit, n, eps = worst
    detail = (
        f"autograd's gradient of input {i} is {beta:+.2%} off the float64 finite differences on average over {n} "
        "entries "
        f"(allowed {limit:.2%}: {BIAS_ROUNDINGS:g} roundings of {inputs[i].dtype}, or {Z_LIMIT:g} standard "
        "deviations of independent roundings)"
    )
    if ratio > 1:
        return CheckResult(CHECK, "failed", "a systematic error: " + detail)
    return CheckResult(CHECK, "passed", detail)
