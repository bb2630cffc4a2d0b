"""Full mode on many-input-coordinate vmappable functions: the shortcuts of its ±h screen and of autograd's
rows (shared memory for the points, every row from one batched backward) keep every verdict and name the
wrong element."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit._engine.limits import tuned


def _matmul_one_wrong(rel: float, row: int = 3, col: int = 5, out_col: int = 7):
    """``a @ b`` whose derivative d out[row, out_col] / d a[row, col] is off by ``rel`` (relative); the
    forward value is exactly ``a @ b`` (the added term is zero), under vmap too."""

    def fn(a, b):
        out = a @ b
        moved = a[row, col] - a[row, col].detach()  # zero, with derivative 1 along a[row, col]
        bump = torch.zeros_like(out)
        bump[row, out_col] = 1.0
        return out + rel * b[col, out_col].detach() * moved * bump

    return fn


@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=pytest.mark.slow)])
def test_one_wrong_element_of_a_large_matmul_jacobian_fails_and_is_named(dtype):
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randn(24, 24, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for _ in range(2))
    report = gk.check_gradients(_matmul_one_wrong(0.01), a, b, mode="full")
    assert not report.ok
    backward = [m for m in report.mismatches if m.check == "backward"]
    assert len(backward) == 1
    m = backward[0]
    assert (m.input_index, tuple(m.index), tuple(m.output_element)) == (0, (3, 5), (3, 7))
    assert gk.check_gradients(_matmul_one_wrong(0.0), a, b, mode="full").ok


def test_a_large_correct_matmul_passes_with_every_input_settled_by_the_screen():
    g = torch.Generator().manual_seed(4)
    a, b = (torch.randn(24, 24, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    report = gk.check_gradients(torch.matmul, a, b, mode="full")
    assert report.ok
    backward = [group for group in report.groups if group.check == "backward"]
    assert [group.compared for group in backward] == [576 * 576, 576 * 576]


def test_outputs_that_are_views_of_the_input_keep_their_points_when_inputs_are_screened_apart():
    """The screen's points of one input are the memory of the next input's points (and the next check's),
    unless fn's outputs are views of them (``a.reshape(-1)`` under vmap is a view of the batch of points):
    values overwritten with the next input's points would send ``a`` to the whole stencil (60 more
    evaluations) or leave its entries unchecked."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_()
    b = (100 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()  # other steps than a's

    def fn(a, b):
        return a.reshape(-1), a * b

    with tuned(joint_screen_entries=0):  # one screen per input
        report = gk.check_gradients(fn, a, b, mode="full")
    assert report.ok
    backward = [group for group in report.groups if group.check == "backward"]
    assert [(group.compared, group.unchecked) for group in backward] == [(900, 0)] * 4
    assert report.evaluations <= 2 * 60 + 10  # f at ±h of every coordinate, and a few more
