"""A function that jumps between nearby points for most of its derivatives is not a pass."""

from __future__ import annotations

import hashlib

import pytest
import torch

import gradcheck_kit as gk


def _hash_noise(x: torch.Tensor) -> torch.Tensor:
    """Deterministic noise: a hash of each value (the same at the same point, unrelated next to it)."""
    values = x.detach().double().reshape(-1).numpy()
    noise = [int(hashlib.md5(v.tobytes()).hexdigest()[:8], 16) / 2**32 for v in values]
    return torch.tensor(noise, dtype=x.dtype).reshape(x.shape)


@pytest.mark.parametrize("amplitude", [0.1, 1.0])
def test_noise_in_most_derivatives_is_an_error_not_a_pass(amplitude):
    x = torch.randn(25, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = gk.check_gradients(lambda t: t.sin() + amplitude * _hash_noise(t), x)
    assert not report.ok
    assert report.errors and report.errors[0].startswith("fn jumps between nearby points for ")
    assert "could not be checked" in report.errors[0]


def test_a_few_discontinuities_stay_notes():
    # floor has jumps at integers only: the two entries next to one are unchecked, the rest pass
    x = torch.tensor([0.3, 1.0 - 1e-9, 2.5, -0.7, 3.2], dtype=torch.float64)
    report = gk.check_gradients(lambda t: torch.floor(t) + t.sin(), x)
    assert report.ok, report.details()
