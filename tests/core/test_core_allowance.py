"""The allowance's pieces shared by both modes, and the precision a function computed its values in, as
tables: given tolerances, the cap, the natural size, ``coarsest_precision``."""

from __future__ import annotations

import pytest
import torch

from gradcheck_kit._engine import allowance, tolerances
from gradcheck_kit._engine.finite_diff import Estimates

F32 = tolerances.eps(torch.float32)


def _estimates(central):
    c = torch.tensor(central, dtype=torch.float64)
    return Estimates(*(c for _ in Estimates.__dataclass_fields__))


@pytest.mark.parametrize(
    "atol, rtol, central, want",
    [
        (None, None, [1.0], None),  # nothing given: the dtype's policy decides
        (1e-3, None, [5.0, -5.0], [1e-3, 1e-3]),
        (None, 1e-2, [5.0, -5.0], [5e-2, 5e-2]),
        (1e-3, 1e-2, [2.0, float("nan")], [1e-3 + 2e-2, 1e-3]),  # a NaN estimate adds no rtol part
    ],
)
def test_given_tolerances_replace_the_policy(atol, rtol, central, want):
    got = allowance.given({"atol": atol, "rtol": rtol}, _estimates(central), (len(central),))
    if want is None:
        assert got is None
    else:
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_a_screen_gets_atol_alone_because_rtol_scales_the_full_stencils_value():
    got = allowance.given({"atol": 1e-3, "rtol": 0.5}, None, (2, 3))
    assert got.shape == (2, 3) and bool((got == 1e-3).all())
    assert bool((allowance.given({"atol": None, "rtol": 0.5}, None, (2,)) == 0).all())


@pytest.mark.parametrize(
    "measured, capped",
    [(None, False), ([0.0], False), ([17 * F32], True), ([15 * F32], False)],  # 4 x measured > 64 eps x scale
)
def test_the_cap_is_reached_by_four_times_the_measured_part_above_64_eps(measured, capped):
    policy = tolerances.AnalyticAllowance(torch.float32, True)
    scale = torch.ones(1, dtype=torch.float64)
    m = None if measured is None else torch.tensor(measured, dtype=torch.float64)
    assert allowance.capped(policy, scale, m) is capped


@pytest.mark.parametrize(
    "v_norm, out_rms, x_rms, want",
    [(1.0, 2.0, 0.5, 2.0), (1.0, 2.0, 4.0, 0.5), (3.0, 2.0, 0.0, 6.0), (0.0, 2.0, 1.0, 0.0)],
)
def test_the_natural_size_is_v_times_out_over_x_at_least_one(v_norm, out_rms, x_rms, want):
    assert allowance.natural_size(v_norm, out_rms, x_rms) == want


@pytest.mark.parametrize(
    "values, dtype, kwargs, want",
    [
        ([1.5, 0.25], torch.float64, {}, torch.bfloat16),  # few bits: bfloat16's values
        ([1.0 + 2.0**-9], torch.float64, {}, torch.float16),  # 10 significant bits
        ([1.0 + 2.0**-20], torch.float64, {}, torch.float32),
        ([1.0 + 2.0**-40], torch.float64, {}, None),  # float64's own
        ([1.5, float("nan")], torch.float64, {}, torch.bfloat16),  # finite elements decide
        ([1.5, float("nan")], torch.float64, {"finite_only": False}, None),  # a NaN is no value of any
        ([1.5], torch.float32, {"finer_than": tolerances.eps(torch.bfloat16)}, None),  # nothing coarser asked
        ([1.0 + 2.0**-9], torch.float64, {"candidates": (torch.bfloat16,)}, None),
    ],
)
def test_the_coarsest_precision_whose_values_these_are(values, dtype, kwargs, want):
    assert tolerances.coarsest_precision([torch.tensor(values, dtype=dtype)], **kwargs) == want
