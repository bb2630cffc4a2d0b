"""The command line's pure parts, in-process: input specs, MODULE:FUNCTION, tables, colour, usage errors."""

import pytest

from gradcheck_kit import cli
from gradcheck_kit.cli import InputSpec, UsageError, format_ratio, format_table, parse_input_spec, resolve_function


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4,8:float32", InputSpec((4, 8), "float32")),
        ("4,8", InputSpec((4, 8), "float64")),
        ("(4, 8):double", InputSpec((4, 8), "float64")),
        ("4x8:f32", InputSpec((4, 8), "float32")),
        ("5:torch.float32", InputSpec((5,), "float32")),
        ("(5,)", InputSpec((5,), "float64")),
        ("():float32", InputSpec((), "float32")),
        ("()", InputSpec((), "float64")),
        ("", InputSpec((), "float64")),
        (":float32", InputSpec((), "float32")),
        ("2,0,3:complex128", InputSpec((2, 0, 3), "complex128")),
        ("3:int64", InputSpec((3,), "int64")),
    ],
)
def test_input_specs(text, expected):
    assert parse_input_spec(text) == expected


def test_question_marks_only_for_fuzz():
    assert parse_input_spec("?,8:float32", allow_free=True) == InputSpec((None, 8), "float32")
    assert parse_input_spec("?,8:float32", allow_free=True).free
    with pytest.raises(UsageError, match=r"'\?' sizes are for 'fuzz'"):
        parse_input_spec("?,8:float32")


def test_spec_prints_back():
    assert str(InputSpec((None, 8), "float32")) == "?,8:float32"
    assert str(InputSpec((), "float64")) == "():float64"


@pytest.mark.parametrize(
    "text, message",
    [
        ("4,a:float32", r"--input '4,a:float32': bad shape '4,a'"),
        ("4,8:float33", r"unknown dtype 'float33'; did you mean float32"),
        ("4,8:banana", r"unknown dtype 'banana'; known: bfloat16, bool, complex128"),
        ("4,8:", r"missing dtype after ':'"),
        ("4,-1", r"negative size -1"),
        ("4,,8", r"bad shape"),
    ],
)
def test_bad_specs(text, message):
    with pytest.raises(UsageError, match=message):
        parse_input_spec(text)


def test_kwargs_are_python_literals():
    assert cli.parse_kwarg("dim=-1") == ("dim", -1)
    assert cli.parse_kwarg("approximate='tanh'") == ("approximate", "tanh")
    assert cli.parse_kwarg("size=(2, 3)") == ("size", (2, 3))
    with pytest.raises(UsageError, match="'tanh' is not a Python literal; quote a string: approximate='tanh'"):
        cli.parse_kwarg("approximate=tanh")
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        cli.parse_kwarg("-1")


def test_resolve_function_forms():
    import torch

    assert resolve_function("torch.nn.functional:gelu") is torch.nn.functional.gelu
    assert resolve_function("torch:linalg.solve") is torch.linalg.solve
    assert resolve_function("torch.tanh") is torch.tanh  # a dotted name without a colon


def test_resolve_function_from_a_file(tmp_path):
    path = tmp_path / "my_ops.py"
    path.write_text("def double(x):\n    return 2 * x\n")
    assert resolve_function(f"{path}:double")(3) == 6


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_such_module_xyz:f", r"no module named 'no_such_module_xyz'"),
        ("torch.nn.functional:geluu", r"'torch.nn.functional' has no attribute 'geluu'; did you mean gelu"),
        ("torch:linalg.solvee", r"'torch:linalg' has no attribute 'solvee'; did you mean solve"),
        ("gk_cli_ops:NOT_A_FUNCTION", r"is a int, not a function"),
        ("justaname", r"expected MODULE:FUNCTION"),
        ("/no/such/file.py:f", r"no such file"),
    ],
)
def test_resolve_function_errors(target, message):
    with pytest.raises(UsageError, match=message):
        resolve_function(target)


