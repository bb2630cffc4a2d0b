"""The comparison of autograd values with numerical estimates, on hand-made estimates: each row of a table
is one derivative, and the verdict (agree, disagree, kink, unchecked and why) is read off the Verdict."""

from __future__ import annotations

import math

import pytest
import torch

from gradcheck_kit._engine import finite_diff as fd
from gradcheck_kit._engine import compare as cmp

NAN = math.nan
KAPPA = 4.0
ERR = 1e-6  # every estimate's error unless a row says otherwise


def _estimates(rows, trunc=False):
    """Estimates from rows of (central, right, left[, central_err, right_err, left_err])."""
    cols = list(zip(*[tuple(r[:3]) + tuple(r[3:] or (ERR, ERR, ERR)) for r in rows]))
    c, r, l, ce, re, le = (torch.tensor(col, dtype=torch.float64) for col in cols)
    if not trunc:
        return fd.Estimates(c, ce, r, re, l, le)
    return fd.Estimates(c, ce, r, re, l, le, central_trunc=ce, right_trunc=re, left_trunc=le)


def _compare(analytic, rows, allowance=0.0, trunc=False):
    a = torch.tensor(analytic, dtype=torch.float64)
    return cmp.compare(a, _estimates(rows, trunc), torch.full_like(a, allowance), KAPPA)


def _verdict(v, i):
    if bool(v.unchecked[i]):
        return "unchecked_" + cmp.UNCHECKED_CAUSES[int(v.cause[i])]
    if bool(v.failed[i]):
        return "disagree"
    return "kink" if bool(v.kink[i]) else "agree"


# (autograd value, (central, right, left[, their errors]), verdict)
TABLE = [
    ("equal", 1.0, (1.0, 1.0, 1.0), "agree"),
    ("within kappa errors", 1.0 + 3.9 * ERR, (1.0, 1.0, 1.0), "agree"),
    ("beyond kappa errors", 1.0 + 4.1 * ERR, (1.0, 1.0, 1.0), "disagree"),
    ("one percent off", 1.01, (1.0, 1.0, 1.0), "disagree"),
    ("sign flipped", -1.0, (1.0, 1.0, 1.0), "disagree"),
    ("zero against zero", 0.0, (0.0, 0.0, 0.0), "agree"),
    # relu at 0: the slopes on the two sides are 0 and 1; any value between them is a subgradient
    ("kink at the left slope", 0.0, (0.5, 1.0, 0.0), "kink"),
    ("kink in between", 0.5, (0.5, 1.0, 0.0), "kink"),
    ("kink at the right slope", 1.0, (0.5, 1.0, 0.0), "kink"),
    ("beyond the right slope", 2.0, (0.5, 1.0, 0.0), "disagree"),
    ("below the left slope", -1.0, (0.5, 1.0, 0.0), "disagree"),
    # a kink near the point spoils the central value and one side, whose error estimate shows it
    ("right side clean, left contaminated", 1.0, (0.7, 1.0, 0.4, 1e-2, ERR, 1e-2), "kink"),
    ("left side clean, right contaminated", 1.0, (0.7, 0.4, 1.0, 1e-2, 1e-2, ERR), "kink"),
    ("both sides clean and disagreeing with it", 1.0, (0.7, 0.4, 0.4, 1e-2, ERR, ERR), "disagree"),
    # nothing could be computed: never a silent pass, never a failure
    ("no finite estimate", 1.0, (NAN, NAN, NAN), "unchecked_nonfinite"),
    ("infinite estimates", 1.0, (math.inf, math.inf, -math.inf), "unchecked_nonfinite"),
    ("only the right side finite", 1.0, (NAN, 1.0, NAN), "kink"),
    ("non-finite autograd value", NAN, (1.0, 1.0, 1.0), "disagree"),
    ("infinite autograd value", math.inf, (1.0, 1.0, 1.0), "disagree"),
]


