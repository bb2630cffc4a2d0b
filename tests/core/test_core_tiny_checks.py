"""Tiny checks: the re-entrancy and linearity checks pass from two backwards (of c and -c) against the checked
Jacobian, and every bug they exist for still goes to the full checks, which name it."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import gradcheck_kit as gk
from tests.helpers import DoubleScalesGradOutputInPlace, randn, unary


def _counting(calls: list):
    return unary(torch.sin, lambda x: _count(calls, x.cos()), name="CountingSin").apply


def _count(calls: list, value):
    calls[0] += 1
    return value


@pytest.mark.parametrize("dtype, backwards", [(torch.float64, 13), (torch.float32, 23)])
def test_a_passing_tiny_check_runs_two_backwards_for_reentrant_and_linearity(dtype, backwards):
    # full mode (auto checks this fn along directions): 10 Jacobian rows and a zero row one at a time (a
    # custom Function: no batched backward), float32 also for its float64 reference; then b(c) and b(-c):
    # five backwards fewer than both checks in full
    calls = [0]
    report = gk.check_gradients(_counting(calls), randn(10, dtype=dtype).requires_grad_(), mode="full")
    assert report.ok, str(report)
    assert calls[0] == backwards
    assert report.check("reentrant").status == "passed"
    assert report.check("linearity").status == "passed"
    assert "backward(-c) = -backward(c)" in report.check("linearity").detail


@pytest.mark.parametrize("transform", [lambda g: g.abs(), lambda g: g**2, lambda g: g.clamp(-1, 1)],
                         ids=["abs", "square", "clamp"])
def test_a_one_element_backward_non_linear_in_grad_output_fails_linearity(transform):
    # one element: c has one sign, -c the other (abs and square agree with J·c on one of them only)
    report = gk.check_gradients(unary(torch.sin, torch.cos, on_grad=transform).apply, randn(1).requires_grad_())
    assert report.check("linearity").status == "failed", str(report)


def test_a_backward_writing_into_grad_output_still_fails_reentrant():
    report = gk.check_gradients(DoubleScalesGradOutputInPlace.apply, randn(4).requires_grad_())
    assert report.check("reentrant").status == "failed", str(report)
    assert "modified grad_output in place" in report.check("reentrant").detail


def test_a_float32_check_whose_rows_share_backwards_with_its_float64_reference_passes():
    x = randn(3, 4, dtype=torch.float32).requires_grad_()
    report = gk.check_gradients(lambda t: torch.softmax(t, -1), x)
    assert report.ok, str(report)
    assert "autograd batched" in report.check("backward").detail
    assert report.check("reentrant").status == "passed" and report.check("linearity").status == "passed"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiny_checks_on_small_array_paths_still_name_a_one_percent_backward_or_jvp_error(dtype):
    # the small-array paths (numpy screens and comparisons, the engine's batched rows, forward-mode passes at a
    # level in hand) of a 10-element check: right passes, 1% off the backward or the jvp fails that check
    x = randn(10, dtype=dtype).requires_grad_()
    statuses = lambda report: {c.name: c.status for c in report.checks}  # noqa: E731
    right = gk.check_gradients(unary(torch.sin, torch.cos, vmap_rule=True, jvp=1.0).apply, x, forward_ad=True)
    assert right.ok, str(right)
    backward = gk.check_gradients(unary(torch.sin, torch.cos, vmap_rule=True, jvp=1.0, factor=1.01).apply, x)
    assert statuses(backward)["backward"] == "failed"
    jvp = gk.check_gradients(unary(torch.sin, torch.cos, vmap_rule=True, jvp=1.01).apply, x, forward_ad=True)
    assert statuses(jvp)["backward"] == "passed" and statuses(jvp)["forward_ad"] == "failed"


def test_a_check_leaves_torch_forward_mode_usable():
    # the forward-mode passes enter and leave torch's dual level through its own entry points
    x = randn(10)
    assert gk.check_gradients(torch.sin, x.clone().requires_grad_()).ok
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(torch.sin(fwAD.make_dual(x, torch.ones_like(x)))).tangent
    assert torch.allclose(tangent, x.cos())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_public_autograd_calls_give_the_same_reports_as_the_direct_engine_calls(dtype, monkeypatch):
    # a torch whose private engine and forward-mode entry points are missing or differ gets torch.autograd.grad
    # and fwAD's public calls: the same statuses, evaluations and mismatches
    from gradcheck_kit._engine import analytic, budget

    # the second opinions' budget follows fn's timed calls (a busy machine gives fewer): fixed here
    monkeypatch.setattr(budget.Budget, "_per_call", staticmethod(lambda run: 1e-6))
    x = randn(10, dtype=dtype).requires_grad_()
    # full mode throughout: auto mode's plan for a cheap fn follows the forward's timing (one vmap probe more
    # or less), which is not what this compares
    cases = [
        (torch.sin, {"mode": "full"}),
        (lambda t: torch.softmax(t, -1), {"mode": "full"}),
        (unary(torch.sin, torch.cos, vmap_rule=True, jvp=1.0).apply, {"forward_ad": True, "mode": "full"}),
        (unary(torch.sin, torch.cos, vmap_rule=True, jvp=1.0, at=3, factor=1.01).apply, {"mode": "full"}),
        (unary(torch.sin, torch.cos, jvp=1.01).apply, {"forward_ad": True, "mode": "full"}),
    ]

    def summary(report):
        return (
            {c.name: c.status for c in report.checks}, report.evaluations,
            [(m.check, m.input_index, m.index, m.output_element) for m in report.mismatches],
        )

    direct = [summary(gk.check_gradients(fn, x, **kw)) for fn, kw in cases]
    assert analytic.direct_calls_work()
    monkeypatch.setattr(analytic, "_DIRECT", [False])
    monkeypatch.setattr(analytic, "_RAW_DUAL", False)
    public = [summary(gk.check_gradients(fn, x, **kw)) for fn, kw in cases]
    assert public == direct
    assert [s[0]["backward"] for s in public] == ["passed", "passed", "passed", "failed", "passed"]
    assert public[4][0]["forward_ad"] == "failed"


def test_torch_func_vmap_gives_the_same_reports_as_the_lean_vmap_call(monkeypatch):
    # a torch whose batching calls are missing or differ gets torch.func.vmap: the same statuses, paths, notes,
    # evaluations, worst ratios and mismatches, also where vmap cannot run fn (its reason in the path); full mode
    # throughout (auto mode's plan for a cheap fn follows the forward's timing)
    from gradcheck_kit._engine import evaluate

    x = randn(10).requires_grad_()
    pair = lambda a, b: (torch.sin(a) * b, (a * b).sum())  # noqa: E731
    cases = [
        (torch.sin, (x,), {"mode": "full"}),
        (pair, (randn(3, 4).requires_grad_(), randn(4).requires_grad_()), {"mode": "full"}),
        (lambda t: torch.sin(t).abs(), (randn(6, dtype=torch.complex128).requires_grad_(),), {"mode": "full"}),
        (unary(torch.sin, torch.cos, vmap_rule=True, at=3, factor=1.01).apply, (x,), {"mode": "full"}),
        (unary(torch.sin, torch.cos).apply, (x,), {"mode": "full"}),  # no vmap rule: point by point
    ]

    def summary(report):
        return (
            {c.name: (c.status, c.detail) for c in report.checks}, report.path, report.method, report.evaluations,
            [n.code for n in report.notes], [(g.check, g.input_index, g.output_index, g.worst_ratio) for g in report.groups],
            [(m.check, m.input_index, m.index, m.output_element, m.analytic, m.numerical) for m in report.mismatches],
        )

    flat = [summary(gk.check_gradients(fn, *inputs, **kw)) for fn, inputs, kw in cases]
    assert evaluate.lean_vmap_works()
    monkeypatch.setattr(evaluate, "_LEAN", [False])
    public = [summary(gk.check_gradients(fn, *inputs, **kw)) for fn, inputs, kw in cases]
    assert public == flat
    assert [s[1].split(" ")[0] for s in public] == ["vmap", "vmap", "vmap", "vmap", "loop"]
    assert [s[0]["backward"][0] for s in public] == ["passed", "passed", "passed", "failed", "passed"]


class _Weighted:
    """A callable instance: its class's ``__call__`` names the inputs."""

    def __call__(self, weights, bias):
        return torch.sin(weights) + bias


