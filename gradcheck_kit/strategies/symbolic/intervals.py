"""Interval arithmetic over the input bounds, and the regions random expressions keep each argument in.

Every subtree of an expression carries an interval ``(lo, hi)`` that holds all its values for inputs
within their bounds; an op whose argument could leave its safe region gets the argument shifted or
scaled first (see :func:`gradcheck_kit.strategies.symbolic.tree.apply_guarded`).
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = [
    "CAP",
    "DEFAULT_BOUNDS",
    "EXP_MAX",
    "INF",
    "MARGIN",
    "SATURATE",
    "iv_abs",
    "iv_mul",
    "iv_pow",
    "monotone",
    "nice_ceil",
    "safe_target",
    "sigmoid_float",
    "softplus_float",
    "within",
]

INF = math.inf
#: default range of every input's values
DEFAULT_BOUNDS = (-2.0, 2.0)
#: every subtree of a random expression stays inside [-CAP, CAP]
CAP = 50.0
#: distance kept from the edge of a half-bounded domain (log, sqrt, division, abs's kink, ...)
MARGIN = 0.5
#: exp's argument stays at or below this (exp(3) ~ 20)
EXP_MAX = 3.0
#: tanh and sigmoid arguments stay in [-3, 3]
SATURATE = 3.0


def iv_mul(a, b):
    products = [p for p in (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]) if not math.isnan(p)]
    return (min(products), max(products))


def iv_pow(a, k: Fraction):
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


def iv_abs(a):
    lo, hi = a
    if lo >= 0:
        return a
    if hi <= 0:
        return (-hi, -lo)
    return (0.0, max(-lo, hi))


def monotone(f):
    return lambda a: (f(a[0]), f(a[1]))


def softplus_float(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def sigmoid_float(v):
    return math.exp(-softplus_float(-v))


def within(iv, domain) -> bool:
    return domain[0] < iv[0] and iv[1] < domain[1]


def safe_target(domain):
    """The closed region random expressions keep an argument in, for an op defined on open ``domain``."""
    lo, hi = domain
    if math.isinf(lo) and math.isinf(hi):
        return (-CAP, CAP)
    if math.isinf(hi):
        return (lo + MARGIN, max(CAP, lo + 2 * MARGIN))
    if math.isinf(lo):
        return (min(-CAP, hi - 2 * MARGIN), hi - MARGIN)
    pad = 0.1 * (hi - lo)
    return (lo + pad, hi - pad)


def nice_ceil(value: float) -> Fraction:
    """The simplest fraction >= value with a power-of-two denominator, no more than 1/d above it."""
    for denominator in (1, 2, 4, 8, 16, 64, 256):
        candidate = Fraction(math.ceil(value * denominator - 1e-12), denominator)
        if float(candidate) - value <= 1.0 / denominator:
            return candidate
    return Fraction(value).limit_denominator(1024)
