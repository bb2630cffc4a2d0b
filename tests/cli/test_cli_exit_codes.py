"""Exit statuses (0 pass, 1 wrong gradient, 2 bad usage, 3 the function failed, 4 internal error), --wrt,
user functions in the audit, fuzz's example count, an unwritable --json file, and a closed stdout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck_kit import cli

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _ops_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def run_main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- 3: the function failed ------------------------------------------------------------------


def test_a_function_calling_sys_exit_is_a_function_failure(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:exits", "--input", "3")
    assert code == 3
    assert err.strip() == "gradcheck-kit check: the function called sys.exit(5)"


def test_a_function_returning_no_tensor_is_a_function_failure(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:returns_a_string", "--input", "3", "--json", "-")
    assert code == 3, out + err
    report = json.loads(out)
    assert report["ok"] is False and report["fn_failed"] is True


def test_a_wrong_gradient_is_not_a_function_failure(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:wrong_square", "--input", "3", "--json", "-")
    assert code == 1, out + err
    assert json.loads(out)["fn_failed"] is False


def test_fuzz_says_the_function_raised_and_exits_3(capsys):
    code, out, err = run_main(
        capsys, "fuzz", "gk_cli_ops:raises_type_error_on_long_inputs", "--input", "?", "--examples", "10"
    )
    assert code == 3, out + err
    first = out.splitlines()[0]
    assert first.startswith("fuzz_gradients(raises_type_error_on_long_inputs): fn raised TypeError: inputs longer")
    assert "gradients are wrong" not in out
    assert out.splitlines()[-1].startswith("ERROR gk_cli_ops:raises_type_error_on_long_inputs(?:float64)")


def test_fuzz_counts_examples_apart_from_shrinking(capsys):
    # every input fails: the first example is the counterexample, and every later call shrinks it
    argv = ["fuzz", "gk_cli_ops:wrong_square", "--input", "?", "--min-value", "1", "--examples", "3"]
    code, out, err = run_main(capsys, *argv, "--json", "-")
    assert code == 1, out + err
    data = json.loads(out)
    assert (data["examples"], data["max_examples"], data["fn_failed"]) == (1, 3, False)
    assert data["shrink_checks"] >= 1
    code, out, err = run_main(capsys, *argv)
    assert f"counterexample found at example 1 of up to 3, shrunk in {data['shrink_checks']} more" in out.splitlines()[0]
    assert out.splitlines()[-1].endswith("  1 example, seed=0")


def test_an_internal_error_exits_4(capsys, monkeypatch):
    import gradcheck_kit as gk

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(gk, "check_gradients", broken)  # the checker itself breaks, not fn
    code, out, err = run_main(capsys, "check", "gk_cli_ops:good_square", "--input", "3")
    assert code == 4
    assert err.startswith("gradcheck-kit: internal error: RuntimeError: a bug of ours")


# -- --wrt -------------------------------------------------------------------------------------


def test_wrt_chooses_the_inputs_checked(capsys):
    base = ["check", "gk_cli_ops:wrong_for_second", "--input", "3", "--input", "3"]
    assert run_main(capsys, *base)[0] == 1  # y's gradient is 10 % off
    assert run_main(capsys, *base, "--wrt", "1")[0] == 1
    code, out, err = run_main(capsys, *base, "--wrt", "0", "--json", "-")
    assert code == 0, out + err
    assert [i["differentiated"] for i in json.loads(out)["inputs"]] == [True, False]
    code, out, err = run_main(capsys, *base, "--wrt", "0")
    assert out.splitlines()[-1] == "PASSED gk_cli_ops:wrong_for_second(3:float64, 3:float64)  seed=0  wrt=0"


def test_fuzz_takes_wrt(capsys):
    base = ["fuzz", "gk_cli_ops:wrong_for_second", "--input", "?", "--input", "1", "--examples", "5"]
    assert run_main(capsys, *base, "--wrt", "0")[0] == 0
    assert run_main(capsys, *base, "--wrt", "-1")[0] == 1


# -- audit with the user's functions ---------------------------------------------------------


def audit_json(capsys, *argv):
    code, out, err = run_main(capsys, "audit", "-q", "--examples", "0", "--order", "1", "--json", "-", *argv)
    return code, json.loads(out) if out else None, err


def test_audit_checks_user_functions_beside_the_catalogue(capsys):
    code, data, err = audit_json(capsys, "--ops", "tanh,gk_cli_ops:wrong_square=2,3", "--dtypes", "float64")
    assert code == 1, err
    rows = [(r["op"], r["family"], r["dtype"], r["verdict"]) for r in data["results"]]
    assert rows == [("tanh", "elementwise", "float64", "pass"), ("gk_cli_ops:wrong_square", "user", "float64", "FAIL")]
    assert data["results"][1]["report"]["inputs"][0]["shape"] == [2, 3]


def test_audit_user_function_inputs_from_input_and_dtypes(capsys):
    code, data, err = audit_json(capsys, "--ops", "gk_cli_ops:good_square", "--input", "4")
    assert code == 0, err
    assert [(r["op"], r["dtype"]) for r in data["results"]] == [
        ("gk_cli_ops:good_square", "float32"), ("gk_cli_ops:good_square", "float64")
    ]
    # a dtype written in the spec is kept: one row; --ops may be repeated; several inputs with ';'
    code, data, err = audit_json(
        capsys, "--ops", "gk_cli_ops:good_square=3:float32", "--ops", "gk_cli_ops:add_scaled=2,3;3"
    )
    assert code == 0, err
    assert [(r["op"], r["dtype"]) for r in data["results"]] == [
        ("gk_cli_ops:good_square", "float32"), ("gk_cli_ops:add_scaled", "float32"), ("gk_cli_ops:add_scaled", "float64")
    ]


def test_audit_exits_3_when_a_user_function_raises(capsys):
    code, data, err = audit_json(capsys, "--ops", "gk_cli_ops:raises=3", "--dtypes", "float64")
    assert code == 3, err
    assert data["results"][0]["verdict"] == "error" and data["results"][0]["fn_failed"] is True


# -- --json that cannot be written, and a closed stdout --------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_json_that_fails_at_the_end_still_prints_the_report(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:good_square", "--input", "3", "--json", "/dev/full")
    assert code == 2
    assert out.splitlines()[-1] == "PASSED gk_cli_ops:good_square(3:float64)  seed=0"
    assert err.strip().splitlines() == [
        "gradcheck-kit check: error: --json '/dev/full': could not write the results: No space left on device "
        "(the report is above)"
    ]


def test_an_existing_json_file_is_probed_without_being_changed(capsys, tmp_path):
    target = tmp_path / "old.json"
    target.write_text("{}")
    code, out, err = run_main(capsys, "check", "gk_cli_ops:good_square", "--input", "3,b", "--json", str(target))
    assert code == 2 and target.read_text() == "{}"
    target.chmod(0o444)
    if os.access(target, os.W_OK):  # root writes anyway
        pytest.skip("running as root: a read-only file is writable")
    code, out, err = run_main(capsys, "check", "gk_cli_ops:good_square", "--input", "3", "--json", str(target))
    assert code == 2 and out == "" and "cannot write there: Permission denied" in err


def test_a_closed_stdout_ends_quietly_with_0():
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), environment.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradcheck_kit", "audit", "--list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )
    proc.stdout.close()  # as `| head` does once it has read enough: before the listing is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