def test_a_callable_instance_names_its_inputs_after_its_class_call_unless_it_says_otherwise():
    import inspect

    x, b = randn(3).requires_grad_(), randn(3).requires_grad_()
    for _ in range(2):  # the second time from the names kept for the class
        assert [i.name for i in gk.check_gradients(_Weighted(), x, b).inputs] == ["weights", "bias"]
    own = _Weighted()
    P = inspect.Parameter
    own.__signature__ = inspect.Signature([P("w", P.POSITIONAL_ONLY), P("c", P.POSITIONAL_ONLY)])
    assert [i.name for i in gk.check_gradients(own, x, b).inputs] == ["w", "c"]
    assert [i.name for i in gk.check_gradients(_Weighted(), x, b).inputs] == ["weights", "bias"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_b_of_c_and_minus_c_go_with_the_jacobian_rows_where_no_python_code_runs_in_the_backward(dtype):
    # (float32: with the float64 reference's rows, in the engine call both graphs share)
    x = randn(10, dtype=dtype).requires_grad_()
    report = gk.check_gradients(torch.sin, x)
    assert report.ok, str(report)
    assert "batched with the Jacobian's rows" in report.check("reentrant").detail
    # a hook taking abs of the gradient (Python code in the backward): rows one at a time, and the
    # non-linearity in grad_output still fails linearity
    def fn(t):
        y = torch.sin(t)
        if y.requires_grad:
            y.register_hook(lambda g: g.abs())
        return y * 1.0

    hooked = gk.check_gradients(fn, x)
    assert hooked.check("linearity").status == "failed", str(hooked)
