"""Wrong gradients that used to pass: a backward wrong from its 2nd call on, one non-linear in
grad_output, a forward that changes between calls, and a check that compared nothing."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import around, randn, unary

MODES = ["auto", "full", "directional"]
DTYPES = [torch.float32, torch.float64]


# -- item 5: a backward wrong from its second call on ------------------------------------------------------
def _wrong_from_second_call():
    calls = [0]

    class _Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            calls[0] += 1
            (x,) = ctx.saved_tensors
            return g * x.cos() * (1.0 if calls[0] == 1 else 1.01)

    return _Sin.apply


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_a_backward_wrong_from_its_second_call_fails(mode, dtype, shape):
    report = gk.check_gradients(_wrong_from_second_call(), randn(*shape, dtype=dtype), mode=mode)
    assert not report.ok
    assert report.check("reentrant").status == "failed", str(report)


def test_a_backward_wrong_from_its_second_call_names_the_first_pass():
    report = gk.check_gradients(_wrong_from_second_call(), randn(5), mode="full")
    assert "a later backward differs from the first" in report.check("reentrant").detail


def test_a_hook_wrong_from_its_second_call_on_a_built_in_graph_fails():
    # no custom Function: the hook is the only Python code in the backward, and the first-pass comparison
    # (made only where Python code may run) names it
    def fn(x):
        calls = [0]

        def hook(g):
            calls[0] += 1
            return g if calls[0] == 1 else g * 1.01

        y = x * 2
        y.register_hook(hook)
        return y.sin()

    report = gk.check_gradients(fn, randn(5, dtype=torch.float64), mode="full")
    assert not report.ok
    assert report.check("reentrant").status == "failed", str(report)
    assert "a later backward differs from the first" in report.check("reentrant").detail


# -- item 3: a backward non-linear in grad_output ----------------------------------------------------------
NON_LINEAR = {
    "clamp": lambda g: g.clamp(-1, 1),
    "abs": lambda g: g.abs(),
    "square": lambda g: g**2,
    "sign": lambda g: g.sign(),
    "normalised": lambda g: g / g.abs().max(),
}


def _sin_with_backward(transform):
    return unary(torch.sin, torch.cos, on_grad=transform).apply


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(NON_LINEAR))
@pytest.mark.parametrize("shape", [(), (6,)])
def test_a_backward_non_linear_in_grad_output_fails(name, mode, shape):
    report = gk.check_gradients(_sin_with_backward(NON_LINEAR[name]), randn(*shape), mode=mode)
    assert not report.ok
    assert report.check("linearity").status == "failed", str(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(NON_LINEAR))
def test_non_linearity_is_caught_in_low_precision(name, dtype):
    report = gk.check_gradients(_sin_with_backward(NON_LINEAR[name]), randn(3, 4, dtype=dtype))
    assert report.check("linearity").status == "failed", str(report)


def test_the_linearity_failure_says_what_is_wrong():
    report = gk.check_gradients(_sin_with_backward(NON_LINEAR["abs"]), randn(5))
    detail = report.check("linearity").detail
    assert detail.startswith("backward is not linear in grad_output: at x[")
    assert "3·backward(v1) - 2·backward(v2)" in detail


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    "fn, shapes",
    [
        (torch.sin, [(3, 4)]),
        (torch.matmul, [(16, 32), (32, 8)]),
        (lambda x: torch.softmax(x, -1), [(4, 9)]),
        (lambda x: torch.nn.functional.layer_norm(x, (12,)), [(3, 12)]),
        (lambda x: (x * 1e4 - x * 1e4 + x).sum(), [(64,)]),
        # a bias in front of a normalisation: its gradient is zero, made of terms that cancel
        (lambda b: torch.nn.functional.layer_norm(randn(4, 6, seed=9).to(b.dtype) * 3 + b, (6,)), [(6,)]),
        (
            lambda b: torch.nn.functional.batch_norm(randn(5, 3, seed=9).to(b.dtype) + b, None, None, training=True),
            [(3,)],
        ),
    ],
    ids=["sin", "matmul", "softmax", "layer_norm", "cancelling", "bias_before_layer_norm", "bias_before_batch_norm"],
)
def test_a_correct_backward_is_linear_within_rounding(fn, shapes, dtype):
    inputs = [randn(*s, dtype=dtype, seed=n).requires_grad_(True) for n, s in enumerate(shapes)]
    report = gk.check_gradients(fn, *inputs)
    assert report.check("linearity").status == "passed", str(report)


# -- item 4: a forward that changes between calls ----------------------------------------------------------
def _custom(forward, backward_factor):
    return around(forward, factor=backward_factor).apply


def _scaled_after_first_call():
    calls = [0]

    def forward(x):
        calls[0] += 1
        return x.sin() * (1.0 if calls[0] == 1 else 1.1)

    return _custom(forward, 100.0)


def _annealed_softmax():
    calls = [0]

    def forward(x):
        calls[0] += 1
        return torch.softmax(x / (1 + 0.01 * calls[0]), dim=-1)

    return _custom(forward, 1.3)


def _generator_noise():
    gen = torch.Generator().manual_seed(1)
    return _custom(lambda x: x.sin() + 1e-3 * torch.randn(x.shape, generator=gen, dtype=x.dtype), 1.1)


def _numpy_noise():
    import numpy as np

    rng = np.random.default_rng(0)  # the same kind of state as numpy's global generator, not reseeded
    return _custom(lambda x: x.sin() + 1e-3 * torch.from_numpy(rng.standard_normal(tuple(x.shape))), 1.1)


def _changes_from_third_call(what):
    calls = [0]

    def fn(x):
        calls[0] += 1
        if calls[0] < 3:
            return x.sin()
        if what == "None":
            return None
        if what == "shape":
            return x.sin()[:2]
        if what == "nan":
            return x.sin() * float("nan")
        raise ValueError("the third call fails")

    return fn


CHANGING = {
    "x1.1 after the first call, backward 100x": (_scaled_after_first_call, (5,)),
    "annealed softmax, backward 30% off": (_annealed_softmax, (4, 5)),
    "torch.Generator noise, backward 10% off": (_generator_noise, (5,)),
    "numpy noise, backward 10% off": (_numpy_noise, (5,)),
    "None from the 3rd call": (lambda: _changes_from_third_call("None"), (5,)),
    "another shape from the 3rd call": (lambda: _changes_from_third_call("shape"), (5,)),
    "NaN from the 3rd call": (lambda: _changes_from_third_call("nan"), (5,)),
    "raises from the 3rd call": (lambda: _changes_from_third_call("raise"), (5,)),
}


@pytest.mark.parametrize("mode", ["auto", "directional"])
@pytest.mark.parametrize("name", list(CHANGING))
def test_a_function_that_changes_between_calls_is_an_error(name, mode):
    make, shape = CHANGING[name]
    report = gk.check_gradients(make(), randn(*shape), mode=mode)
    assert not report.ok
    assert report.errors and report.errors[0].startswith("fn is not a deterministic function of its inputs"), str(
        report
    )


def test_the_determinism_error_names_what_moved():
    report = gk.check_gradients(_scaled_after_first_call(), randn(5))
    assert "5 of 5 element(s) of output 0 changed, the largest at out[" in report.errors[0]


def test_a_changing_function_within_nondet_tol_is_not_an_error():
    calls = [0]

    def fn(x):
        calls[0] += 1
        return x.sin() + 1e-12 * calls[0]

    report = gk.check_gradients(fn, randn(5), nondet_tol=1e-6)
    assert report.ok, str(report)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_from_the_global_generator_still_passes(mode):
    report = gk.check_gradients(lambda x: torch.nn.functional.dropout(x.sin(), 0.5), randn(4, 5), mode=mode)
    assert report.ok, str(report)


# -- item 6: a check that compared nothing -----------------------------------------------------------------
_SqrtSevenTimes = unary(torch.sqrt, lambda x: 0.5 / x.sqrt(), factor=7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_wrong_sqrt_on_its_domain_edge_fails_one_sided(dtype):
    # x - h leaves sqrt's domain at x = 1e-12: the central stencil is NaN, one-sided stencils inside it are not
    report = gk.check_gradients(_SqrtSevenTimes.apply, torch.tensor([1e-12], dtype=dtype))
    assert not report.ok
    assert report.check("backward").status == "failed"
    assert report.compared == 1 and report.failed == 1
    assert "one_sided" in report.note_codes, report.notes


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_right_sqrt_on_its_domain_edge_passes_one_sided(dtype):
    report = gk.check_gradients(torch.sqrt, torch.tensor([1e-12, 1.0, 2.0], dtype=dtype))
    assert report.ok, str(report)
    assert not any(str(code).startswith("unchecked_") for code in report.note_codes), report.notes
    assert any(n.code == "one_sided" and n.fields == ("x", 0, 1) for n in report.notes), report.notes


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_directional_check_that_compared_nothing_is_an_error(dtype):
    report = gk.check_gradients(torch.sqrt, torch.tensor([1e-12, 1.0, 2.0], dtype=dtype), mode="directional")
    assert not report.ok
    assert report.errors[0].startswith("no directional derivative could be evaluated"), report.errors


def test_an_input_no_stencil_can_evaluate_is_an_error():
    # f is finite at x only: every other point of either side is NaN
    def isolated(x):
        return torch.where(x == 0.5, x.sin(), torch.full_like(x, float("nan")))

    report = gk.check_gradients(isolated, torch.tensor([0.5], dtype=torch.float64))
    assert not report.ok
    assert report.errors[0].startswith("no derivative with respect to input 0 (x) could be evaluated"), report.errors
