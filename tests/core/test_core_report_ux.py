"""What a report says: fn failing is not a wrong gradient, reproduce lines that run, torch-style inputs,
``None`` outputs, one-line passes, plain reasons, second-order reports and short failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import NAN, CubeDetached, DoubleScalesGradOutputInPlace, randn, unary


def _type_error(x):
    return x + "one"  # TypeError inside the user's code


class _Wrong(unary(lambda x: x * x, lambda x: 2 * x, factor=1.5)):
    """x**2 with a backward 1.5x too large."""


class _BackwardRaises(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        raise KeyError("no gradient here")


_NanBackward = unary(lambda x: x * 2, lambda x: 2, factor=NAN)


# --------------------------------------------------------------------------- fn failing


def test_fn_raising_is_a_function_error_chained_to_its_exception():
    with pytest.raises(gk.FunctionError, match=r"fn raised TypeError: ") as info:
        gk.assert_gradients_close(_type_error, randn(3))
    err = info.value
    assert not isinstance(err, AssertionError)
    assert isinstance(err.__cause__, TypeError)
    assert traceback.extract_tb(err.__cause__.__traceback__)[-1].name == "_type_error"
    report = err.report
    assert report.function_failed and report.function_error is err.__cause__
    data = report.to_dict()
    assert data["function_failed"] is True and "function_error" not in data
    json.dumps(data)
    assert report.summary.startswith("fn raised TypeError: ")


def test_a_backward_that_raises_is_a_function_error_and_a_wrong_gradient_is_a_mismatch():
    with pytest.raises(gk.FunctionError) as info:
        gk.assert_gradients_close(_BackwardRaises.apply, randn(3))
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(gk.GradientMismatch) as wrong:
        gk.assert_gradients_close(_Wrong.apply, randn(3))
    assert not wrong.value.report.function_failed and wrong.value.__cause__ is None


def test_module_and_grad_equals_raise_function_error_from_the_exception():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise ValueError("no forward today")

    with pytest.raises(gk.FunctionError) as info:
        gk.assert_module_gradients(Broken(), randn(3))
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(gk.FunctionError) as info:
        gk.assert_grad_equals(_type_error, randn(3), torch.ones(3))
    assert isinstance(info.value.__cause__, TypeError)


def test_fuzz_says_fn_raised_instead_of_wrong_gradients():
    gst = pytest.importorskip("gradcheck_kit.strategies")

    def picky(x):
        if x.shape[0] > 1:
            raise TypeError("only one element, please")
        return x * 2

    found = gk.fuzz_gradients(picky, gst.tensors(shape=gst.shapes(min_dims=1, max_dims=1)), max_examples=20, seed=1)
    assert not found.ok and found.function_failed
    first = str(found).splitlines()[0]
    assert "fn raised TypeError: only one element, please" in first
    assert "gradients are wrong" not in first
    assert found.to_dict()["function_failed"] is True


# --------------------------------------------------------------------------- reproduce lines


def test_reproduce_line_of_a_lambda_runs_given_the_lambda_and_says_so():
    fn = lambda x: _Wrong.apply(x)  # noqa: E731
    line = gk.check_gradients(fn, randn(4)).reproduce
    code, _, comment = line.partition("  # ")
    assert "<lambda>" not in code and "<locals>" not in code
    assert comment.startswith("fn: the lambda at test_core_report_ux.py:")
    assert comment.endswith("(not importable: pass it yourself)")
    assert "torch.tensor([" in code and "dtype=torch.float64" in code
    with pytest.raises(gk.GradientMismatch):
        exec(line, {"fn": fn})  # the line, given the object it names


def test_reproduce_line_saves_large_inputs_to_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCHECK_KIT_REPRO_DIR", str(tmp_path))
    x = randn(10, 5).t()  # 50 elements, transposed: saved, layout kept
    report = gk.check_gradients(_Wrong.apply, x)
    assert not list(tmp_path.iterdir())  # computing returns data: the file is written when the line is read
    line = report.reproduce
    saved = list(tmp_path.iterdir())
    assert len(saved) == 1 and f"torch.load({str(saved[0])!r})" in line
    (loaded,) = torch.load(saved[0])
    assert torch.equal(loaded, x) and loaded.stride() == x.stride()
    with pytest.raises(gk.GradientMismatch):
        exec(line, {"fn": _Wrong.apply})


def test_reproduce_line_of_assert_grad_equals_carries_the_expected_values():
    fn = lambda x: (x**2).sum()  # noqa: E731
    x = randn(3)
    with pytest.raises(gk.GradientMismatch) as info:
        gk.assert_grad_equals(fn, (x,), 3 * x)
    line = str(info.value).splitlines()[-1].removeprefix("Reproduce: ")
    assert "expected = (torch.tensor([" in line and "gk.assert_grad_equals(fn, (x,), expected)" in line
    assert "<lambda>" not in line.partition("  # ")[0]
    with pytest.raises(gk.GradientMismatch):
        exec(line, {"fn": fn})


def test_reproduce_line_of_a_torch_builtin_names_it_as_torch_spells_it():
    report = gk.check_gradients(torch.log, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    assert not report.ok and not report.function_failed  # NaN at the inputs: not checkable, not a crash
    assert "gk.assert_gradients_close(torch.log, x, " in report.reproduce and "  # " not in report.reproduce
    with pytest.raises(gk.GradientMismatch):
        exec(report.reproduce, {})


def test_passing_checks_write_no_reproduce_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCHECK_KIT_REPRO_DIR", str(tmp_path))
    assert gk.check_gradients(torch.tanh, randn(30)).reproduce == ""
    assert not list(tmp_path.iterdir())


_MODULE = '''
import torch


class _Wrong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * g


def wrong_square(x, scale):
    return _Wrong.apply(x) * scale
'''


def _importable_lines(tmp_path, monkeypatch) -> tuple[str, str]:
    (tmp_path / "repro_mod_ux.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GRADCHECK_KIT_REPRO_DIR", str(tmp_path))
    from repro_mod_ux import wrong_square

    small = gk.check_gradients(wrong_square, randn(3), 2, wrt=[0]).reproduce
    large = gk.check_gradients(wrong_square, randn(100, dtype=torch.float32), 2, wrt=[0], mode="full").reproduce
    assert small.startswith("import torch, gradcheck_kit as gk; from repro_mod_ux import wrong_square; ")
    assert "  # " not in small and "torch.load(" in large
    return small, large


def test_reproduce_lines_of_an_importable_function_run_as_they_are(tmp_path, monkeypatch):
    for line, failed in zip(_importable_lines(tmp_path, monkeypatch), (3, 100)):
        with pytest.raises(gk.GradientMismatch) as info:
            exec(line, {})  # nothing supplied: the line imports fn and builds or loads the inputs
        assert info.value.report.failed == failed


@pytest.mark.slow
def test_reproduce_lines_of_an_importable_function_run_in_a_fresh_interpreter(tmp_path, monkeypatch):
    small, large = _importable_lines(tmp_path, monkeypatch)
    script = textwrap.dedent(
        f"""
        import gradcheck_kit as gk
        for line in [{small!r}, {large!r}]:
            try:
                exec(line, {{}})
            except gk.GradientMismatch as exc:
                print("REPRODUCED", exc.report.failed)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["REPRODUCED", "3", "REPRODUCED", "100"], proc.stdout


