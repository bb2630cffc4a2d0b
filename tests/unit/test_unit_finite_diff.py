"""Richardson finite differences and their error terms, on functions whose derivatives are known."""

from __future__ import annotations
import math

import numpy as np
import pytest
import torch

from gradcheck_kit._engine import tolerances
from gradcheck_kit._engine import finite_diff as fd

FLOAT64 = tolerances.stencil_for(torch.float64)
FLOAT32 = tolerances.stencil_for(torch.float32)


def _offsets(stencil):
    """The stencil's points in units of h, in the order the weights expect: 0, +1, -1, +2, -2, ..."""
    return np.array([0.0] + stencil.multipliers)


def _apply(weights, fn, x0, h):
    return float(np.dot(weights, [fn(x0 + t * h) for t in _offsets_of(weights)])) / h


def _offsets_of(weights):
    levels = (len(weights) - 1) // 2
    return [0.0] + [s * 2.0**m for m in range(levels) for s in (1, -1)]


# (stencil, highest polynomial degree each estimate differentiates exactly): the central value is
# Richardson over central differences (error ~ h^(2 levels)), the one-sided values over forward and backward
# differences (error ~ h^levels); the noise weights annihilate degrees up to points - 2.
EXACTNESS = [
    pytest.param(FLOAT64, 4, 2, 3, id="float64-2-levels"),
    pytest.param(FLOAT32, 6, 3, 5, id="float32-3-levels"),
]


@pytest.mark.parametrize("stencil, central_degree, side_degree, noise_degree", EXACTNESS)
def test_weights_differentiate_polynomials_exactly_up_to_the_stencil_order(stencil, central_degree, side_degree, noise_degree):
    w = fd.weights_for(stencil)
    x0, h = 0.3, 0.5
    for degree in range(central_degree + 2):
        def p(x, k=degree):
            return x**k

        exact = degree * x0 ** (degree - 1) if degree else 0.0
        central = _apply(w.central, p, x0, h)
        right = _apply(w.right, p, x0, h)
        left = _apply(w.left, p, x0, h)
        residual = float(np.dot(w.noise, [p(x0 + t * h) for t in _offsets_of(w.noise)]))
        assert (abs(central - exact) < 1e-12) == (degree <= central_degree), (degree, central, exact)
        assert (abs(right - exact) < 1e-12) == (degree <= side_degree), (degree, right, exact)
        assert (abs(left - exact) < 1e-12) == (degree <= side_degree), (degree, left, exact)
        assert (abs(residual) < 1e-12) == (degree <= noise_degree), (degree, residual)
    assert float(np.linalg.norm(w.noise)) == pytest.approx(1.0)


@pytest.mark.parametrize("stencil", [FLOAT64, FLOAT32], ids=["float64", "float32"])
def test_stencil_points_match_the_weights(stencil):
    w = fd.weights_for(stencil)
    assert stencil.points == 2 * stencil.levels
    for weights in (w.central, w.central_prev, w.right, w.right_prev, w.left, w.left_prev, w.noise):
        assert len(weights) == stencil.points + 1
    # a constant has no slope: every derivative weight sums to 0
    for weights in (w.central, w.central_prev, w.right, w.right_prev, w.left, w.left_prev, w.noise):
        assert abs(float(weights.sum())) < 1e-12


def _estimate(fn, x, stencil):
    """The estimates of fn'(x) at the stencil's own step, from values computed in the stencil's dtype."""
    x = torch.as_tensor(x, dtype=torch.float64)
    h = stencil.h0 * x.abs().clamp_min(1.0)
    points = torch.stack([fn((x + t * h).to(stencil.dtype)) for t in _offsets(stencil)])
    fmag = points[0].abs()
    return fd.estimate(points, h.to(stencil.dtype), fmag, stencil, x_abs=x.abs().to(stencil.dtype))


