"""Ties in directional mode (issue 21): the directions move each tie together, the ties are judged by full
mode's group rule (so a tie's gradient sent to a wrong element or doubled fails even where the projection
cannot see it), inputs of any size are scanned, and near-ties on sparsemax's support boundary pass."""

from __future__ import annotations

import pytest
import torch
from test_core_ties import CASES, _apart_options, _point, _with_bug

import gradcheck_kit as gk

DTYPES = [torch.float64, torch.float32]
WRONG = [c for c in CASES if c[0] != "sparsemax_boundary"]  # there the tie's gradient is 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name,fn,values,moved", CASES, ids=[c[0] for c in CASES])
def test_ties_and_near_ties_pass_in_directional_and_full_mode(name, fn, values, moved, dtype):
    for apart in _apart_options(dtype):
        x = _point(values, dtype, apart, moved)
        for mode in ("directional", "full"):
            report = gk.check_gradients(fn, x, mode=mode)
            assert report.ok, f"{name} {apart} {mode}\n{report}"


@pytest.mark.parametrize("bug", ["moved", "scaled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name,fn,values,moved", WRONG, ids=[c[0] for c in WRONG])
def test_wrong_redistribution_at_a_tie_fails_in_directional_mode(name, fn, values, moved, dtype, bug):
    """With the default directions, also where the tie's rows sum to 0 (sparsemax, the soft rank), which no
    projection that moves the tie together sees."""
    for apart in ["exact", "1ulp"]:
        x = _point(values, dtype, apart, moved)
        report = gk.check_gradients(_with_bug(fn, bug), x, mode="directional", forward_ad=False)
        assert not report.ok, f"{name} {apart} {bug}\n{report}"


def test_a_tie_judged_wrong_in_directional_mode_is_named():
    x = torch.tensor([0.5, 1.0, 1.0, 0.2], dtype=torch.float64)
    from test_core_ties import sparsemax

    report = gk.check_gradients(_with_bug(sparsemax, "scaled"), x, mode="directional", forward_ad=False)
    assert not report.ok
    assert any("at a tie (x[1] == x[2])" in m.note for m in report.mismatches), report


def _sort(x):
    return torch.sort(x).values


class _DoubledTies(torch.autograd.Function):
    """sort whose backward doubles the gradient of every element tied with another (a bug at ties only)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sort(x).values

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        values, order = torch.sort(x)
        grad = torch.zeros_like(x).index_put((order,), g)
        tied = torch.zeros_like(values, dtype=torch.bool)
        same = values[1:] == values[:-1]
        tied[1:] |= same
        tied[:-1] |= same
        return torch.where(tied.index_put((order,), tied), 2 * grad, grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_a_large_input_is_scanned_for_ties(dtype):
    """10,000 elements, every value four times: above the eager scan's size, scanned once a projection fails
    (the directions split the ties), then checked again with them moved together."""
    x = (torch.arange(10_000) * 7919 % 2500).to(dtype) / 100
    report = gk.check_gradients(_sort, x, mode="directional")
    assert report.ok, report
    assert not gk.check_gradients(_DoubledTies.apply, x, mode="directional", forward_ad=False).ok
