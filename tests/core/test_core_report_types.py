"""The report's public types (gradcheck_kit.report): statuses, check names, derivative kinds and note codes
are enums equal to their strings; to_dict() stays plain data; notes are told apart by code and fields."""

from __future__ import annotations

import importlib
import json
import pickle

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit.report import (
    ALL_INPUTS,
    CheckName,
    CheckResult,
    DerivativeKind,
    GradientReport,
    Note,
    NoteCode,
    Status,
    unique_notes,
)

#: the keys of ``GradientReport.to_dict()``, in order (README: "The report")
REPORT_KEYS = [
    "function", "ok", "mode", "seed", "inputs", "outputs", "checks", "compared", "failed", "worst_ratio",
    "evaluations", "extra_evaluations", "elapsed", "method", "path", "resolution", "errors", "fn_failed", "notes", "mismatches",
    "reproduce", "function_failed", "summary", "note_codes",
]
MISMATCH_KEYS = [
    "check", "input_index", "input_name", "output_index", "index", "output_element", "kind", "input_value",
    "analytic", "numerical", "abs_error", "allowed", "note",
]
INPUT_KEYS = ["index", "name", "shape", "dtype", "differentiated", "layout"]


class _Scaled(torch.autograd.Function):
    """sin with a backward 1% too large."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos() * 1.01


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _raises(x):
    raise TypeError("no")


def test_statuses_and_names_compare_as_strings():
    report = gk.check_gradients(torch.tanh, _x(3))
    backward = report.check("backward")
    assert backward.status == "passed" and backward.status is Status.PASSED
    assert backward.name == "backward" and backward.name is CheckName.BACKWARD
    assert report.check(CheckName.BACKWARD) is backward
    assert str(Status.FAILED) == f"{Status.FAILED}" == "failed"
    assert {Status.ERROR: 1}["error"] == 1  # hashes as its string
    assert str(backward).startswith("backward: passed")


def test_check_result_coerces_known_values_and_refuses_an_unknown_status():
    result = CheckResult("third_order_reentrant", "skipped", "why")
    assert result.status is Status.SKIPPED and type(result.name) is str  # composed names stay strings
    assert not result.failing and CheckResult("linearity", "error").failing
    with pytest.raises(ValueError):
        CheckResult("backward", "fine")


@pytest.mark.parametrize("make", ["pass", "wrong", "raises"])
def test_to_dict_keeps_its_keys_and_plain_values(make):
    fn = {"pass": torch.sin, "wrong": _Scaled.apply, "raises": _raises}[make]
    report = gk.check_gradients(fn, _x(4), mode="full")
    data = report.to_dict()
    assert list(data) == REPORT_KEYS
    assert all(list(i) == INPUT_KEYS for i in data["inputs"])
    assert all(list(m) == MISMATCH_KEYS for m in data["mismatches"])
    for check in data["checks"]:
        assert type(check["name"]) is str and type(check["status"]) is str
    for m in data["mismatches"]:
        assert type(m["check"]) is str and type(m["kind"]) is str
    assert all(code is None or type(code) is str for code in data["note_codes"])
    json.dumps(data)  # plain data: nothing JSON cannot hold
    assert data["ok"] is (make == "pass")
    if make == "wrong":
        assert data["mismatches"][0]["kind"] == "jacobian" and data["failed"] == 4


def test_a_directional_derivative_along_all_inputs_has_input_index_all_inputs():
    report = gk.check_gradients(lambda x, y: _Scaled.apply(x) * y, _x(5, 4), _x(5, 4, seed=1), mode="directional")
    assert not report.ok
    group = next(g for g in report.groups if g.failed)
    assert group.input_index == ALL_INPUTS and group.all_inputs and group.kind is DerivativeKind.DIRECTIONAL
    row = report.mismatches[0]
    assert row.all_inputs and row.to_dict()["input_index"] == -1
    assert "with respect to all differentiated inputs together (x, y)" in str(report)


def test_notes_carry_codes_and_are_deduplicated_by_code_and_fields():
    tie = Note("x[0] == x[1]: a tie", "tie", fields=("x", (0, 1)))
    same = Note("x[0] == x[1]: a tie, worded otherwise", "tie", fields=("x", (0, 1)))
    other = Note("x[2] == x[3]: a tie", "tie", fields=("x", (2, 3)))
    assert tie.code is NoteCode.TIE and tie == "x[0] == x[1]: a tie"
    assert unique_notes([tie, same, other, "plain", "plain"]) == [tie, other, "plain"]
    # no fields declared: the text tells two notes of one code apart
    assert len(unique_notes([Note("a", "approximate"), Note("b", "approximate"), Note("a", "approximate")])) == 2
    report = GradientReport()
    report.add_note(tie)
    report.add_note(same)
    assert report.notes == [tie] and report.note_codes == ["tie"]
    copy = pickle.loads(pickle.dumps(tie))
    assert copy == tie and copy.code is NoteCode.TIE and copy.fields == ("x", (0, 1))


def test_a_report_note_has_a_code():
    report = gk.check_gradients(lambda t: (t.sin(), None), _x(3))
    assert report.ok and report.note_codes == [NoteCode.OUTPUT_NONE]
    assert report.to_dict()["note_codes"] == ["output_none"]


def test_public_modules_define_the_public_types():
    assert gk.GradientReport.__module__ == "gradcheck_kit.report"
    assert gk.Mismatch is importlib.import_module("gradcheck_kit.report").Mismatch
    modules = importlib.import_module("gradcheck_kit.modules")
    for name in ("check_module_gradients", "assert_module_gradients", "assert_gradient_flow",
                 "check_gradient_flow", "GradientFlowReport"):
        assert getattr(gk, name) is getattr(modules, name) and name in modules.__all__
    fuzz = importlib.import_module("gradcheck_kit.fuzz")
    assert gk.fuzz_gradients is fuzz.fuzz_gradients and gk.FuzzReport is fuzz.FuzzReport


def test_no_analytic_gradient_is_public():
    from gradcheck_kit.errors import GradcheckKitError, NoAnalyticGradient

    assert gk.NoAnalyticGradient is NoAnalyticGradient and "NoAnalyticGradient" in gk.__all__
    assert issubclass(NoAnalyticGradient, GradcheckKitError) and issubclass(NoAnalyticGradient, TypeError)
    gst = pytest.importorskip("gradcheck_kit.strategies")
    expr = gst.Expression.parse("mean(my_gelu(x))", ops=[gst.Op("my_gelu", torch.nn.functional.gelu)])
    with pytest.raises(gk.NoAnalyticGradient):
        expr.gradient(_x(2))


def test_every_note_code_is_documented_in_the_report_docs():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M))
    assert {code.value for code in NoteCode} <= documented


def test_the_report_builder_refuses_a_note_without_a_code(monkeypatch):
    """The suite runs with the debug check on: a note written as plain text cannot reach a report."""
    from gradcheck_kit._engine import notes

    monkeypatch.setenv(notes.DEBUG_ENV, "1")
    notes.require_codes([Note("x[0] == x[1]: a tie", NoteCode.TIE)])
    with pytest.raises(AssertionError, match="without a NoteCode"):
        notes.require_codes([Note("a tie", NoteCode.TIE), "a plain note"])
    with pytest.raises(AssertionError):
        notes.require_codes([Note("a note", "not_a_kit_code")])
    monkeypatch.delenv(notes.DEBUG_ENV)
    notes.require_codes(["a plain note"])  # off outside the suite: a report is data, never a raise


def test_notes_of_varied_checks_all_carry_codes():
    x = torch.tensor([0.0, 0.5, 0.5, float("nan")], dtype=torch.float32)
    fn = lambda t: torch.where(t.isfinite(), t, 0).abs().amax() + torch.where(t.isfinite(), t, 0).relu().sum()  # noqa: E731
    report = gk.check_gradients(fn, x)
    assert report.notes and all(isinstance(code, NoteCode) for code in report.note_codes), report.notes
