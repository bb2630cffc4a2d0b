"""Tolerances: the stencil per dtype, the multiplier kappa(N), autograd's allowance and within_roundings."""

from __future__ import annotations
import math

import pytest
import torch

from gradcheck_kit._engine import tolerances

E64 = 2.0**-52
E32 = 2.0**-23


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (torch.float64, E64),
        (torch.complex128, E64),
        (torch.float32, E32),
        (torch.complex64, E32),
        (torch.float16, 2.0**-10),
        (torch.bfloat16, 2.0**-7),
    ],
    ids=str,
)
def test_eps_per_dtype(dtype, expected):
    assert tolerances.eps(dtype) == expected


# (numeric dtype, levels, h0): float64 numerics two levels at the central-difference optimum eps^(1/3)
# rounded to a power of two, lower precision three levels at eps^(1/5)
STENCILS = [
    (torch.float64, 2, 2.0**-17),
    (torch.complex128, 2, 2.0**-17),
    (torch.float32, 3, 2.0**-5),
    (torch.complex64, 3, 2.0**-5),
    (torch.float16, 3, 2.0**-2),
    (torch.bfloat16, 3, 2.0**-1),
]


@pytest.mark.parametrize("dtype, levels, h0", STENCILS, ids=[str(s[0]) for s in STENCILS])
def test_stencil_per_dtype(dtype, levels, h0):
    stencil = tolerances.stencil_for(dtype)
    assert (stencil.levels, stencil.h0, stencil.dtype) == (levels, h0, dtype)
    assert stencil.points == 2 * levels
    assert stencil.multipliers == [s * 2.0**m for m in range(levels) for s in (1.0, -1.0)]


def test_stencil_description_names_its_steps():
    assert "h, 2h with Richardson" in tolerances.stencil_for(torch.float64).describe()
    assert "h, 2h, 4h with Richardson" in tolerances.stencil_for(torch.float32).describe()


# kappa(N) = max(4, sqrt(2 ln(N / alpha))): 4 until N / alpha passes e^8 (N = 2 with alpha = 1e-3), then
# slowly growing
KAPPAS = [
    (0, 4.0),
    (1, 4.0),
    (2, 4.0),
    (3, math.sqrt(2 * math.log(3e3))),
    (10**6, math.sqrt(2 * math.log(1e9))),
    (10**9, math.sqrt(2 * math.log(1e12))),
]


@pytest.mark.parametrize("n, expected", KAPPAS)
def test_kappa_of_n_comparisons(n, expected):
    assert tolerances.kappa(n) == pytest.approx(expected)


def test_kappa_grows_with_n_and_with_a_stricter_alpha():
    values = [tolerances.kappa(10**k) for k in range(10)]
    assert values == sorted(values)
    assert values[-1] < 8  # logarithmic: a billion comparisons need less than twice the single one
    assert tolerances.kappa(10**6, alpha=1e-9) > tolerances.kappa(10**6)


def test_allowance_in_float64_is_a_few_ulps_of_the_scale():
    allowance = tolerances.AnalyticAllowance(torch.float64, has_reference=False)
    scale = torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64)
    got = allowance.allowance(scale, None)
    tiny = torch.finfo(torch.float64).tiny
    expected = 16 * E64 * scale + tolerances.FLOOR_EPS * E64 * tiny
    assert torch.equal(got, expected)


def test_allowance_in_float32_uses_the_measured_difference_up_to_the_cap():
    scale = torch.ones(3, dtype=torch.float64)
    blanket = tolerances.AnalyticAllowance(torch.float32, has_reference=False).allowance(scale, None)
    assert blanket[0].item() == pytest.approx(tolerances.NO_REFERENCE_EPS * E32)
    with_reference = tolerances.AnalyticAllowance(torch.float32, has_reference=True)
    measured = torch.tensor([0.0, E32, 1.0], dtype=torch.float64)
    got = with_reference.allowance(scale, measured)
    floor = tolerances.FLOOR_EPS * E32
    assert got[0].item() == pytest.approx(floor)
    assert got[1].item() == pytest.approx(floor + tolerances.MEASURED_FACTOR * E32)
    assert got[2].item() == pytest.approx(floor + tolerances.CAP_EPS * E32)  # capped
    assert with_reference.capped(scale, measured).tolist() == [False, False, True]


def _agree(got, want, roundings=4.0, extra=0.0, eps=E64):
    f64 = torch.float64
    return tolerances.within_roundings(torch.tensor(got, dtype=f64), torch.tensor(want, dtype=f64), eps, roundings, extra)


# (got, want, roundings, which elements are bad): the allowance is roundings * eps * (|want| + max |want|)
ROUNDINGS = [
    ("identical", [1.0, -2.0], [1.0, -2.0], 4.0, [False, False]),
    ("within 4 roundings", [1.0 + 4 * E64, -2.0], [1.0, -2.0], 4.0, [False, False]),
    ("beyond 4 roundings", [1.0 + 16 * E64, -2.0], [1.0, -2.0], 4.0, [True, False]),
    ("a small entry rounds at the largest one's size", [1e-20 + 4 * E64, 1.0], [1e-20, 1.0], 4.0, [False, False]),
    ("zero roundings: exact only", [1.0 + E64, 1.0], [1.0, 1.0], 0.0, [True, False]),
    ("NaN on both sides agrees", [math.nan], [math.nan], 4.0, [False]),
    ("NaN on one side does not", [math.nan, 1.0], [0.0, 1.0], 4.0, [True, False]),
    ("inf against a finite value", [math.inf, 1.0], [1.0, 1.0], 4.0, [True, False]),
]


@pytest.mark.parametrize("got, want, roundings, bad", [r[1:] for r in ROUNDINGS], ids=[r[0] for r in ROUNDINGS])
def test_within_roundings(got, want, roundings, bad):
    assert _agree(got, want, roundings).bad.tolist() == bad


def test_a_nan_pair_leaves_the_other_entries_judged():
    assert _agree([math.nan, 1.0], [math.nan, 1.0]).bad.tolist() == [False, False]


def test_within_roundings_widens_and_reports_its_terms():
    got = torch.tensor([1.5, 2.0], dtype=torch.float32)
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    agreement = tolerances.within_roundings(got, want, E32, 2.0, extra=0.5)
    assert agreement.got.dtype == agreement.want.dtype == torch.float64
    assert agreement.diff.tolist() == [0.5, 0.0]
    assert agreement.allowed.tolist() == pytest.approx([2 * E32 * 3 + 0.5, 2 * E32 * 4 + 0.5])
    assert agreement.bad.tolist() == [False, False]  # 0.5 off, 0.5 extra allowed


def test_within_roundings_of_complex_and_empty_tensors():
    z = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex64)
    agreement = tolerances.within_roundings(z, z.to(torch.complex128) + 1e-3j, E32, 4.0)
    assert agreement.got.dtype == torch.complex128
    assert agreement.bad.tolist() == [True, True]
    empty = tolerances.within_roundings(torch.zeros(0), torch.zeros(0), E32, 4.0)
    assert empty.bad.shape == (0,)