# --------------------------------------------------------------------------- conventions


def test_one_tuple_of_inputs_means_the_inputs_torch_style():
    x, y = randn(3), randn(3, seed=1)
    separate = gk.check_gradients(torch.mul, x, y)
    together = gk.check_gradients(torch.mul, (x, y))
    listed = gk.check_gradients(torch.mul, [x, y])
    assert together.ok and listed.ok
    assert [i.shape for i in together.inputs] == [i.shape for i in separate.inputs] == [(3,), (3,)]
    assert together.compared == separate.compared == listed.compared
    gk.assert_gradients_close(torch.sin, (x,))
    with pytest.raises(gk.GradientMismatch):
        gk.assert_gradients_close(_Wrong.apply, (x,))


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_none_outputs_are_skipped_with_a_note(mode):
    x = randn(4)
    report = gk.check_gradients(lambda x: (x.sin().sum(), None), x, mode=mode)
    assert report.ok, report.details()
    assert report.outputs[1] == "None"
    assert [n.code for n in report.notes if hasattr(n, "code")] == ["output_none"]
    wrong = gk.check_gradients(lambda x: (None, _Wrong.apply(x)), x, mode=mode)
    assert not wrong.ok and {m.output_index for m in wrong.mismatches} == {1}


# --------------------------------------------------------------------------- output


