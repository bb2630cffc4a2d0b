"""The example project under ``examples/plugin_project`` passes with nothing but the installed plugin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_project"


def test_example_project_passes(pytester: pytest.Pytester) -> None:
    for path in EXAMPLE.iterdir():
        if path.is_file() and path.suffix in (".py", ".ini"):
            shutil.copy(path, pytester.path / path.name)
    assert not (pytester.path / "conftest.py").exists()
    result = pytester.runpytest("--gradcheck-report=checks.json")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        ["gradcheck_kit: --gradcheck-seed=0", "*= gradcheck_kit =*", "* gradient checks in 7 tests: * passed, 0 failed, *"]
    )
    assert (pytester.path / "checks.json").is_file()
