"""Input builders for the catalogue: values drawn in float64 from the op's private generator, then cast.

Each ``build(dtype, generator)`` returns an op's positional inputs; differentiated tensors have
``requires_grad=True``.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "randn", "uniform", "away_from_zero", "as_input", "well_conditioned", "spd_half", "unary", "with_values",
    "amax_inputs",
]


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def away_from_zero(gen: torch.Generator, shape: tuple[int, ...], lo: float = 0.5, hi: float = 2.0) -> torch.Tensor:
    sign = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return sign * uniform(gen, shape, lo, hi)


def as_input(values: torch.Tensor, dtype: torch.dtype, grad: bool = True) -> torch.Tensor:
    return values.to(dtype).requires_grad_(grad)


def well_conditioned(gen: torch.Generator, n: int, m: int | None = None) -> torch.Tensor:
    """A random matrix with singular values in [1, 3]: condition number at most 3."""
    m = n if m is None else m
    q1, _ = torch.linalg.qr(randn(gen, n, n))
    q2, _ = torch.linalg.qr(randn(gen, m, m))
    k = min(n, m)
    s = torch.linspace(1.0, 3.0, k, dtype=torch.float64)
    s = s[torch.randperm(k, generator=gen)]
    middle = torch.zeros(n, m, dtype=torch.float64)
    middle[range(k), range(k)] = s
    return q1 @ middle @ q2


def spd_half(gen: torch.Generator, n: int) -> torch.Tensor:
    """``B`` such that ``B + B.mT`` is symmetric positive definite with eigenvalues in [1, 3]."""
    q, _ = torch.linalg.qr(randn(gen, n, n))
    spd = q @ torch.diag(torch.linspace(1.0, 3.0, n, dtype=torch.float64)) @ q.mT
    noise = randn(gen, n, n, scale=0.05)
    return spd / 2 + (noise - noise.mT) / 2  # the antisymmetric part cancels in B + B.mT


def unary(lo: float | None = None, hi: float | None = None, shape: tuple[int, ...] = (3, 4), away: bool = False):
    def build(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        if away:
            values = away_from_zero(gen, shape)
        elif lo is None:
            values = randn(gen, *shape)
        else:
            values = uniform(gen, shape, lo, hi)  # type: ignore[arg-type]
        return (as_input(values, dtype),)

    return build


def with_values(values: Sequence[float], shape: tuple[int, ...] = (3, 4), scale: float = 1.0):
    """Random normal inputs with ``values`` written into the first elements (kinks on purpose)."""

    def build(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        x = randn(gen, *shape, scale=scale).flatten()
        x[: len(values)] = torch.tensor(values, dtype=torch.float64)
        return (as_input(x.reshape(shape), dtype),)

    return build


def amax_inputs(dtype: torch.dtype, gen: torch.Generator) -> tuple:
    x = randn(gen, 3, 4)
    x[0, 1] = x[0, 2] = x[0].abs().max() + 0.5  # a tie for the maximum of row 0
    return (as_input(x, dtype),)