@pytest.mark.parametrize("analytic, row, expected", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_verdict_of_one_derivative(analytic, row, expected):
    v = _compare([analytic], [row])
    assert _verdict(v, 0) == expected


def test_a_table_is_judged_element_by_element():
    v = _compare([t[1] for t in TABLE], [t[2] for t in TABLE])
    assert [_verdict(v, i) for i in range(len(TABLE))] == [t[3] for t in TABLE]


def test_allowance_widens_the_agreement():
    rows = [(1.0, 1.0, 1.0)] * 2
    assert _verdict(_compare([1.001, 1.001], rows), 0) == "disagree"
    assert _verdict(_compare([1.001, 1.001], rows, allowance=2e-3), 0) == "agree"


def test_ratio_and_what_was_allowed():
    v = _compare([1.0 + 8 * ERR, 1.0, NAN, 1.0], [(1.0, 1.0, 1.0)] * 3 + [(NAN, NAN, NAN)], allowance=0.0)
    assert v.allowed[0].item() == pytest.approx(KAPPA * ERR)
    assert v.ratio[0].item() == pytest.approx(2.0, rel=1e-6)  # 8 errors against kappa = 4 allowed
    assert v.ratio[1].item() == 0.0
    assert v.ratio[2].item() >= 1e300  # a non-finite autograd value is as far as can be
    assert v.ratio[3].item() == 0.0  # unchecked: no distance
    assert v.numerical[0].item() == 1.0


def test_a_derivative_outside_the_kink_interval_has_a_ratio_above_one():
    # the central value (the average of the sides) is right next to it, but it is not between the slopes
    v = _compare([1.0 + 10 * ERR], [(0.5, 1.0, 0.0)])
    assert bool(v.failed[0]) and bool(v.sharp_kink[0])
    assert v.ratio[0].item() > 1.0


def test_shown_value_falls_back_to_a_usable_side():
    v = _compare([1.0], [(NAN, 1.0, NAN)])
    assert v.numerical[0].item() == 1.0 and bool(v.kink[0])


def test_a_jump_inside_the_stencil_is_unchecked():
    # every estimate grows like 1/h and moves by a large fraction between Richardson levels: f jumps there
    huge = 1e8
    jump = (huge, huge, huge, 0.5 * huge, 0.5 * huge, 0.5 * huge)
    v = _compare([1.0], [jump], trunc=True)
    assert _verdict(v, 0) == "unchecked_jump"
    # the same estimates near autograd's own (huge) value are a derivative, compared as usual
    v = _compare([huge], [jump], trunc=True)
    assert not bool(v.unchecked[0])


def test_cause_codes_name_the_note_codes():
    assert set(cmp.UNCHECKED_CAUSES.values()) >= {"nonfinite", "jump", "underflow", "flat"}
    v = _compare([1.0, 1.0], [(1.0, 1.0, 1.0), (NAN, NAN, NAN)])
    assert v.cause.tolist() == [0, 1]


def test_batch_shape_is_kept():
    a = torch.ones(2, 3, dtype=torch.float64)
    est = fd.Estimates(*(torch.ones(2, 3, dtype=torch.float64) * s for s in (1.0, ERR, 1.0, ERR, 1.0, ERR)))
    v = cmp.compare(a, est, torch.zeros_like(a), KAPPA)
    for field in (v.failed, v.kink, v.unchecked, v.numerical, v.allowed, v.ratio):
        assert field.shape == (2, 3)
    assert not bool(v.failed.any())


@pytest.mark.parametrize("trunc", [False, True])
def test_numpy_arrays_get_the_verdict_torch_tensors_get(trunc):
    """compare on numpy arrays (full mode's few open entries) gives every field torch's compare gives."""
    rows = [t[2] for t in TABLE] + [(1.0, 1.0, 1.0, 0.0, 0.0, 0.0), (NAN, NAN, NAN, NAN, NAN, NAN)]
    analytic = [t[1] for t in TABLE] + [1.0, math.inf]
    est = _estimates(rows, trunc)
    a = torch.tensor(analytic, dtype=torch.float64)
    allow = torch.full_like(a, 1e-7)
    want = cmp.compare(a, est, allow, KAPPA)
    host = fd.Estimates(**{k: None if v is None else v.numpy() for k, v in vars(est).items()})
    got = cmp.compare(a.numpy(), host, allow.numpy(), KAPPA)
    for name, value in vars(want).items():
        if value is None:
            assert getattr(got, name) is None
        else:
            torch.testing.assert_close(torch.from_numpy(getattr(got, name)), value, rtol=0, atol=0, equal_nan=True, msg=name)
