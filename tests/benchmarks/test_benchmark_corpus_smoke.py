"""Smoke test of the committed benchmark (benchmarks/): the corpus is complete and a few entries run."""

from __future__ import annotations


import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import load_benchmark

corpus = load_benchmark("corpus")


def test_corpus_size_and_kinds():
    entries = corpus.CORPUS
    correct = [e for e in entries if e.expected == "correct"]
    wrong = [e for e in entries if e.expected == "wrong"]
    assert len(entries) >= 30
    assert len(correct) >= 20 and len(wrong) >= 8
    assert {e.expected for e in entries} == {"correct", "wrong"}
    assert {e.kind for e in entries} == {"first", "order2", "forward_ad", "module"}
    for kind in ("order2", "forward_ad", "module"):
        assert any(e.kind == kind and e.expected == "wrong" for e in entries)
    assert len({e.name for e in entries}) == len(entries)
    assert corpus.entries(quick=True) and len(corpus.entries(quick=True)) < len(entries)


def test_builders_are_deterministic_and_leave_global_rng_alone():
    state = torch.random.get_rng_state()
    for entry in corpus.CORPUS:
        for dtype in (torch.float32, torch.float64):
            a = corpus.build_inputs(entry, dtype)
            b = corpus.build_inputs(entry, dtype)
            ta = [t for t in a if isinstance(t, torch.Tensor)]
            tb = [t for t in b if isinstance(t, torch.Tensor)]
            assert all(torch.equal(x, y) for x, y in zip(ta, tb)), entry.name
            assert all(t.dtype == dtype for t in ta if t.is_floating_point()), entry.name
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_correct_and_a_wrong_entry(dtype):
    by_name = {e.name: e for e in corpus.CORPUS}
    good = by_name["softmax"]
    bad = by_name["gradient 1% too large (sin)"]
    assert gk.check_gradients(good.fn, *corpus.build_inputs(good, dtype)).ok
    assert not gk.check_gradients(bad.fn, *corpus.build_inputs(bad, dtype)).ok


def test_runner_rows_for_two_entries():
    runner = load_benchmark("run_benchmark")
    by_name = {e.name: e for e in corpus.CORPUS}
    entry = by_name["module: weight gradient transposed (8×8)"]
    report = runner.run_ours(entry, corpus.build_inputs(entry, torch.float64))
    assert not report.ok
    verdict, seconds, _ = runner.run_torch(entry, corpus.build_inputs(entry, torch.float64), fast=False)
    assert verdict == "FAIL" and seconds >= 0


@pytest.mark.slow
def test_quick_benchmark_runs(tmp_path):
    runner = load_benchmark("run_benchmark")
    out = tmp_path / "results.md"
    status = runner.main(["--quick", "--out", str(out), "--repeats", "1", "--size", "100000"])
    text = out.read_text(encoding="utf-8")
    assert "## 1. Verdicts" in text and "## 2. Speed" in text
    assert status == 0  # ours gives the expected verdict on every quick entry
