"""The audit's catalogue and its output, in-process (the audit itself runs in test_cli_subprocess.py)."""

import pytest
import torch

from gradcheck_kit import audit
from gradcheck_kit._text import Style, UsageError

CATALOGUE = audit.catalogue()


def test_at_least_40_ops_covering_every_family():
    assert len(CATALOGUE) >= 40
    families = {op.family for op in CATALOGUE}
    assert families == set(audit.FAMILIES)
    names = [op.name for op in CATALOGUE]
    assert len(names) == len(set(names))
    for required in ("tanh", "softmax", "layer_norm", "conv1d", "cross_entropy", "linalg.solve"):
        assert required in names


def test_quick_subset_names_exist():
    names = {op.name for op in CATALOGUE}
    assert set(audit.QUICK) <= names
    assert {op.family for op in CATALOGUE if op.quick} == set(audit.FAMILIES)


@pytest.mark.parametrize("op", CATALOGUE, ids=lambda op: op.name)
def test_builders_give_valid_inputs_in_both_dtypes(op):
    state = torch.random.get_rng_state()
    for dtype in (torch.float32, torch.float64):
        first = op.make_inputs(dtype, torch.Generator().manual_seed(1))
        again = op.make_inputs(dtype, torch.Generator().manual_seed(1))
        differentiated = [x for x in first if isinstance(x, torch.Tensor) and x.requires_grad]
        assert differentiated, "no input to differentiate"
        assert all(x.dtype == dtype for x in differentiated)
        for a, b in zip(first, again):  # deterministic in the seed
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
        out = op.fn(*first)
        outs = out if isinstance(out, tuple) else (out,)
        assert all(torch.isfinite(o).all() for o in outs)
    assert torch.equal(torch.random.get_rng_state(), state), "a builder used the global RNG"


def test_value_domains_hold():
    by_name = {op.name: op for op in CATALOGUE}
    gen = torch.Generator().manual_seed(0)
    (x,) = by_name["log"].make_inputs(torch.float64, gen)
    assert (x > 0).all()
    a, _ = by_name["linalg.solve"].make_inputs(torch.float64, gen)
    assert torch.linalg.cond(a) <= 3.0 + 1e-9
    (b,) = by_name["linalg.cholesky"].make_inputs(torch.float64, gen)
    assert (torch.linalg.eigvalsh(b + b.mT) > 0.9).all()
    (r,) = by_name["relu"].make_inputs(torch.float64, gen)
    assert (r == 0).sum() == 2  # the kink, on purpose


def test_select_by_torch_spelling():
    names = lambda ops: [op.name for op in ops]  # noqa: E731
    assert names(audit.select(CATALOGUE, ["softmax", "tanh"])) == ["tanh", "softmax"]  # catalogue order
    assert names(audit.select(CATALOGUE, ["torch.nn.functional.gelu", "torch.linalg.solve", "solve"])) == [
        "gelu",
        "linalg.solve",
    ]
    assert names(audit.select(CATALOGUE, None, quick=True)) == [op.name for op in CATALOGUE if op.quick]
    assert len(audit.select(CATALOGUE, None)) == len(CATALOGUE)


def test_select_unknown_lists_close_matches():
    with pytest.raises(UsageError) as info:
        audit.select(CATALOGUE, ["tanh", "sofmax"])
    assert str(info.value).startswith("--ops: unknown op 'sofmax'; did you mean softmax")
    with pytest.raises(UsageError, match=r"unknown op 'zzzz' \('gradcheck-kit audit --list'"):
        audit.select(CATALOGUE, ["zzzz"])


def _row(op, dtype, passed=3, failed=0, errors=0, skipped=0, ratio=0.02):
    row = audit.AuditRow(op, "elementwise", dtype, passed, failed, skipped, errors, ratio, 0.25)
    if failed:
        row.details.append("Gradients are not close: 1 of 12 ...\nReproduce: ...")
    return row


def test_results_table_and_summary():
    result = audit.AuditResult(
        [_row("tanh", "float32"), _row("linalg.solve", "float64", passed=2, failed=1, ratio=41.0, skipped=1)],
        elapsed=1.5,
        seed=0,
        quick=False,
        notes={"tanh": "a note"},
    )
    text = audit.format_results(result, Style(False))
    lines = text.splitlines()
    assert lines[0].split() == ["op", "family", "dtype", "checks", "verdict", "worst", "err/allowed", "time"]
    assert lines[2].split() == ["tanh", "elementwise", "float32", "3/3", "pass", "0.02", "0.25s"]
    assert lines[3].split() == ["linalg.solve", "elementwise", "float64", "2/3", "+1", "skipped", "FAIL", "41", "0.25s"]
    assert len({len(line) for line in lines[1:3]}) == 1 or lines[1].startswith("---")
    assert "FAIL: linalg.solve (float64)" in text
    assert "  Gradients are not close: 1 of 12 ..." in text
    assert "  tanh: a note" in text
    assert lines[-1].startswith("2 ops x float32, float64: 1 passed, 1 failed, 0 errors in 1.5 s")
    assert not result.ok
    data = result.to_dict()
    assert data["summary"] == {"rows": 2, "passed": 1, "failed": 1, "errors": 0, "known": 0}
    assert data["results"][1]["verdict"] == "FAIL"
    assert data["results"][1]["checks"] == {"passed": 2, "failed": 1, "skipped": 1, "errors": 0}


def test_progress_lines_when_not_a_terminal():
    import io

    stream = io.StringIO()
    progress = audit.Progress(stream, Style(False))
    op = CATALOGUE[0]
    progress.start(1, 12, op, "float32")
    progress.done(_row(op.name, "float32"))
    progress.finish()
    assert stream.getvalue() == f"[ 1/12] {op.name} float32: pass (0.25 s)\n"


def test_a_known_issue_is_shown_but_does_not_fail_the_audit():
    row = _row("digamma", "float64", passed=1, failed=1, ratio=1.4)
    row.failed_checks = ["backward"]
    row.known = (audit.KnownIssue(("float64",), ("backward", "forward_ad"), "trigamma is a truncated series"),)
    result = audit.AuditResult([_row("tanh", "float64"), row], elapsed=1.0, seed=0, quick=False)
    assert row.verdict == "known" and result.ok
    text = audit.format_results(result, Style(False))
    assert "known: digamma (float64) - known torch issue: trigamma is a truncated series" in text
    assert text.splitlines()[-1].startswith("2 ops x float64: 1 passed, 0 failed, 0 errors, 1 known issues in 1.0 s")
    assert result.to_dict()["results"][1]["known_issue"] == "known torch issue: trigamma is a truncated series"


def test_a_known_issue_covers_only_its_checks():
    row = _row("digamma", "float64", passed=1, failed=2, ratio=1.4)
    row.failed_checks = ["backward", "second_order"]
    row.known = (audit.KnownIssue(("float64",), ("backward", "forward_ad"), "trigamma"),)
    assert row.verdict == "FAIL" and row.known_issue == ""


def test_known_issues_name_real_dtypes():
    for op in CATALOGUE:
        for issue in op.known:
            assert set(issue.dtypes) <= {"float32", "float64"}
            assert issue.source in ("torch", "gradcheck_kit")
            assert issue.checks
