"""Bad plugin options are usage errors and bad marker keywords setup errors, each one line naming the argument.

The values are validated as ``check_gradients`` validates its keywords (``gradcheck_kit.options``);
``tests/core/test_core_bad_arguments.py`` holds the Python keywords' table.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit import options

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


# -- one source for the options: gradcheck_kit.options -------------------------------------------


def test_the_marker_accepts_exactly_the_modes_of_the_options(pytester: pytest.Pytester) -> None:
    tests = "".join(
        f"\n@pytest.mark.gradcheck(mode={mode!r})\ndef test_{i}(gradcheck):\n    assert gradcheck.options['mode'] == {mode!r}\n"
        for i, mode in enumerate((*options.MODES, "exact"))
    )
    pytester.makepyfile("import pytest\n" + tests)
    result = pytester.runpytest()
    result.assert_outcomes(passed=len(options.MODES), errors=1)


@pytest.mark.parametrize("mode", options.MODES)
def test_the_option_and_the_ini_key_accept_every_mode(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(f"def test_it(gradcheck):\n    assert gradcheck.options['mode'] == {mode!r}\n")
    pytester.runpytest(f"--gradcheck-mode={mode}").assert_outcomes(passed=1)
    pytester.makeini(f"[pytest]\ngradcheck_mode = {mode}\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"gradcheck_kit: --gradcheck-seed=0 --gradcheck-mode={mode}"])


def test_a_bad_marker_keyword_option_and_ini_value_give_the_same_text(pytester: pytest.Pytester) -> None:
    """mode='exact' as a keyword of check_gradients, a marker keyword, a flag and an ini value: one reason."""
    with pytest.raises(gk.InvalidArgument) as info:
        gk.check_gradients(torch.sin, torch.ones(2, dtype=torch.float64), mode="exact")
    reason = str(info.value).split(" is invalid: ", 1)[1]
    pytester.makepyfile("import pytest\n@pytest.mark.gradcheck(mode='exact')\ndef test_it(gradcheck):\n    pass\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([f"@pytest.mark.gradcheck: mode='exact' is invalid: {reason}"])
    result = pytester.runpytest("--gradcheck-mode=exact")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --gradcheck-mode=exact is invalid: {reason}"])
    pytester.makeini("[pytest]\ngradcheck_mode = exact\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: gradcheck_mode='exact' is invalid: {reason}"])


#: (ini line, the line pytest prints on stderr)
INI_CASES = [
    ("gradcheck_seed = -5", "ERROR: gradcheck_seed='-5' is invalid: must be an int in [0, 2**63), or 'random'"),
    ("gradcheck_strict = maybe", "ERROR: gradcheck_strict='maybe' is invalid: must be True or False"),
    (
        "gradcheck_dtype = int64",
        "ERROR: gradcheck_dtype='int64' is invalid: must be one of 'float16', 'bfloat16', 'float32', 'float64'",
    ),
]


@pytest.mark.parametrize(("line", "error"), INI_CASES, ids=[case[0].split()[0] for case in INI_CASES])
def test_bad_ini_value_is_a_usage_error_naming_it(pytester: pytest.Pytester, line: str, error: str) -> None:
    pytester.makepyfile("def test_it(): raise AssertionError('no test may run')")
    pytester.makeini(f"[pytest]\n{line}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([error])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_ini_values_apply_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_it(gradcheck, gradcheck_seed):
    print("IN FORCE", gradcheck_seed, gradcheck.options["strict"], gradcheck.dtype)
"""
    )
    pytester.makeini("[pytest]\ngradcheck_seed = 7\ngradcheck_strict = true\ngradcheck_dtype = float32\n")
    result = pytester.runpytest("-s")
    result.stdout.fnmatch_lines(["gradcheck_kit: --gradcheck-seed=7 --gradcheck-dtype=float32 --gradcheck-strict"])
    result.stdout.fnmatch_lines(["*IN FORCE 7 True torch.float32"])
    result = pytester.runpytest("-s", "--gradcheck-seed=3", "--gradcheck-dtype=float64")
    result.stdout.fnmatch_lines(["*IN FORCE 3 True torch.float64"])
