"""The checked function failing, the float32-only path, GradientMismatch, and the report's text."""

from __future__ import annotations

import re

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import randn, unary


def _boom(x):
    raise ValueError("bad input")


@pytest.mark.parametrize(
    "fn, message",
    [
        (_boom, "fn raised ValueError: bad input"),
        (lambda x: 1.5, "fn returned float; it must return a tensor or a tuple/list of tensors"),
        (lambda x: [x * 2, "a"], "fn returned a list whose item 1 is a str, not a tensor"),
        (lambda x: torch.arange(3), "fn returned no floating-point or complex tensor: (3,) int64"),
    ],
    ids=["raises", "float", "list_with_str", "integer_output"],
)
def test_function_failure_is_a_clear_error(fn, message):
    report = gk.check_gradients(fn, randn(3))
    assert not report.ok
    assert not bool(report)
    assert len(report.errors) == 1
    assert report.errors[0].startswith(message), report.errors
    text = str(report)
    assert text.splitlines()[0].startswith("Gradient check of ")
    assert "could not be completed" in text.splitlines()[0]
    assert message in text
    assert report.function_failed
    assert text.splitlines()[-1].startswith("Reproduce: import torch, gradcheck_kit as gk; ")
    assert "gk.assert_gradients_close(" in text.splitlines()[-1]


def test_function_failure_through_assert_raises_function_error():
    with pytest.raises(gk.FunctionError, match="fn raised ValueError: bad input") as info:
        gk.assert_gradients_close(_boom, randn(3))
    assert not isinstance(info.value, gk.GradientMismatch)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.report.function_failed


def test_nan_output_is_an_error():
    report = gk.check_gradients(torch.log, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    assert not report.ok
    assert report.errors == [
        "output 0 of fn has 1 non-finite value(s) (NaN or inf) at the given inputs; gradients cannot be checked there"
    ]


def test_float32_only_function_is_checked_with_coarse_resolution_note():
    def sin32(x):
        return torch.sin(x.to(torch.float32))

    report = gk.check_gradients(sin32, randn(3, dtype=torch.float32))
    assert report.ok, str(report)
    assert "no_float64" in report.note_codes, report.notes
    assert "evaluated in float32" in report.method

    _Wrong32 = unary(lambda x: torch.sin(x.to(torch.float32)), torch.cos, factor=1.05)

    assert not gk.check_gradients(_Wrong32.apply, randn(3, dtype=torch.float32)).ok


def test_float32_uses_float64_reference_when_possible():
    report = gk.check_gradients(torch.tanh, randn(3, dtype=torch.float32))
    assert report.ok
    assert report.method.endswith("at the float32 point")


def test_float32_only_function_that_raises_in_float64_is_still_checked():
    def strict32(x):
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return torch.tanh(x)

    report = gk.check_gradients(strict32, randn(4, dtype=torch.float32))
    assert report.ok, str(report)
    assert any(n.code == "no_float64" and n.fields[0] == "fails" for n in report.notes), report.notes


# ---- fn failing at the points the numerical derivatives evaluate --------------------------------


def _raises_above_one(x):
    if bool((x > 1).any()):
        raise ValueError("x must be at most 1")
    return torch.asin(x * 0.5)


def _fails_after_first_call():
    calls = []

    def fn(x):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError(f"call {len(calls)} failed")
        return x * 2

    return fn


def _none_after_first_call():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2 if len(calls) == 1 else None

    return fn


def _shape_changes_after_first_call():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2 if len(calls) == 1 else x[:-1] * 2

    return fn


@pytest.mark.parametrize("mode, n", [("full", 5), ("directional", 5), ("directional", 20_000)])
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _raises_above_one, "fn raised ValueError: x must be at most 1"),
        # fn changing between calls: the call at the inputs that follows the failure tells
        (_fails_after_first_call, "fn is not a deterministic function of its inputs: called again with the same "
         "inputs, it raised RuntimeError: call "),
        (_none_after_first_call, "fn is not a deterministic function of its inputs: called again with the same "
         "inputs, it returned NoneType"),
        (_shape_changes_after_first_call, "fn is not a deterministic function of its inputs: called again with the "
         "same inputs, output 0 is (4,) float64, the first time (5,) float64"),
    ],
    ids=["domain_edge", "stateful_raise", "stateful_none", "stateful_shape"],
)
def test_fn_failing_next_to_the_inputs_is_reported_not_raised(make, message, mode, n):
    # x = 1 sits on _raises_above_one's edge: x + h raises; the others fail from their second call on
    x = torch.ones(n, dtype=torch.float64)
    report = gk.check_gradients(make(), x, mode=mode)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    error = report.errors[0]
    assert error.startswith(message.replace("(4,)", f"({n - 1},)").replace("(5,)", f"({n},)")), error
    if make() is _raises_above_one:
        assert "when evaluated at a point near the inputs" in error
        assert "h = 7.6e-06·max(|x|, 1)" in error
        assert "at the inputs as given it ran" in error
    assert report.function_failed
    with pytest.raises(gk.FunctionError, match="could not be completed") as info:
        gk.assert_gradients_close(make(), x, mode=mode)
    # where fn raised, its own exception is the cause (its traceback ends in fn)
    assert (info.value.__cause__ is not None) == ("raised" in message)


