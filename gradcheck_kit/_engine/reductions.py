"""Reductions of large flat vectors in float64 without full-size float64 temporaries (chunked), and
sizes (sums of squares, sums of absolute products) where the rounding of a scale does not matter."""

from __future__ import annotations

import cmath
import math

import torch


def sum_squares(t: torch.Tensor) -> float:
    """Sum of squares of the finite entries (one pass where every entry is finite)."""
    total = float(torch.linalg.vector_norm(t)) ** 2
    if not math.isfinite(total):
        total = float(t.nan_to_num(0.0, posinf=0.0, neginf=0.0).square().sum())
    return total


#: elements per chunk of a reduction that would otherwise need a full-size temporary
CHUNK = 1 << 18


def scaled_square_sum(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum((g·s)²)`` with NaN counted as 0 and ±inf as the largest float (``nan_to_num``), in chunks (no
    full-size temporary); the cleanup pass runs only where the plain sum is not finite."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, g.numel(), CHUNK):
        gs = g[start : start + CHUNK] * s[start : start + CHUNK].to(torch.float64)
        total += torch.dot(gs, gs)
    if bool(torch.isfinite(total)):
        return total
    return (g * s.to(torch.float64)).nan_to_num_(0.0).square_().sum()


def size_sq(t: torch.Tensor) -> float:
    """``t·t`` of a flat real vector, as a size (the natural scale's): summed in float32 or float64 as t is
    (float32's rounding of a size does not matter), in float64 where that overflows or t is of lower
    precision."""
    if t.dtype in (torch.float32, torch.float64):
        total = float(torch.dot(t, t))
        if math.isfinite(total):
            return total
    return float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2


def size_abs_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``sum |a·b|`` of two flat real vectors of one dtype, as a size (the noise model's): like ``size_sq``."""
    if a.dtype in (torch.float32, torch.float64):
        total = float(torch.mul(a, b).abs_().sum())
        if math.isfinite(total):
            return total
    return float(torch.mul(a.to(torch.float64), b.to(torch.float64)).abs_().sum())


def dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a·b`` in float64 for flat real vectors of any float dtypes (float64 values of each, exactly), in
    chunks where one is of lower precision (no full-size float64 copy)."""
    if a.dtype == torch.float64 and b.dtype == torch.float64:
        return torch.dot(a, b)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, a.numel(), CHUNK):
        total += torch.dot(a[start : start + CHUNK].to(torch.float64), b[start : start + CHUNK].to(torch.float64))
    return total


def sum64(t: torch.Tensor) -> torch.Tensor:
    """The sum of a flat real vector in float64, converted chunk by chunk (``sum(dtype=float64)`` of a float32
    vector converts element by element in the reduction's inner loop, the slower way)."""
    if t.dtype == torch.float64 or t.numel() <= CHUNK:
        return t.sum(dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for start in range(0, t.numel(), CHUNK):
        total += t[start : start + CHUNK].to(torch.float64).sum()
    return total


def dot_and_square_sum(u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``u·g`` and ``sum((u·g)²)`` in float64 for flat vectors, u of powers of two times ±1 (``words.rademacher``);
    the sum of squares is ``None`` where it is not finite (``scaled_square_sum`` then counts NaN and inf its
    own way).

    Where u and g share a dtype the products ``u_i·g_i`` are exact in it (a power of two at least 1 only
    moves the exponent; an overflow shows as a non-finite sum), so they are formed there and only summed in
    float64 (``sum64``, no full-size float64 copy); the sum of squares, a scale, is summed in their dtype
    (float32's rounding of it does not matter). Otherwise one chunked pass in float64."""
    if u.dtype == g.dtype and u.dtype in (torch.float32, torch.float64) and u.device == g.device:
        p = u * g
        dot = sum64(p)
        squares = torch.dot(p, p).to(torch.float64)
        if bool(torch.isfinite(dot)) and bool(torch.isfinite(squares)):
            return dot.cpu(), squares.cpu()
    dot = torch.zeros((), dtype=torch.float64)
    squares = torch.zeros((), dtype=torch.float64)
    for start in range(0, g.numel(), CHUNK):
        p = u[start : start + CHUNK].to(torch.float64) * g[start : start + CHUNK]
        dot += p.sum()
        squares += torch.dot(p, p)
    return dot, (squares if bool(torch.isfinite(squares)) else None)


def nonfinite_count(t: torch.Tensor) -> int:
    """How many elements of ``t`` are NaN or ±inf. A finite sum proves there are none (a NaN makes the sum
    NaN, an inf makes it inf or NaN, in any order of summation): one reduction without a full-size
    temporary; the count runs only where the sum is not finite (overflow of finite values included)."""
    t = t.detach()
    try:
        if t.numel() == 0 or _finite(t.sum().item()):  # (a Python number: cheaper than torch.isfinite's bool)
            return 0
    except Exception:  # noqa: BLE001 - a layout without sum: count directly
        pass
    return int((~torch.isfinite(t)).sum().item())


def _finite(value: float | complex | int) -> bool:
    return cmath.isfinite(value) if isinstance(value, complex) else math.isfinite(value)