def test_import_errors_inside_the_module_are_usage_errors(tmp_path, monkeypatch):
    (tmp_path / "broken_mod_for_cli.py").write_text("raise ImportError('needs a thing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"importing 'broken_mod_for_cli' failed: ImportError: needs a thing"):
        resolve_function("broken_mod_for_cli:f")


def test_table_is_aligned():
    table = format_table(["op", "n", "verdict"], [["tanh", "3", "pass"], ["linalg.solve", "12", "FAIL"]], align="lrl")
    assert table.splitlines() == [
        "op             n  verdict",
        "------------  --  -------",
        "tanh           3  pass",
        "linalg.solve  12  FAIL",
    ]


def test_colour_does_not_disturb_alignment():
    style = cli.Style(True)
    table = format_table(
        ["op", "verdict", "x"], [["a", "pass", "1"], ["bbbb", "FAIL", "2"]], colour=lambda r, c, s: style(s, "red")
    )
    plain = format_table(["op", "verdict", "x"], [["a", "pass", "1"], ["bbbb", "FAIL", "2"]])
    stripped = table.replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert stripped == plain
    assert "\x1b[31m" in table


class _Tty:
    def isatty(self):
        return True


class _Pipe:
    def isatty(self):
        return False


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli.Style.for_stream(_Tty()).enabled
    assert not cli.Style.for_stream(_Pipe()).enabled
    assert cli.Style.for_stream(_Pipe(), "always").enabled
    assert not cli.Style.for_stream(_Tty(), "never").enabled
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli.Style.for_stream(_Tty()).enabled
    assert cli.Style(False)("text", "red") == "text"


@pytest.mark.parametrize(
    "ratio, text", [(None, "-"), (0.0, "0"), (0.0312, "0.0312"), (12.5, "12.5"), (3e-7, "3.0e-07"), (float("inf"), "inf")]
)
def test_format_ratio(ratio, text):
    assert format_ratio(ratio) == text


# -- main() in-process: exit codes and one-line errors --------------------------------------


def run_main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_usage_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["check", "no_such_module_xyz:f", "--input", "3"], "no module named 'no_such_module_xyz'"),
        (["check", "torch.nn.functional:geluu", "--input", "3"], "did you mean gelu"),
        (["check", "torch:tanh", "--input", "3,b"], "bad shape '3,b'"),
        (["check", "torch:tanh", "--input", "3:float99"], "unknown dtype 'float99'"),
        (["check", "torch:tanh"], "the following arguments are required: --input"),
        (["check", "torch:tanh", "--input", "3", "--mode", "fast"], "--mode=fast is invalid: must be one of 'auto', 'full', 'directional'"),
        (["check", "torch:tanh", "--input", "3", "--order", "5"], "--order=5 is invalid: must be an int from 1 to 4"),
        (["check", "torch:tanh", "--input", "3", "--atol", "-1"], "--atol=-1 is invalid: must be a finite number >= 0"),
        (["check", "torch:tanh", "--input", "3", "--bogus"], "unrecognized arguments: --bogus"),
        (["check", "torch:tanh", "--input", "3", "--min-value", "2", "--max-value", "1"], "--min-value 2.0 is greater"),
        (["fuzz", "torch:tanh", "--input", "3", "--examples", "0"], "argument --examples: must be at least 1"),
        (["audit", "--ops", "tanhh"], "unknown op 'tanhh'; did you mean tanh"),
        (["audit", "--dtypes", "float16"], "--dtypes: 'float16' is not float32 or float64"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["audit", "--ops", "tanh", "--json", "/no/such/dir/a.json"], "--json '/no/such/dir/a.json': no such directory"),
        (["check", "torch:tanh", "--input", "3", "--json", "/no/such/dir/a.json"], "no such directory"),
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys, argv, fragment):
    code, out, err = run_main(capsys, *argv)
    assert_one_line_usage_error(code, err, fragment)
    assert err.startswith("gradcheck-kit")


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, err = run_main(capsys)
    assert code == 2
    assert "check" in err and "audit" in err


def test_help_and_version_exit_0(capsys):
    assert run_main(capsys, "--help")[0] == 0
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.startswith("gradcheck-kit ")
    code, out, _ = run_main(capsys, "check", "--help")
    assert code == 0 and "SHAPE[:DTYPE]" in out