KNOWN = [
    ("sin", torch.sin, torch.cos),
    ("exp", torch.exp, torch.exp),
    ("log", torch.log, lambda x: 1 / x),
    ("tanh", torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    ("x^5", lambda x: x**5, lambda x: 5 * x**4),
]
POINTS = [0.3, 1.7, 4.0, 25.0]


@pytest.mark.parametrize("stencil", [FLOAT64, FLOAT32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, fn, derivative", KNOWN, ids=[k[0] for k in KNOWN])
def test_error_estimate_bounds_the_actual_error(name, fn, derivative, stencil):
    # one point at a time: the round-off model takes the batch's rms of |f| as the output's typical size
    x = torch.tensor(POINTS, dtype=torch.float64)
    one_by_one = [_estimate(fn, x[i : i + 1], stencil) for i in range(len(POINTS))]
    est = fd.Estimates(*(torch.cat([getattr(e, f) for e in one_by_one]) for f in ("central", "central_err", "right", "right_err", "left", "left_err")))
    exact = derivative(x)
    actual = (est.central.double() - exact).abs()
    assert bool((actual <= est.central_err.double()).all()), (name, actual, est.central_err)
    # ... and is useful: float64 numerics pin the central value to 1e-7 of it, float32 ones to a few percent
    relative = (est.central_err.double() / exact.abs())[exact.abs() > 1e-3].max().item()
    assert relative < (1e-7 if stencil.dtype == torch.float64 else 5e-2), relative
    # the one-sided values (for kinks) reach 4h on one side: bounded where fn is smooth on that scale
    # (not sin at 25 in float32 numerics, whose 4h is a quarter period)
    smooth = x.abs() < 5
    for value, err in ((est.right, est.right_err), (est.left, est.left_err)):
        actual = (value.double() - exact).abs()
        assert bool((actual <= err.double())[smooth].all()), (name, actual, err)


@pytest.mark.parametrize("stencil", [FLOAT64, FLOAT32], ids=["float64", "float32"])
def test_truncation_parts_are_the_distance_to_the_previous_level(stencil):
    est = _estimate(torch.exp, torch.tensor([0.5, 2.0]), stencil)
    assert bool((est.central_trunc <= est.central_err).all())
    assert bool((est.right_trunc <= est.right_err).all())
    assert bool((est.left_trunc <= est.left_err).all())
    # one-sided differences converge more slowly: their truncation is the larger part
    assert bool((est.right_trunc > est.central_trunc).all())


@pytest.mark.parametrize("stencil", [FLOAT64, FLOAT32], ids=["float64", "float32"])
def test_at_a_kink_the_one_sided_slopes_are_the_left_and_right_derivatives(stencil):
    est = _estimate(torch.abs, torch.tensor([0.0]), stencil)
    assert est.right.item() == pytest.approx(1.0, abs=1e-6)
    assert est.left.item() == pytest.approx(-1.0, abs=1e-6)
    assert est.central.item() == pytest.approx(0.0, abs=1e-6)


def test_round_off_model_grows_with_the_points():
    # computed from some of the stencil's points it is at most the value from all of them
    values = torch.tensor([[1.0, -3.0], [2.0, 5.0], [0.5, 1.0], [4.0, -8.0], [0.1, 0.2]], dtype=torch.float64)
    fmag = values[0].abs()
    full = fd.round_off_model(values, fmag, FLOAT64)
    for k in range(1, values.shape[0]):
        assert bool((fd.round_off_model(values[:k], fmag, FLOAT64) <= full).all())
    e = tolerances.eps(torch.float64)
    assert bool((full >= tolerances.NOISE_MODEL_EPS * e * values.abs().amax(dim=0)).all())


def test_noise_sigma_is_at_least_the_model_and_sees_noise_above_it():
    x = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    h = FLOAT64.h0
    points = torch.stack([torch.sin(x + t * h) for t in _offsets(FLOAT64)])
    fmag = points[0].abs()
    model = fd.round_off_model(points, fmag, FLOAT64)
    smooth = fd.noise_sigma(points, fmag, FLOAT64)
    assert bool((smooth >= model).all())
    assert bool((smooth <= 4 * model).all())
    noisy_points = points + 1e-12 * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64)[:, None]
    noisy = fd.noise_sigma(noisy_points, fmag, FLOAT64)
    assert bool((noisy > 10 * model).all())


def test_subnormal_values_have_a_round_off_floor():
    tiny = torch.finfo(torch.float64).tiny
    values = torch.zeros(5, 1, dtype=torch.float64)
    model = fd.round_off_model(values, values[0].abs(), FLOAT64)
    assert model.item() == pytest.approx(tolerances.NOISE_MODEL_EPS * tolerances.eps(torch.float64) * tiny)
    assert math.isfinite(model.item()) and model.item() > 0
