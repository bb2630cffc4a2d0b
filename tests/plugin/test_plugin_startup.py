"""Start-up stays light, the plugin is found through its entry point, and Hypothesis profiles are offered."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest
from hypothesis import settings

import gradcheck_kit.pytest_plugin as plugin


def test_importing_the_plugin_imports_no_heavy_module() -> None:
    code = (
        "import sys, gradcheck_kit.pytest_plugin; "
        "print(sorted(m for m in ('torch', 'hypothesis', 'numpy', 'sympy', 'gradcheck_kit.checkers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plugin_is_registered_by_entry_point_and_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(gradcheck):\n    pass\n")
    result = pytester.runpytest("--trace-config")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*gradcheck_kit*pytest_plugin*"])
    result = pytester.runpytest("-p", "no:gradcheck_kit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'gradcheck' not found*"])
    result.stdout.no_fnmatch_line("gradcheck_kit: *")


def test_options_are_documented_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "gradient checks (gradcheck_kit):",
            "  --gradcheck-seed=N*",
            "  --gradcheck-mode=*",
            "  --gradcheck-dtype=*",
            "  --gradcheck-report=PATH*",
        ]
    )


@pytest.fixture
def restore_hypothesis_profile() -> Iterator[None]:
    """Loading a profile is process-wide: put the one in force back."""
    name = settings.get_current_profile_name()
    yield
    settings.load_profile(name)


PROFILE_TEST = """
from hypothesis import settings

def test_profile():
    print("PROFILE", settings.get_current_profile_name(), settings.default.max_examples,
          settings.default.deadline, settings.default.derandomize)
"""


@pytest.mark.usefixtures("restore_hypothesis_profile")
@pytest.mark.parametrize(
    ("profile", "expected"),
    [("gradcheck-ci", "gradcheck-ci 50 None True"), ("gradcheck-thorough", "gradcheck-thorough 1000 None False")],
)
def test_profiles_can_be_picked(pytester: pytest.Pytester, profile: str, expected: str) -> None:
    pytester.makepyfile(PROFILE_TEST)
    result = pytester.runpytest("-s", "--hypothesis-profile", profile)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*PROFILE {expected}"])


@pytest.mark.usefixtures("restore_hypothesis_profile")
def test_profiles_are_never_loaded_unasked(pytester: pytest.Pytester) -> None:
    before = settings.get_current_profile_name()
    pytester.makepyfile(PROFILE_TEST)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*PROFILE {before} *"])


def test_register_hypothesis_profiles_registers_each_profile() -> None:
    plugin.register_hypothesis_profiles()
    for name, options in plugin.HYPOTHESIS_PROFILES.items():
        profile = settings.get_profile(name)
        for key, value in options.items():
            assert getattr(profile, key) == value, (name, key)


def test_profile_named_on_the_command_line_is_registered_before_hypothesis_loads_it(pytester: pytest.Pytester) -> None:
    """In a fresh process Hypothesis is not imported yet when the plugin is configured."""
    pytester.makepyfile(PROFILE_TEST)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--hypothesis-profile=gradcheck-ci")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PROFILE gradcheck-ci 50 None True"])


def test_importing_the_strategies_registers_the_profiles_without_the_plugin() -> None:
    """A script or conftest can load a profile after ``import gradcheck_kit.strategies``; the profiles
    set what ``HYPOTHESIS_PROFILES`` lists."""
    code = (
        "from hypothesis import settings\n"
        "import gradcheck_kit.strategies\n"
        "from gradcheck_kit.pytest_plugin import HYPOTHESIS_PROFILES\n"
        "for name, options in HYPOTHESIS_PROFILES.items():\n"
        "    settings.load_profile(name)\n"
        "    assert all(getattr(settings.default, k) == v for k, v in options.items()), name\n"
        "    assert {h.name for h in settings.default.suppress_health_check} >= {'too_slow', 'data_too_large'}\n"
        "print(sorted(HYPOTHESIS_PROFILES))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['gradcheck-ci', 'gradcheck-fast', 'gradcheck-thorough']"
