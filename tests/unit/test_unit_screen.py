"""The directional screen: a derivative it passes from ``φ(0), φ(±h)`` alone is one the full stencil passes."""

from __future__ import annotations

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine import finite_diff as fd
from gradcheck_kit._engine import compare as cmp
from gradcheck_kit._engine import screen as scr

STENCIL = tolerances.stencil_for(torch.float64)
H = STENCIL.h0
OFFSETS = torch.tensor([0.0] + STENCIL.multipliers, dtype=torch.float64)  # 0, +1, -1, +2, -2


def _values(coefficients, kink, at, noise):
    """φ(t·h) at the stencil's points for each derivative: a polynomial of degree 4 in t·h, a kink of slope
    change ``kink`` at ``at``·h, and a rounding-sized wiggle ``noise`` on the points."""
    t = OFFSETS[:, None] * H
    c = torch.tensor(coefficients, dtype=torch.float64).T  # (5 powers, batch)
    poly = sum(c[k] * t**k for k in range(5))
    kinked = torch.tensor(kink, dtype=torch.float64) * (t - torch.tensor(at, dtype=torch.float64) * H).abs()
    wiggle = torch.tensor(noise, dtype=torch.float64) * tolerances.eps(torch.float64) * torch.tensor(
        [0.0, 1.0, -1.0, 1.0, -1.0], dtype=torch.float64
    )[:, None]
    return poly + kinked + wiggle * (poly.abs() + 1)


def _full(a, values, allowance, kappa):
    est = fd.estimate(values, torch.tensor(H, dtype=torch.float64), values[0].abs(), STENCIL)
    return cmp.compare(a, est, allowance, kappa)


BATCH = 3
unit = st.floats(-1e3, 1e3, allow_nan=False)
row = st.tuples(unit, unit, unit, unit, unit)


@settings(max_examples=300, deadline=None)
@given(
    coefficients=st.lists(row, min_size=BATCH, max_size=BATCH),
    kink=st.lists(st.sampled_from([0.0, 0.0, 1e-9, 1e-3, 1.0]), min_size=BATCH, max_size=BATCH),
    at=st.lists(st.sampled_from([0.0, 0.5, -0.5, 1.5, -1.5, 3.0]), min_size=BATCH, max_size=BATCH),
    noise=st.lists(st.floats(-4, 4), min_size=BATCH, max_size=BATCH),
    offset=st.lists(st.floats(-1.5, 1.5), min_size=BATCH, max_size=BATCH),
    allowance=st.sampled_from([0.0, 1e-12, 1e-6]),
    center=st.booleans(),
)
def test_a_screen_pass_is_a_full_pass(coefficients, kink, at, noise, offset, allowance, center):
    values = _values(coefficients, kink, at, noise)
    kappa = tolerances.kappa(BATCH)
    allowed = torch.full((BATCH,), allowance, dtype=torch.float64)
    central = (values[1] - values[2]) / (2 * H)
    sigma = fd.round_off_model(values[:3], values[0].abs(), STENCIL)
    # autograd's value: within a multiple of the screen's own tolerance of the first central difference
    tol0 = kappa * 1.5 * sigma / H + allowed
    a = central + torch.tensor(offset, dtype=torch.float64) * tol0
    screened = scr.screen(a, values[:3], H, values[0].abs(), STENCIL, allowed, kappa, center=center)
    event("screened" if screened is not None else "left to the full stencil")
    if screened is not None:
        assert not bool(screened.failed.any())
        full = _full(a, values, allowed, kappa)
        assert not bool(full.failed.any()), (a, full.numerical, full.allowed)


def _sin_values(x, wrong=1.0):
    """φ(t) = sin(x + t) at the stencil's points, and autograd's cos(x) times ``wrong``."""
    values = torch.sin(x[None, :] + OFFSETS[:, None] * H)
    return wrong * torch.cos(x), values


def test_a_right_smooth_derivative_is_screened_and_a_wrong_one_is_not():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    kappa, allowed = tolerances.kappa(7), torch.zeros(7, dtype=torch.float64)
    a, values = _sin_values(x)
    verdict = scr.screen(a, values[:3], H, values[0].abs(), STENCIL, allowed, kappa)
    assert verdict is not None and not bool(verdict.failed.any())
    assert bool((verdict.ratio <= 1).all())
    wrong, values = _sin_values(x, wrong=1.01)
    assert scr.screen(wrong, values[:3], H, values[0].abs(), STENCIL, allowed, kappa) is None


def test_a_kink_at_the_point_is_left_to_the_full_stencil():
    # abs at 0: autograd's 0 is the central difference, but the one-sided slopes are -1 and 1
    values = (OFFSETS[:, None] * H).abs()
    a = torch.zeros(1, dtype=torch.float64)
    allowed = torch.zeros(1, dtype=torch.float64)
    assert scr.screen(a, values[:3], H, values[0].abs(), STENCIL, allowed, 4.0) is None
    # without φ(0) the central test alone decides, and passes it (the kink goes uncounted)
    assert scr.screen(a, values[:3], H, values[0].abs(), STENCIL, allowed, 4.0, center=False) is not None
    full = _full(a, values, allowed, 4.0)
    assert not bool(full.failed.any()) and bool(full.kink.all())


def test_deeper_stencils_always_run_in_full():
    float32 = tolerances.stencil_for(torch.float32)
    assert not scr.applies(float32) and scr.applies(STENCIL)
    a, values = _sin_values(torch.tensor([0.5], dtype=torch.float64))
    assert scr.screen(a, values[:3], float32.h0, values[0].abs(), float32, torch.zeros(1), 4.0) is None
