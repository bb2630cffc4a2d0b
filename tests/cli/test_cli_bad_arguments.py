"""Every flag of every subcommand with bad values: exit status 2 and one line on stderr that names the
flag (or the target), never a traceback, and no work done first. In-process through ``cli.main``;
a few cases again as a subprocess, as people run them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck_kit import cli, options

HERE = Path(__file__).resolve().parent

CHECK = ["check", "gk_cli_ops:good_square", "--input", "3"]
FUZZ = ["fuzz", "gk_cli_ops:good_square", "--input", "?"]
TWO = ["check", "gk_cli_ops:add_scaled"]

# (argv, what the line must name, a fragment of the reason)
CASES = [
    # the target
    (["check", "a:b:c", "--input", "3"], "'a:b:c'", "expected MODULE:FUNCTION with one ':'"),
    (["check", "gk_cli_ops", "--input", "3"], "'gk_cli_ops'", "expected MODULE:FUNCTION"),
    (["check", "no_such_module_xyz:f", "--input", "3"], "no_such_module_xyz", "no module named"),
    (["check", "gk_cli_ops:good_squar", "--input", "3"], "good_squar", "did you mean good_square"),
    (["check", "gk_cli_ops:NOT_A_FUNCTION", "--input", "3"], "NOT_A_FUNCTION", "not a function"),
    (["fuzz", "a:b:c", "--input", "3"], "'a:b:c'", "expected MODULE:FUNCTION with one ':'"),
    # --input
    (["check", "gk_cli_ops:good_square"], "--input", "the following arguments are required"),
    ([*CHECK[:2], "--input", "3,b"], "--input", "bad shape '3,b'"),
    ([*CHECK[:2], "--input", "3:float99"], "--input", "unknown dtype 'float99'"),
    ([*CHECK[:2], "--input", "3:"], "--input", "missing dtype"),
    ([*CHECK[:2], "--input", "-3"], "--input", "negative size"),
    ([*CHECK[:2], "--input", "?,3"], "--input", "'?' sizes are for 'fuzz'"),
    ([*CHECK[:2], "-i", "100000,100000"], "--input", "more than half of this machine's memory"),
    ([*CHECK[:2], "--input", str(10**30)], "--input", "more than half of this machine's memory"),
    ([*CHECK, "--input", "3"], "--input", "2 given, but gk_cli_ops:good_square(x) cannot be called"),
    ([*TWO, "--input", "3"], "--input", "missing a required argument: 'y'"),
    (["check", "torch:tanh", "--input", "3", "--input", "3"], "--input", "cannot be called with the 2 input(s)"),
    ([*FUZZ[:2], "--input", "?,x"], "--input", "bad shape '?,x'"),
    ([*FUZZ[:2], "--input", "3:int64"], "--input", "fuzz draws real floating tensors"),
    ([*FUZZ[:2], "--input", "3:complex64"], "--input", "fuzz draws real floating tensors"),
    # --kwarg
    ([*CHECK, "--kwarg", "-1"], "--kwarg", "expected NAME=VALUE"),
    ([*CHECK, "--kwarg", "dim"], "--kwarg", "expected NAME=VALUE"),
    ([*TWO, "--input", "3", "--input", "3", "--kwarg", "scale=two"], "--kwarg", "'two' is not a Python literal"),
    ([*TWO, "--input", "3", "--input", "3", "--kwarg", "scale=[1,"], "--kwarg", "is not a Python literal"),
    ([*CHECK, "--kwarg", "dim=1"], "--kwarg", "unexpected keyword argument 'dim'"),
    ([*FUZZ, "--kwarg", "dim=x"], "--kwarg", "'x' is not a Python literal"),
    # --seed
    ([*CHECK, "--seed", "99999999999999999999999"], "--seed=99999999999999999999999", "must be an int in [0, 2**63)"),
    ([*CHECK, "--seed", "-1"], "--seed=-1", "is invalid: must be an int in [0, 2**63)"),
    ([*CHECK, "--seed", "1.5"], "--seed=1.5", "is invalid: must be an int in [0, 2**63)"),
    ([*FUZZ, "--seed", str(2**63)], f"--seed={2**63}", "is invalid: must be an int in [0, 2**63)"),
    (["audit", "--seed", "-1"], "--seed=-1", "is invalid: must be an int in [0, 2**63)"),
    (["audit", "--seed", "x"], "--seed=x", "is invalid: must be an int in [0, 2**63)"),
    # --min-value / --max-value
    ([*CHECK, "--min-value", "nan"], "--min-value", "must be a finite number"),
    ([*CHECK, "--min-value=-inf"], "--min-value", "must be a finite number"),
    ([*CHECK, "--max-value", "nan"], "--max-value", "must be a finite number"),
    ([*CHECK, "--max-value", "big"], "--max-value", "not a number"),
    ([*CHECK, "--min-value", "2", "--max-value", "1"], "--min-value", "is greater than --max-value"),
    ([*FUZZ, "--min-value", "inf"], "--min-value", "must be a finite number"),
    # --wrt
    ([*CHECK, "--wrt", "1"], "--wrt", "index 1 is out of range for 1 --input(s)"),
    ([*CHECK, "--wrt", "x"], "--wrt", "expected input indices"),
    ([*CHECK, "--wrt", ""], "--wrt", "expected input indices"),
    ([*TWO, "--input", "3", "--input", "3:int64", "--wrt", "1"], "--wrt", "input 1 is int64"),
    ([*FUZZ, "--wrt", "-2"], "--wrt", "index -2 is out of range"),
    # checker options
    ([*CHECK, "--mode", "fast"], "--mode=fast", "is invalid: must be one of 'auto', 'full', 'directional'"),
    ([*CHECK, "--order", "5"], "--order=5", "is invalid: must be an int from 1 to 4"),
    ([*CHECK, "--order", "x"], "--order=x", "is invalid: must be an int from 1 to 4"),
    ([*CHECK, "--forward-ad", "maybe"], "--forward-ad=maybe", "is invalid: must be True, False or 'auto'"),
    ([*CHECK, "--atol", "-1"], "--atol=-1", "is invalid: must be a finite number >= 0"),
    ([*CHECK, "--atol", "nan"], "--atol=nan", "is invalid: must be a finite number >= 0"),
    ([*CHECK, "--rtol", "inf"], "--rtol=inf", "is invalid: must be a finite number >= 0"),
    ([*FUZZ, "--rtol", "x"], "--rtol=x", "is invalid: must be a finite number >= 0"),
    ([*CHECK, "--color", "purple"], "--color=purple", "is invalid: must be one of 'auto', 'always', 'never'"),
    # --json
    ([*CHECK, "--json", "/no/such/dir/a.json"], "--json", "no such directory"),
    ([*CHECK, "--json", "/proc/nope/x.json"], "--json", "no such directory"),
    ([*CHECK, "--json", str(HERE)], "--json", "is a directory"),
    ([*FUZZ, "--json", str(HERE)], "--json", "is a directory"),
    (["audit", "--ops", "tanh", "--json", str(HERE)], "--json", "is a directory"),
    # fuzz
    ([*FUZZ, "--examples", "0"], "--examples", "must be at least 1"),
    ([*FUZZ, "--examples", "many"], "--examples", "not an integer"),
    ([*FUZZ, "--max-side", "0"], "--max-side", "must be at least 1"),
    ([*FUZZ, "--layout", "diagonal"], "--layout=diagonal", "is invalid: must be one of 'any', 'contiguous', 'noncontiguous'"),
    # audit
    (["audit", "--ops", ","], "--ops", "no op names given"),
    (["audit", "--ops", "tanhh"], "--ops", "unknown op 'tanhh'; did you mean tanh"),
    (["audit", "--ops", "gk_cli_ops:good_square"], "--ops", "give the function's inputs"),
    (["audit", "--ops", "gk_cli_ops:good_square="], "--ops", "no input shapes after '='"),
    (["audit", "--ops", "gk_cli_ops:good_square=3:float99"], "--ops", "unknown dtype 'float99'"),
    (["audit", "--ops", "gk_cli_ops:good_square=3:int64"], "--ops", "no floating input"),
    (["audit", "--ops", "gk_cli_ops:good_squar=3"], "good_squar", "did you mean good_square"),
    (["audit", "--ops", "gk_cli_ops:add_scaled=3"], "--input", "missing a required argument: 'y'"),
    (["audit", "--ops", "tanh", "--input", "3"], "--input", "there is none"),
    (["audit", "--ops", "gk_cli_ops:good_square", "--input", "3,b"], "--input", "bad shape '3,b'"),
    (["audit", "--dtypes", "float16"], "--dtypes", "'float16' is not float32 or float64"),
    (["audit", "--dtypes", ","], "--dtypes", "give float32, float64 or both"),
    (["audit", "--examples", "-1"], "--examples", "must be at least 0"),
    (["audit", "--order", "3"], "--order", "invalid choice: 3"),
    (["audit", "--quick=yes"], "--quick", "ignored explicit argument 'yes'"),
    (["audit", "--strict=yes"], "--strict", "ignored explicit argument 'yes'"),
    (["audit", "--list=yes"], "--list", "ignored explicit argument 'yes'"),
    (["audit", "--quiet=yes"], "--quiet", "ignored explicit argument 'yes'"),
    (["audit", "--color", "purple"], "--color=purple", "is invalid: must be one of 'auto', 'always', 'never'"),
    # the command itself
    (["frobnicate"], "frobnicate", "invalid choice"),
    (["check", "gk_cli_ops:good_square", "--input", "3", "--bogus"], "--bogus", "unrecognized arguments"),
]


@pytest.fixture(autouse=True)
def _ops_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.parametrize("argv, names, fragment", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_bad_argument_exits_2_with_one_line_naming_it(capsys, argv, names, fragment):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, out + err
    assert len(lines) == 1, err
    assert names in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert out == ""  # nothing ran before the error


def test_a_bad_argument_leaves_no_json_file_behind(capsys, tmp_path):
    target = tmp_path / "report.json"
    code = cli.main([*CHECK[:2], "--input", "3,b", "--json", str(target)])
    assert code == 2
    assert not target.exists()
    assert cli.main([*CHECK, "--json", str(target)]) == 0  # the probe of a new path leaves none either
    assert target.exists()
    capsys.readouterr()


def _run_cli(*args):
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), environment.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "gradcheck_kit", *args], capture_output=True, text=True, timeout=120, env=environment
    )


@pytest.mark.parametrize(
    "argv, names",
    [
        (["check", "gk_cli_ops:good_square", "--input", "100000,100000"], "--input 100000,100000"),
        (["check", "gk_cli_ops:good_square", "--input", "3", "--seed", "99999999999999999999999"], "--seed"),
        (["audit", "--seed", "-1"], "--seed"),
        (["check", "a:b:c", "--input", "3"], "'a:b:c'"),
    ],
)
def test_bad_arguments_in_a_subprocess(argv, names):
    proc = _run_cli(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], proc.stderr
    assert "internal error" not in proc.stderr and proc.stdout == ""


# -- one source for the check options: gradcheck_kit.options ------------------------------------


@pytest.mark.parametrize("mode", options.MODES)
def test_the_cli_accepts_every_mode_of_the_options(mode):
    assert cli.build_parser().parse_args([*CHECK, "--mode", mode]).mode == mode


@pytest.mark.parametrize(
    "key, choices",
    [("mode", options.MODES), ("order", options.ORDERS), ("forward_ad", options.FORWARD_AD)],
)
def test_the_cli_offers_exactly_the_choices_of_the_options(capsys, key, choices):
    """``check --help`` lists the choices as the options module has them, and each one parses to itself."""
    flag = "--" + key.replace("_", "-")
    assert cli.main(["check", "--help"]) == 0
    listed = "{" + ",".join(str(c).lower() for c in choices) + "}"
    assert f"{flag} {listed}" in " ".join(capsys.readouterr().out.split())
    for choice in choices:
        args = cli.build_parser().parse_args([*CHECK, flag, str(choice).lower()])
        assert getattr(args, key) == choice


#: (keyword of check_gradients, its bad value in Python, on the command line)
SAME_TEXT_CASES = [
    ("mode", "fast", "fast"),
    ("order", 5, "5"),
    ("forward_ad", "maybe", "maybe"),
    ("seed", -1, "-1"),
    ("atol", -1.0, "-1"),
    ("rtol", float("inf"), "inf"),
]


@pytest.mark.parametrize("key, value, text", SAME_TEXT_CASES, ids=[c[0] for c in SAME_TEXT_CASES])
def test_a_bad_flag_gives_the_text_of_the_keyword(capsys, key, value, text):
    """The command line's usage error is check_gradients' InvalidArgument with the flag for the keyword."""
    import torch

    import gradcheck_kit as gk

    with pytest.raises(gk.InvalidArgument) as info:
        gk.check_gradients(torch.sin, torch.ones(2, dtype=torch.float64), **{key: value})
    reason = str(info.value).split(" is invalid: ", 1)[1]
    flag = "--" + key.replace("_", "-")
    assert cli.main([*CHECK, flag, text]) == 2
    assert capsys.readouterr().err == f"gradcheck-kit check: error: {flag}={text} is invalid: {reason}\n"
