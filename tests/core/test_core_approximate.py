"""The approximate tier (issue 18, item 2): derivatives that disagree beyond rounding but within a small
relative accuracy of their Jacobian block's largest entry pass as approximate, with one note (code
"approximate"); strict=True (argument, marker, plugin option, CLI flag) fails them; real bugs still fail."""

from __future__ import annotations

import textwrap

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import rand
from gradcheck_kit import cli

DTYPES = [torch.float32, torch.float64]

# A small implicit layer: y solves y = x/2 + sin(y)/4 by a fixed number of fixed-point iterations (a
# solver stopped at its tolerance), and the backward is the implicit function theorem's derivative of the
# exact solution, dy/dx = (1/2) / (1 - cos(y)/4). The contraction rate is <= 1/4, so the computed function's
# derivative differs from it by ~4^-iterations relative: beyond rounding, within the tier.
IMPLICIT_LAYER = '''
import torch


def make_implicit_layer(iterations, backward_factor=1.0):
    class FixedPoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.zeros_like(x)
            for _ in range(iterations):
                y = x / 2 + torch.sin(y) / 4
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * 0.5 / (1 - torch.cos(y) / 4) * backward_factor

    return FixedPoint.apply


solve64 = make_implicit_layer(11)
'''
_namespace: dict = {}
exec(IMPLICIT_LAYER, _namespace)  # noqa: S102 - the same source is written into the pytester files below
make_implicit_layer = _namespace["make_implicit_layer"]

# iterations per dtype: solver accuracy ~1e-7 relative for the float64 check, ~1e-5 for float32 (the same
# function runs in both precisions within one check)
ITERATIONS = {torch.float32: 8, torch.float64: 11}
# a directional check's tier is 1/100 of the per-entry one (a projection averages per-entry errors)
ITERATIONS_DIRECTIONAL = {torch.float64: 13}


def _x(dtype, n=6, seed=0):
    return (rand(n, seed=seed) - 0.5).to(dtype).requires_grad_()


def _approximate_notes(report):
    return [n for n in report.notes if getattr(n, "code", None) == "approximate"]


@pytest.mark.parametrize("dtype, mode", [(torch.float32, "full"), (torch.float64, "full"), (torch.float64, "directional")])
def test_an_implicit_layer_passes_as_approximate_with_one_note(dtype, mode):
    iterations = (ITERATIONS if mode == "full" else ITERATIONS_DIRECTIONAL)[dtype]
    report = gk.check_gradients(make_implicit_layer(iterations), _x(dtype), mode=mode)
    assert report.ok, str(report)
    notes = _approximate_notes(report)
    assert len(notes) == 1, report.notes
    assert "strict=True fails them" in notes[0]
    assert report.worst_ratio <= 1.0
    if mode == "full":
        assert "d out[" in notes[0]  # the entries are listed


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_strict_fails_the_approximate_entries(dtype):
    report = gk.check_gradients(make_implicit_layer(ITERATIONS[dtype]), _x(dtype), strict=True)
    assert not report.ok
    assert report.check("backward").status == "failed"
    assert report.mismatches
    assert len(_approximate_notes(report)) == 1
    with pytest.raises(gk.GradientMismatch):
        gk.assert_gradients_close(make_implicit_layer(ITERATIONS[dtype]), _x(dtype), strict=True)


@pytest.mark.parametrize("dtype, mode", [(torch.float32, "full"), (torch.float64, "full"), (torch.float64, "directional")])
def test_a_one_percent_bug_in_the_implicit_backward_fails(dtype, mode):
    buggy = make_implicit_layer((ITERATIONS if mode == "full" else ITERATIONS_DIRECTIONAL)[dtype], backward_factor=1.01)
    report = gk.check_gradients(buggy, _x(dtype), mode=mode)
    assert not report.ok, str(report)
    assert report.check("backward").status == "failed"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_exact_functions_get_no_approximate_note(dtype, mode):
    x = _x(dtype, n=12, seed=3)
    for fn in (torch.sin, lambda t: torch.softmax(t, 0), make_implicit_layer(60)):  # converged: exact
        report = gk.check_gradients(fn, x, mode=mode)
        assert report.ok, str(report)
        assert not _approximate_notes(report), report.notes


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_auto_mode_narrows_a_failed_projection_down_to_approximate_entries(dtype):
    """1,100 elements: auto mode checks a projection, which fails beyond its (smaller) tier; the narrowed
    check of d(v·out)/dx judges entry by entry, all within the tier: the check passes, with the note."""
    report = gk.check_gradients(make_implicit_layer(8), _x(dtype, n=1100), forward_ad=False)  # ~1e-5 relative
    assert report.mode == "directional"
    assert report.ok, str(report)
    assert "narrowed" in report.check("backward").detail
    assert len(_approximate_notes(report)) == 1


def test_a_one_in_a_thousand_error_of_a_float64_gradient_still_fails():
    """rho(float64) = 3e-5 of the block's largest entry: a 1e-3 relative error is 30x beyond it."""
    report = gk.check_gradients(make_implicit_layer(60, backward_factor=1 + 1e-3), _x(torch.float64))
    assert not report.ok
    assert not _approximate_notes(report)


def test_explicit_tolerances_switch_the_tier_off():
    report = gk.check_gradients(make_implicit_layer(11), _x(torch.float64), atol=1e-12, rtol=1e-12)
    assert not report.ok
    assert not _approximate_notes(report)


def test_the_marker_and_the_plugin_option_make_it_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        implicit_layer=IMPLICIT_LAYER,
        test_layer=textwrap.dedent(
            """
            import pytest
            import torch
            from implicit_layer import solve64

            X = torch.linspace(-0.5, 0.5, 6, dtype=torch.float64, requires_grad=True)

            def test_default(gradcheck):
                gradcheck.assert_close(solve64, X)

            @pytest.mark.gradcheck(strict=True)
            def test_strict_marker(gradcheck):
                gradcheck.assert_close(solve64, X)
            """
        ),
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_strict_marker*"])
    pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-strict").assert_outcomes(failed=2)


def test_the_cli_strict_flag(tmp_path, monkeypatch, capsys):
    (tmp_path / "implicit_layer_cli.py").write_text(IMPLICIT_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    target = ["check", "implicit_layer_cli:solve64", "--input", "6:float64"]
    assert cli.main(target) == 0
    assert cli.main([*target, "--strict"]) == 1
