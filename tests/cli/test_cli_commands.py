"""The subcommands run in-process through ``cli.main`` (cheaper than a subprocess): output, JSON, RNG."""

import json

import torch

from gradcheck_kit import cli


def run_main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_leaves_the_global_rng_alone(capsys):
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    code, out, err = run_main(capsys, "check", "torch.nn.functional:gelu", "--input", "3,4:float32", "--seed", "7")
    assert code == 0, out + err
    assert torch.equal(torch.random.get_rng_state(), state)
    assert out.splitlines()[-1] == "PASSED torch.nn.functional:gelu(3,4:float32)  seed=7"


def test_check_json_to_stdout_is_only_json(capsys):
    code, out, err = run_main(capsys, "check", "torch:tanh", "--input", "5", "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["inputs"][0]["shape"] == [5]
    assert report["inputs"][0]["dtype"].endswith("float64")


def test_check_scalars_keywords_and_value_ranges(capsys):
    code, out, err = run_main(capsys, "check", "torch:softmax", "--input", "3,4", "--kwarg", "dim=-1")
    assert code == 0, out + err
    code, out, err = run_main(capsys, "check", "torch:log", "--input", "()", "--min-value", "0.5", "--json", "-")
    assert code == 0, out + err
    assert json.loads(out)["inputs"][0]["shape"] == []
    code, out, err = run_main(capsys, "check", "torch:log", "--input", "()", "--input", "2")
    assert code == 2  # log takes one tensor: a builtin's own TypeError at the call is a usage error
    assert err.startswith("gradcheck-kit check: error: --input: torch:log cannot be called with the 2 input(s)")
    assert "Traceback" not in out + err


def test_check_reports_a_function_that_raises(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:raises", "--input", "3")
    assert code == 3  # the function failed: not a wrong gradient (1), not bad usage (2)
    assert "boom inside the function" in out + err
    assert out.splitlines()[-1] == "ERROR gk_cli_ops:raises(3:float64)  seed=0  (the function failed)"
    assert "Traceback" not in out + err


def test_check_finds_the_wrong_backward(capsys):
    code, out, err = run_main(capsys, "check", "gk_cli_ops:wrong_square", "--input", "2,2", "--mode", "directional")
    assert code == 1
    assert out.splitlines()[-1] == "FAILED gk_cli_ops:wrong_square(2,2:float64)  seed=0"


def test_audit_json_to_stdout(capsys):
    code, out, err = run_main(capsys, "audit", "--ops", "relu", "--examples", "2", "--order", "1", "--json", "-", "-q")
    assert code == 0, out + err
    data = json.loads(out)
    assert [(r["op"], r["dtype"]) for r in data["results"]] == [("relu", "float32"), ("relu", "float64")]
    assert err == ""  # --quiet: no progress