def _forces(pos):
    """The gradient of an energy, computed inside fn (as force fields do): needs grad at every call."""
    energy = (pos.sin() * pos.roll(1)).sum()
    (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
    return -grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode, n", [("full", 6), ("directional", 6), ("directional", 20_000)])
def test_a_function_that_differentiates_internally_is_checked(mode, n, dtype):
    report = gk.check_gradients(_forces, randn(n, dtype=dtype, seed=3), mode=mode, forward_ad=True)
    assert report.ok, str(report)
    assert report.errors == []
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status == "passed", report.check("forward_ad").detail
    assert "grad_inside" in report.note_codes, report.notes
    if dtype == torch.float32:  # the float64 probe ran with grad too: a sharp reference, not float32 numerics
        assert report.method.endswith("at the float32 point")
    if mode == "full":  # vmap cannot run autograd.grad inside fn: one call per point, and the report says so
        assert report.path.startswith("loop ("), report.path


def test_an_input_left_out_of_wrt_keeps_requires_grad_for_a_function_that_needs_it():
    # fn differentiates with respect to its second input, which the caller made require grad but does not
    # check (wrt=[0]): every call with grad gives it requires_grad, as the caller did
    def scaled_forces(k, pos):
        energy = (k[0] * pos.sin() * pos.roll(1) + k[1] * pos**2).sum()
        (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
        return -grad

    k = torch.tensor([1.3, 0.7], dtype=torch.float64)
    pos = randn(6, seed=5).requires_grad_()
    for mode in ("full", "directional"):
        report = gk.check_gradients(scaled_forces, k, pos, wrt=[0], mode=mode)
        assert report.ok, str(report)
        assert [g.input_index for g in report.groups if g.check == "backward"] in ([0], [-1]), report.groups
    assert pos.grad is None and pos.requires_grad  # the caller's tensor as it was


# ---- GradientMismatch and the report's text ----------------------------------------------------


class _TooLarge(unary(torch.exp, torch.exp, factor=1.01)):
    """exp whose backward is 1% too large (importable: the reproduce line names it)."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_gradient_mismatch_message(dtype):
    from gradcheck_kit._engine.limits import tuned

    x = randn(2, 3, dtype=dtype)
    # the full check's message: a forward that a loaded machine stretched must not turn this cheap fn's check
    # into the cost plan's directions (whose failure names one element)
    with pytest.raises(gk.GradientMismatch) as info, tuned(auto_plan_probe_seconds=1e3):
        gk.assert_gradients_close(_TooLarge.apply, x)
    err = info.value
    assert isinstance(err, AssertionError)
    assert isinstance(err.report, gk.GradientReport)
    assert not err.report.ok
    text = str(err)
    name = str(dtype).replace("torch.", "")
    lines = text.splitlines()
    assert lines[0] == (
        f"Gradients are not close: 6 of 36 Jacobian entries of output 0 with respect to input 0 "
        f"(x, shape (2, 3), {name})"
    )
    worst = max(err.report.mismatches, key=lambda m: m.ratio)
    row = lines[1]
    assert row.lstrip().startswith(f"d out[{worst.index[0]}, {worst.index[1]}] / d x[{worst.index[0]}, {worst.index[1]}]")
    for key in ("autograd=", "numerical=", "|diff|=", "allowed "):
        assert key in row
    assert re.search(r"x=-?\d", row)
    assert any(line.startswith("Numerical: central differences") for line in lines)
    assert lines[-1].startswith("Reproduce: import torch, gradcheck_kit as gk; ")
    assert "gk.assert_gradients_close(_TooLarge.apply, x, " in lines[-1]
    assert "seed=0" in lines[-1]


def test_report_of_success_reads_well():
    report = gk.assert_gradients_close(torch.tanh, randn(3))
    assert isinstance(report, gk.GradientReport)
    text = str(report)
    assert text.startswith("Gradients are close: torch.tanh, ")
    assert "Reproduce:" not in text
    assert report.evaluations > 0
    assert report.check("backward").status == "passed"
    assert all(c.status in ("passed", "skipped") for c in report.checks)


_AllWrong = unary(lambda x: x * 2, lambda x: 2, factor=1.5)


def test_listing_is_capped_for_1000_wrong_elements():
    x = randn(1000)
    report = gk.check_gradients(_AllWrong.apply, x, mode="full", forward_ad=False)
    assert not report.ok
    text = str(report)
    lines = text.splitlines()
    rows = [line for line in lines if line.lstrip().startswith("d ")]
    assert 1 <= len(rows) <= 10
    more = [line for line in lines if re.fullmatch(r"\s*\.\.\. and \d+ more", line)]
    assert len(more) == 1
    n_more = int(re.search(r"\d+", more[0]).group())
    assert n_more + len(rows) == report.failed
    assert len(text) < 5000
    assert len(report.mismatches) <= 100


def test_report_names_layout_of_a_transposed_input():
    report = gk.check_gradients(_AllWrong.apply, randn(3, 2).t(), forward_ad=False)
    assert not report.ok
    assert "shape (2, 3)" in str(report)


def test_report_to_dict_round_trips_key_fields():
    report = gk.check_gradients(_AllWrong.apply, randn(3), forward_ad=False)
    d = report.to_dict()
    assert d["ok"] is False
    assert d["mismatches"][0]["check"] == "backward"
    assert d["mismatches"][0]["analytic"] == pytest.approx(3.0)
    assert d["mismatches"][0]["numerical"] == pytest.approx(2.0)
    assert d["inputs"][0]["shape"] == [3]


def test_scalar_output_row_has_no_empty_brackets():
    report = gk.check_gradients(lambda x: _AllWrong.apply(x).sum(), randn(3), forward_ad=False)
    assert not report.ok
    assert "out[]" not in str(report)
    assert "d out / d x[0]" in str(report)


def test_directional_failure_over_several_inputs_names_them_all():
    # one directional derivative moves every differentiated input at once: the header says so by name
    x, y = randn(50), randn(3, seed=1)
    report = gk.check_gradients(
        lambda x, y: x.sin().sum() * _TooLarge.apply(y), x, y, wrt=[0, 1], mode="directional"
    )
    assert not report.ok
    assert str(report).splitlines()[0].endswith(
        "directional derivatives of output 0 with respect to all differentiated inputs together (x, y)"
    )


def test_a_builtin_that_raises_is_not_located_in_the_kit():
    # torch.linalg.cholesky has no Python frame: the error names no place rather than the kit's call site
    report = gk.check_gradients(torch.linalg.cholesky, -torch.eye(3, dtype=torch.float64))
    [error] = report.errors
    assert error.startswith("fn raised LinAlgError") or error.startswith("fn raised _LinAlgError"), error
    assert "checkers.py" not in error and "_evaluate.py" not in error


def test_the_reproduce_line_names_wrt_only_where_it_is_not_the_default():
    from tests.helpers import SinOnePercentOff

    x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    default = gk.check_gradients(SinOnePercentOff.apply, x)
    assert not default.ok and "wrt=" not in default.reproduce
    chosen = gk.check_gradients(lambda a, b: SinOnePercentOff.apply(a) * b, x, y, wrt=[0])
    assert not chosen.ok and "wrt=[0]" in chosen.reproduce
