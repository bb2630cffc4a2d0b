"""Under pytest-xdist: workers share the controller's seed, send their records with each test's report
(so a crashed worker loses none of the finished tests' checks), and share out the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit import _xdist_threads

pytest.importorskip("xdist")

TESTS = """
import pytest
import torch

class Wrong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 3

def wrong(x):
    return Wrong.apply(x)

@pytest.mark.parametrize("n", [1, 2, 3])
def test_{name}(gradcheck, gradcheck_seed, n):
    assert gradcheck.check(torch.sin, torch.linspace(-1, 1, n, dtype=torch.float64)).seed == gradcheck_seed

def test_{name}_wrong(gradcheck):
    gradcheck.assert_close(wrong, torch.ones(2, dtype=torch.float64))
"""

# --dist loadfile runs this file last, in one worker, in order: three tests of two checks each, then a
# crash (--max-worker-restart=0: loadfile would run the crashing test again in each new worker)
CRASHING = """
import os
import torch

X = torch.linspace(-1, 1, 3, dtype=torch.float64)

def test_c1(gradcheck):
    gradcheck.check(torch.sin, X)
    gradcheck.check(torch.cos, X)

def test_c2(gradcheck):
    gradcheck.check(torch.tanh, X)
    gradcheck.check(torch.exp, X)

def test_c3(gradcheck):
    gradcheck.check(torch.sigmoid, X)
    gradcheck.check(torch.atan, X)

def test_c4_crash(gradcheck):
    gradcheck.check(torch.sin, X)
    os._exit(1)
"""

CONFTEST = """
import os
import sys

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        import torch
        name = "threads-" + os.environ["PYTEST_XDIST_WORKER"] + ".txt"
        with open(name, "w") as f:
            f.write(str(torch.get_num_threads()))

def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("CONTROLLER imported torch: " + str("torch" in sys.modules))
"""


@pytest.fixture(scope="module")
def xdist_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pytest.LineMatcher, dict[str, Any], Path]:
    """One ``-n 2`` run (its start-up is the cost) over two files of checks and one that crashes."""
    path = tmp_path_factory.mktemp("xdist")
    (path / "test_a.py").write_text(TESTS.replace("{name}", "a"))
    (path / "test_b.py").write_text(TESTS.replace("{name}", "b"))
    (path / "test_c.py").write_text(CRASHING)
    (path / "conftest.py").write_text(CONFTEST)
    env = {k: v for k, v in os.environ.items() if k not in _xdist_threads.USER_VARIABLES and not k.startswith("PYTEST_XDIST")}
    command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "--max-worker-restart=0", "-p", "no:cacheprovider"]
    command += ["--gradcheck-seed=random", "--gradcheck-report=checks.json"]
    command += ["-p", "no:torchtyping"]  # a third-party plugin that imports torch at start-up
    proc = subprocess.run(command, cwd=path, env=env, capture_output=True, text=True, timeout=600)
    document = json.loads((path / "checks.json").read_text())
    return pytest.LineMatcher(proc.stdout.splitlines()), document, path


def test_two_workers_aggregate_summary_and_json(xdist_run: tuple[pytest.LineMatcher, dict[str, Any], Path]) -> None:
    output, document, _ = xdist_run
    header = next(line for line in output.lines if line.startswith("gradcheck_kit: --gradcheck-seed="))
    seed = int(header.split("=")[1])
    output.fnmatch_lines(
        [
            "*= gradcheck_kit =*",
            f"14 gradient checks in 11 tests: 12 passed, 2 failed, * (reproduce: --gradcheck-seed={seed})",
            "failed:",
            "  test_?.py::test_?_wrong: wrong(x: (2,) float64): 2 mismatch(es), *",
            "  test_?.py::test_?_wrong: wrong(x: (2,) float64): 2 mismatch(es), *",
            "closest to tolerance:",
            "JSON report: checks.json",
            "*3 failed, 9 passed*",
        ]
    )
    assert document["seed"] == seed
    assert document["summary"]["checks"] == 14
    assert document["summary"]["failed"] == 2
    assert {record["seed"] for record in document["checks"]} == {seed}
    tests_ab = sorted(r["test"] for r in document["checks"] if not r["test"].startswith("test_c"))
    assert tests_ab == sorted(
        [f"test_{m}.py::test_{m}[{n}]" for m in "ab" for n in (1, 2, 3)] + ["test_a.py::test_a_wrong", "test_b.py::test_b_wrong"]
    )


def test_a_crashed_worker_loses_no_finished_tests_checks(xdist_run: tuple[pytest.LineMatcher, dict[str, Any], Path]) -> None:
    output, document, _ = xdist_run
    output.fnmatch_lines(["*worker 'gw?' crashed while running 'test_c.py::test_c4_crash'*"])
    crashed = [r for r in document["checks"] if r["test"].startswith("test_c.py")]
    assert sorted((r["test"].split("::")[1], r["test_outcome"], r["status"]) for r in crashed) == [
        (name, "passed", "passed") for name in ("test_c1", "test_c1", "test_c2", "test_c2", "test_c3", "test_c3")
    ]
    outcomes = {t["test"]: t["outcome"] for t in document["tests"]}
    assert outcomes["test_c.py::test_c4_crash"] == "failed"
    assert outcomes["test_c.py::test_c1"] == "passed"


def test_workers_share_the_cores_and_the_header_says_so(xdist_run: tuple[pytest.LineMatcher, dict[str, Any], Path]) -> None:
    output, _, path = xdist_run
    cores = _xdist_threads.available_cores()
    threads = max(1, cores // 2)
    output.fnmatch_lines(
        [f"gradcheck_kit: xdist workers: torch threads {threads} per worker ({cores} cores / 2 workers; *)"]
    )
    found = {p.name: p.read_text() for p in path.glob("threads-gw*.txt")}
    assert found and set(found.values()) == {str(threads)}, found
    output.fnmatch_lines(["CONTROLLER imported torch: False"])


def test_the_users_thread_setting_is_kept() -> None:
    threads, text = _xdist_threads.plan(2, {"OMP_NUM_THREADS": "3"}, cores=8)
    assert threads is None and text == "xdist workers: torch threads as set by OMP_NUM_THREADS=3"
    assert _xdist_threads.plan(2, {"MKL_NUM_THREADS": "2"}, cores=8)[0] is None
    assert _xdist_threads.plan(3, {}, cores=8)[0] == 2
    assert _xdist_threads.plan(4, {}, cores=2)[0] == 1
    environ = {"OMP_NUM_THREADS": "5"}
    assert _xdist_threads.apply_in_worker(2, environ) is None and environ == {"OMP_NUM_THREADS": "5"}
