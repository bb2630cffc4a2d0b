"""Bad plugin options are usage errors and bad marker keywords setup errors, each one line naming the argument.

The values are validated as ``check_gradients`` validates its keywords (``gradcheck_kit.options``);
``tests/core/test_core_bad_arguments.py`` holds the Python keywords' table.
"""

from __future__ import annotations

import pytest

#: (marker keywords, fixtures of the test, the message after "@pytest.mark.gradcheck: ")
MARKER_CASES = [
    ("mode='exact'", "gradcheck", "mode='exact' is invalid: must be one of 'auto', 'full', 'directional'"),
    ("order=2.0", "gradcheck", "order=2.0 is invalid: must be an int from 1 to 4 (each order checks the derivative of the one below it)"),
    ("forward_ad=1.0", "gradcheck", "forward_ad=1.0 is invalid: must be True, False or 'auto'"),
    ("atol=float('nan')", "gradcheck", "atol=nan is invalid: must be a finite number >= 0, or None (derived from the dtype)"),
    ("rtol=float('inf')", "gradcheck", "rtol=inf is invalid: must be a finite number >= 0, or None (derived from the dtype)"),
    ("seed=-1", "gradcheck", "seed=-1 is invalid: must be an int in [0, 2**63)"),
    ("seed=2**64", "gradcheck", "seed=18446744073709551616 is invalid: must be an int in [0, 2**63)"),
    ("directions=0", "gradcheck", "directions=0 is invalid: must be an int >= 1, or None (chosen by size)"),
    ("nondet_tol=float('nan')", "gradcheck", "nondet_tol=nan is invalid: must be a finite number >= 0"),
    ("strict='yes'", "gradcheck", "strict='yes' is invalid: must be True or False"),
    ("dtype='int64'", "gradcheck", "dtype='int64' is invalid: must be one of 'float16', 'bfloat16', 'float32', 'float64'"),
    ("dtypes=['int64']", "gradcheck", "dtypes='int64' is invalid: must be one of 'float16', *"),
    ("devices=['tpu']", "gradcheck_device", "devices: 'tpu' is not a torch device *"),
    ("devices='cpu'", "gradcheck", "devices='cpu' is not a non-empty list"),
    ("seed=1, sed=2", "gradcheck", "unknown keyword(s) sed; known: *"),
]


@pytest.mark.parametrize(("marker", "fixtures", "message"), MARKER_CASES, ids=[case[0] for case in MARKER_CASES])
def test_bad_marker_keyword_is_a_setup_error_naming_it(
    pytester: pytest.Pytester, marker: str, fixtures: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
import pytest
import torch

@pytest.mark.gradcheck({marker})
def test_bad({fixtures}):
    raise AssertionError("the test body must not run")

def test_unaffected(gradcheck):
    assert gradcheck.check(torch.sin, torch.ones(2, dtype=torch.float64)).ok
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_bad*", f"@pytest.mark.gradcheck: {message}"])
    result.stdout.no_fnmatch_line("*the test body must not run*")
    result.stdout.no_fnmatch_line("*Traceback*")


#: (command-line option, the line pytest prints on stderr)
OPTION_CASES = [
    ("--gradcheck-seed=-5", "ERROR: --gradcheck-seed=-5 is invalid: must be an int in [0, 2**63), or 'random'"),
    (
        "--gradcheck-seed=18446744073709551616",
        "ERROR: --gradcheck-seed=18446744073709551616 is invalid: must be an int in [0, 2**63), or 'random'",
    ),
    ("--gradcheck-seed=1.5", "ERROR: --gradcheck-seed=1.5 is invalid: must be an int in [0, 2**63), or 'random'"),
    ("--gradcheck-mode=fast", "ERROR: --gradcheck-mode=fast is invalid: must be one of 'auto', 'full', 'directional'"),
    (
        "--gradcheck-dtype=int64",
        "ERROR: --gradcheck-dtype=int64 is invalid: must be one of 'float16', 'bfloat16', 'float32', 'float64'",
    ),
    (
        "--gradcheck-report=/proc/nope/r.json",
        "ERROR: --gradcheck-report=/proc/nope/r.json: cannot write the report there (No such file or directory)",
    ),
    ("--gradcheck-report=/dev/full", "ERROR: --gradcheck-report=/dev/full: cannot write the report there (it is not a regular file)"),
    ("--gradcheck-report=adir", "ERROR: --gradcheck-report=adir: cannot write the report there (it is a directory)"),
]


@pytest.mark.parametrize(("option", "line"), OPTION_CASES, ids=[case[0] for case in OPTION_CASES])
def test_bad_option_is_a_usage_error_naming_it(pytester: pytest.Pytester, option: str, line: str) -> None:
    pytester.makepyfile("def test_it(): raise AssertionError('no test may run')")
    pytester.mkdir("adir")
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_a_report_path_that_can_be_written_is_not_left_behind_empty(pytester: pytest.Pytester) -> None:
    """The configure-time probe removes the file it made; the run writes the report at its end."""
    pytester.makepyfile(
        """
import os

def test_it():
    assert not os.path.exists("new/dir/r.json")
"""
    )
    result = pytester.runpytest("--gradcheck-report=new/dir/r.json")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "new" / "dir" / "r.json").read_text().startswith("{")


def test_strict_reaches_the_checks_from_the_option_and_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
from gradcheck_kit import _config

def test_option(gradcheck):
    assert gradcheck.options["strict"] is True
    assert _config.current_defaults()["strict"] is True

@pytest.mark.gradcheck(strict=False)
def test_marker_wins(gradcheck):
    assert _config.current_defaults()["strict"] is False
"""
    )
    result = pytester.runpytest("--gradcheck-strict")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["gradcheck_kit: --gradcheck-seed=0 --gradcheck-strict"])