class _NoVmap(torch.autograd.Function):
    """tanh through a custom Function without a vmap rule or a jvp."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def test_a_pass_is_one_line_and_details_hold_plain_reasons():
    report = gk.check_gradients(_NoVmap.apply, randn(5))
    assert report.ok
    text = str(report)
    assert "\n" not in text and text.startswith("Gradients are close: _NoVmap.apply, ")
    assert report.path == "loop (fn has a custom autograd.Function without a vmap rule: evaluated point by point)"
    forward = report.check("forward_ad")
    assert forward.status == "skipped"
    assert forward.detail == (
        "fn does not support forward-mode AD: fn has a custom autograd.Function without a jvp (forward-mode) rule (_NoVmap)"
    )
    details = report.details()
    assert text.startswith(details.splitlines()[0])
    assert "Checks:" in details and "  forward_ad: skipped (" in details
    assert "..." not in details and "(at " not in details


def test_second_order_report_reads_well():
    report = gk.check_gradients(CubeDetached.apply, randn(3, 4), order=2)
    assert not report.ok
    text = str(report)
    assert "Second derivatives (backward of backward) are not close: " in text
    note_lines = [line for line in text.splitlines() if line.startswith("  note on")]
    # the second derivative's directions failed beyond doubt: one wrong element named by bisection
    assert len(note_lines) == 1 and note_lines[0].startswith("  note on x[0, 0]: second derivative"), note_lines
    names = [c.name for c in report.checks]
    assert len(names) == len(set(names)), names
    assert {"reentrant", "second_order", "second_order_reentrant"} <= set(names)


def test_summary_says_non_finite_fn_raised_and_the_failed_checks_reason():
    nan = gk.check_gradients(_NanBackward.apply, randn(3))
    assert "non-finite" in nan.summary and "e+308" not in nan.summary
    crash = gk.check_gradients(_type_error, randn(3))
    assert crash.summary.startswith("fn raised TypeError")
    inplace = gk.check_gradients(DoubleScalesGradOutputInPlace.apply, randn(4))
    assert not inplace.ok and not inplace.failed
    assert inplace.summary.startswith("reentrant: backward modified grad_output in place"), inplace.summary
    assert inplace.to_dict()["summary"] == inplace.summary


def test_unchecked_derivatives_say_which_cause_was_seen():
    flat = gk.check_gradients(lambda x: -torch.sin(torch.cos(x**3) - 1), torch.tensor([1e-12], dtype=torch.float64))
    assert flat.ok
    assert [n.code for n in flat.notes if hasattr(n, "code")] == ["unchecked_flat"]
    assert "does not change at all along x[0]" in flat.details()
    island = gk.check_gradients(
        lambda x: torch.where(x == 1.0, x, torch.nan), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )
    codes = [n.code for n in island.notes if hasattr(n, "code")]
    assert codes == ["unchecked_nonfinite"], island.notes
    assert island.notes[0].fields == ("x", 0, (0,), 2)  # input, output, the first element, how many


@pytest.mark.parametrize("two_inputs", [False, True])
def test_a_failure_on_1000_elements_is_under_15_lines(two_inputs):
    x = randn(1000)
    if two_inputs:
        report = gk.check_gradients(lambda x, y: _Wrong.apply(x) + _Wrong.apply(y), x, randn(1000, seed=1))
    else:
        report = gk.check_gradients(_Wrong.apply, x)
    lines = str(report).splitlines()
    assert len(lines) < 15, "\n".join(lines)
    assert lines[0].startswith("Gradients are not close: ")
    assert lines[-1].startswith("Reproduce: import torch, gradcheck_kit as gk; ")
    assert len(report.details().splitlines()) > len(lines)
