"""Bad arguments to every public keyword: one ``InvalidArgument`` up front, one line, naming the argument.

The plugin's options and marker keywords are in ``tests/plugin/test_plugin_bad_arguments.py``; the
command line's flags belong in ``tests/cli/test_cli_bad_arguments.py``. The options themselves
(``gradcheck_kit.options``) are tested at the end of this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit import _config
from gradcheck_kit import strategies as gst
from gradcheck_kit.options import CheckOptions, argparse_type, check_option, parse_option, resolve_options

NAN, INF = math.nan, math.inf


def _x(*shape: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, math.prod(shape) or 1, dtype=torch.float64)[: math.prod(shape)].reshape(shape)


def _sin_sum(t):
    return t.sin().sum()


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=torch.float64)


def _nested() -> torch.Tensor:
    return torch.nested.nested_tensor([_x(2), _x(3)])


_NET = torch.nn.Linear(2, 1).double()

#: (check_gradients keyword, bad value, what the message must hold)
OPTION_CASES = [
    ("mode", "fast", "mode='fast' is invalid"),
    ("mode", 1, "mode=1 is invalid"),
    ("order", 5, "order=5 is invalid"),
    ("order", 0, "order=0 is invalid"),
    ("order", 2.0, "order=2.0 is invalid"),
    ("order", True, "order=True is invalid"),
    ("order", "2", "order='2' is invalid"),
    ("forward_ad", 1.0, "forward_ad=1.0 is invalid"),
    ("forward_ad", 1, "forward_ad=1 is invalid"),
    ("forward_ad", "yes", "forward_ad='yes' is invalid"),
    ("atol", NAN, "atol=nan is invalid"),
    ("atol", INF, "atol=inf is invalid"),
    ("atol", -1.0, "atol=-1.0 is invalid"),
    ("atol", "x", "atol='x' is invalid"),
    ("atol", True, "atol=True is invalid"),
    ("rtol", NAN, "rtol=nan is invalid"),
    ("rtol", INF, "rtol=inf is invalid"),
    ("rtol", -0.1, "rtol=-0.1 is invalid"),
    ("seed", -1, "seed=-1 is invalid"),
    ("seed", 2**63, f"seed={2**63} is invalid"),
    ("seed", 1.5, "seed=1.5 is invalid"),
    ("seed", "1", "seed='1' is invalid"),
    ("seed", True, "seed=True is invalid"),
    ("directions", 0, "directions=0 is invalid"),
    ("directions", -2, "directions=-2 is invalid"),
    ("directions", 1.5, "directions=1.5 is invalid"),
    ("directions", True, "directions=True is invalid"),
    ("nondet_tol", NAN, "nondet_tol=nan is invalid"),
    ("nondet_tol", INF, "nondet_tol=inf is invalid"),
    ("nondet_tol", -1e-3, "nondet_tol=-0.001 is invalid"),
    ("nondet_tol", "0", "nondet_tol='0' is invalid"),
    ("strict", "yes", "strict='yes' is invalid"),
    ("strict", 1, "strict=1 is invalid"),
]

#: (id, call, what the message must hold): every other public entry point and keyword
CALL_CASES = [
    # check_gradients: fn, inputs, wrt, input_names, grad_outputs
    ("fn", lambda: gk.check_gradients("tanh", _x(3)), "fn='tanh'"),
    ("wrt-range", lambda: gk.check_gradients(torch.sin, _x(3), wrt=[5]), "wrt=[5]"),
    ("wrt-str", lambda: gk.check_gradients(torch.sin, _x(3), wrt="a"), "wrt='a'"),
    ("input_names-str", lambda: gk.check_gradients(torch.mul, _x(3), _x(3), input_names="ab"), "input_names='ab'"),
    ("input_names-length", lambda: gk.check_gradients(torch.mul, _x(3), _x(3), input_names=["a"]), "input_names=['a']"),
    ("input_names-empty", lambda: gk.check_gradients(torch.sin, _x(3), input_names=[""]), "input_names=['']"),
    ("input_names-int", lambda: gk.check_gradients(torch.sin, _x(3), input_names=[1]), "input_names=[1]"),
    ("input_names-not-sequence", lambda: gk.check_gradients(torch.sin, _x(3), input_names=5), "input_names=5"),
    ("grad_outputs-int", lambda: gk.check_gradients(torch.sin, _x(3), grad_outputs=5), "grad_outputs=5"),
    ("grad_outputs-item", lambda: gk.check_gradients(torch.sin, _x(3), grad_outputs=[3]), "grad_outputs[0]=3"),
    ("inputs-coo", lambda: gk.check_gradients(torch.Tensor.to_dense, _x(3).to_sparse()), "inputs[0] (x) is a sparse COO tensor"),
    (
        "inputs-csr",
        lambda: gk.check_gradients(torch.Tensor.to_dense, _x(2, 3).to_sparse_csr()),
        "inputs[0] (x) is a sparse CSR tensor",
    ),
    ("inputs-nested", lambda: gk.check_gradients(torch.sin, _nested()), "inputs[0] (x) is a nested tensor"),
    ("inputs-meta", lambda: gk.check_gradients(torch.sin, _meta(3)), "inputs[0] (x) is a meta tensor of shape (3,)"),
    ("grad_outputs-meta", lambda: gk.check_gradients(torch.sin, _x(3), grad_outputs=_meta(3)), "grad_outputs is a meta"),
    (
        "grad_outputs-coo",
        lambda: gk.check_gradients(torch.sin, _x(3), grad_outputs=(_x(3).to_sparse(),)),
        "grad_outputs[0] is a sparse COO",
    ),
    (
        "assert_gradients_close",
        lambda: gk.assert_gradients_close(torch.sin, _x(3), nondet_tol=NAN),
        "nondet_tol=nan is invalid",
    ),
    # assert_grad_equals
    ("age-atol-nan", lambda: gk.assert_grad_equals(_sin_sum, _x(3), _x(3).cos(), atol=NAN), "atol=nan is invalid"),
    ("age-atol-inf", lambda: gk.assert_grad_equals(_sin_sum, _x(3), _x(3).cos(), atol=INF), "atol=inf is invalid"),
    ("age-rtol-nan", lambda: gk.assert_grad_equals(_sin_sum, _x(3), _x(3).cos(), rtol=NAN), "rtol=nan is invalid"),
    ("age-rtol-neg", lambda: gk.assert_grad_equals(_sin_sum, _x(3), _x(3).cos(), rtol=-1), "rtol=-1 is invalid"),
    ("age-grad_outputs-str", lambda: gk.assert_grad_equals(torch.sin, _x(3), _x(3), grad_outputs="x"), "grad_outputs='x'"),
    ("age-inputs", lambda: gk.assert_grad_equals(_sin_sum, "x", _x(3)), "inputs='x'"),
    ("age-inputs-coo", lambda: gk.assert_grad_equals(_sin_sum, (_x(3).to_sparse(),), _x(3)), "inputs[0] is a sparse COO"),
    (
        "age-expected-coo",
        lambda: gk.assert_grad_equals(_sin_sum, _x(3), _x(3).cos().to_sparse()),
        "expected[0] is a sparse COO tensor",
    ),
    ("age-expected-meta", lambda: gk.assert_grad_equals(_sin_sum, _x(3), _meta(3)), "expected[0] is a meta tensor"),
    ("age-expected-str", lambda: gk.assert_grad_equals(_sin_sum, _x(3), "cos"), "expected=str"),
    (
        "age-grad_outputs-meta",
        lambda: gk.assert_grad_equals(torch.sin, _x(3), _x(3).cos(), grad_outputs=_meta(3)),
        "grad_outputs is a meta tensor",
    ),
    # check_module_gradients / assert_module_gradients
    ("module", lambda: gk.check_module_gradients("net", _x(3, 2)), "module='net'"),
    ("module-name", lambda: gk.check_module_gradients(_NET, _x(3, 2), name=""), "name=''"),
    ("module-forward_kwargs", lambda: gk.check_module_gradients(_NET, _x(3, 2), forward_kwargs=1), "forward_kwargs=1"),
    ("module-input_names", lambda: gk.check_module_gradients(_NET, _x(3, 2), input_names="a"), "input_names='a'"),
    ("module-wrt", lambda: gk.check_module_gradients(_NET, _x(3, 2), wrt="nope"), "wrt='nope'"),
    ("module-atol", lambda: gk.check_module_gradients(_NET, _x(3, 2), atol=NAN), "atol=nan is invalid"),
    ("module-seed", lambda: gk.assert_module_gradients(_NET, _x(3, 2), seed=-1), "seed=-1 is invalid"),
    ("module-coo", lambda: gk.check_module_gradients(_NET, _x(3, 2).to_sparse()), "is a sparse COO tensor"),
    # assert_gradient_flow
    ("flow-module_or_fn", lambda: gk.assert_gradient_flow(1, _x(3)), "module_or_fn=1"),
    ("flow-loss", lambda: gk.assert_gradient_flow(_NET, _x(3, 2), loss=1), "loss=1"),
    ("flow-name", lambda: gk.assert_gradient_flow(_NET, _x(3, 2), name=3), "name=3"),
    ("flow-nothing", lambda: gk.assert_gradient_flow(torch.sin, _x(3)), "module_or_fn=<built-in"),
    # strategies
    ("shapes-min_dims", lambda: gst.shapes(min_dims=-1), "min_dims=-1"),
    ("shapes-max_dims", lambda: gst.shapes(max_dims=2.0), "max_dims=2.0"),
    ("shapes-sides", lambda: gst.shapes(min_side=3, max_side=2), "min_side=3"),
    ("tensors-shape", lambda: gst.tensors(shape="x"), "shape='x'"),
    ("tensors-dtype", lambda: gst.tensors(dtype="float32"), "dtype='float32'"),
    ("tensors-min_value", lambda: gst.tensors(min_value=NAN), "min_value=nan"),
    ("tensors-bounds", lambda: gst.tensors(min_value=2, max_value=1), "min_value=2.0"),
    ("tensors-layout", lambda: gst.tensors(layout="weird"), "layout='weird'"),
    ("tensors-requires_grad", lambda: gst.tensors(requires_grad=1), "requires_grad=1"),
    ("tensors-device", lambda: gst.tensors(device="tpu"), "device='tpu'"),
    ("expressions-n_inputs", lambda: gst.expressions(n_inputs=0), "n_inputs=0"),
    ("expressions-max_depth", lambda: gst.expressions(max_depth=-1), "max_depth=-1"),
    ("expressions-extra_ops", lambda: gst.expressions(extra_ops=[1]), "extra_ops=[1]"),
    ("expressions-reduction", lambda: gst.expressions(reduction="x"), "reduction='x'"),
    # fuzz_gradients passes its check keywords on
    (
        "fuzz-atol",
        lambda: gk.fuzz_gradients(torch.sin, [gst.tensors(shape=(2,))], max_examples=2, atol=NAN),
        "atol=nan is invalid",
    ),
    # process-wide defaults
    ("defaults-seed", lambda: _config.defaults(seed=-1).__enter__(), "seed=-1 is invalid"),
    ("defaults-unknown", lambda: _config.defaults(tolerance=1).__enter__(), "unknown keyword(s) ['tolerance']"),
]


def _one_line_naming(info: pytest.ExceptionInfo, expected: str) -> None:
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(("keyword", "value", "expected"), OPTION_CASES, ids=lambda v: repr(v) if not isinstance(v, str) else v)
@pytest.mark.parametrize("entry", ["check_gradients", "assert_gradients_close"])
def test_bad_check_option_is_invalid_argument_naming_it(entry, keyword, value, expected):
    with pytest.raises(gk.InvalidArgument) as info:
        getattr(gk, entry)(torch.sin, _x(3), **{keyword: value})
    _one_line_naming(info, expected)


@pytest.mark.filterwarnings("ignore:.*(Sparse CSR|nested tensors).*:UserWarning")
@pytest.mark.parametrize(("case", "call", "expected"), CALL_CASES, ids=[case for case, _, _ in CALL_CASES])
def test_bad_argument_is_invalid_argument_naming_it(case, call, expected):
    with pytest.raises(gk.InvalidArgument) as info:
        call()
    _one_line_naming(info, expected)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda t: t.to_sparse(), "a sparse COO tensor"),
        (lambda t: torch.empty(3, device="meta", dtype=t.dtype), "a meta tensor of shape (3,)"),
    ],
    ids=["sparse", "meta"],
)
def test_fn_returning_an_unsupported_tensor_is_a_report_error(make, kind):
    report = gk.check_gradients(make, _x(3))
    assert not report.ok and not report.mismatches
    assert report.errors == [f"output 0 of fn is {kind}: only strided tensors with values can be checked"]


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (lambda t: t.sin().sum().to_sparse(), "a sparse COO tensor"),
        (lambda t: torch.empty((), device="meta", dtype=t.dtype), "a meta tensor of shape ()"),
    ],
    ids=["sparse", "meta"],
)
def test_fn_returning_an_unsupported_tensor_to_assert_grad_equals_is_a_function_error(fn, kind):
    with pytest.raises(gk.FunctionError) as info:
        gk.assert_grad_equals(fn, _x(3), _x(3).cos())
    assert str(info.value) == f"assert_grad_equals: output 0 of fn is {kind}: only strided tensors can be checked"


def test_a_callable_expected_that_raises_names_expected_and_chains_the_cause():
    def expected(t):
        raise ZeroDivisionError("boom")

    with pytest.raises(gk.InvalidArgument, match=r"^expected=.*expected raised ZeroDivisionError: boom") as info:
        gk.assert_grad_equals(_sin_sum, _x(3), expected)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "\n" not in str(info.value)


def test_a_good_strict_is_carried():
    assert gk.check_gradients(torch.sin, _x(3), strict=True).ok
    assert gk.check_gradients(torch.sin, _x(3), strict=False).ok


# ---------------------------------------------------------------------------------------------- options


def test_check_options_are_frozen_validated_and_normalized():
    options = CheckOptions(order=2, atol=1, seed=3, strict=True)
    assert options.atol == 1.0 and isinstance(options.atol, float)
    assert options.as_dict() == {
        "mode": "auto", "order": 2, "forward_ad": "auto", "atol": 1.0, "rtol": None, "seed": 3,
        "directions": None, "nondet_tol": 0.0, "strict": True, "batched": False,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 4  # type: ignore[misc]
    with pytest.raises(gk.InvalidArgument, match=r"^seed=None is invalid"):
        CheckOptions(seed=None)  # type: ignore[arg-type]
    with pytest.raises(gk.InvalidArgument, match=r"^directions=0 is invalid"):
        options.replace(directions=0)


def test_resolve_options_takes_given_then_defaults_then_builtins():
    resolved = resolve_options({"seed": None, "mode": "full", "atol": None}, {"seed": 5, "mode": "directional"})
    assert (resolved.seed, resolved.mode, resolved.atol, resolved.order) == (5, "full", None, 1)
    assert resolve_options({}, {}) == CheckOptions()
    with pytest.raises(gk.InvalidArgument, match=r"unknown option\(s\) \['tolerance'\]"):
        resolve_options({"tolerance": 1}, {})


def test_check_keywords_given_as_none_take_the_defaults_and_reports_own_their_options():
    x = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64, requires_grad=True)
    with _config.defaults(mode="directional", seed=3):
        first = gk.check_gradients(torch.sin, x, mode=None, seed=None, atol=None)
        first.options["seed"] = 99  # a report's options are its own
        second = gk.check_gradients(torch.sin, x)
    assert (first.mode, second.options["mode"], second.options["seed"]) == ("directional", "directional", 3)
    assert gk.check_gradients(torch.sin, x, seed=None).options == CheckOptions().as_dict()


def test_modes_are_defined_once():
    from gradcheck_kit import checkers, options, pytest_plugin

    assert checkers.MODES is options.MODES is pytest_plugin.MODES
    assert checkers.FORWARD_AD is options.FORWARD_AD
    assert _config.CONFIGURABLE == frozenset(options.OPTION_NAMES)
    assert _config.BUILTIN_DEFAULTS == CheckOptions().as_dict()


def test_check_option_names_the_argument_as_spelled():
    assert check_option("seed", 7) == 7 and check_option("atol", None) is None
    with pytest.raises(gk.InvalidArgument, match=r"^marker seed=-1 is invalid: must be an int in \[0, 2\*\*63\)$"):
        check_option("seed", -1, name="marker seed")


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("seed", "12", 12), ("mode", "full", "full"), ("order", "2", 2), ("forward_ad", "false", False),
        ("forward_ad", "auto", "auto"), ("atol", "1e-3", 1e-3), ("rtol", "none", None), ("directions", "3", 3),
        ("nondet_tol", "0", 0.0), ("strict", "true", True),
    ],
)
def test_parse_option_reads_flags(key, text, value):
    assert parse_option(key, text, f"--{key}") == value


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("seed", "-5", "--seed=-5 is invalid: must be an int in [0, 2**63)"),
        ("seed", "18446744073709551616", "--seed=18446744073709551616 is invalid: must be an int in [0, 2**63)"),
        ("seed", "abc", "--seed=abc is invalid: must be an int in [0, 2**63)"),
        ("atol", "nan", "--atol=nan is invalid: must be a finite number >= 0, or None (derived from the dtype)"),
        ("nondet_tol", "inf", "--nondet_tol=inf is invalid: must be a finite number >= 0"),
        ("order", "2.0", "--order=2.0 is invalid: must be an int from 1 to 4 (each order checks the derivative of the one below it)"),
        ("forward_ad", "maybe", "--forward_ad=maybe is invalid: must be True, False or 'auto'"),
        ("mode", "fast", "--mode=fast is invalid: must be one of 'auto', 'full', 'directional'"),
        ("directions", "0", "--directions=0 is invalid: must be an int >= 1, or None (chosen by size)"),
    ],
)
def test_parse_option_names_the_flag(key, text, message):
    with pytest.raises(gk.InvalidArgument) as info:
        parse_option(key, text, f"--{key}")
    assert str(info.value) == message


def test_argparse_type_gives_argparse_the_message():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--seed", type=argparse_type("seed", "--seed"))
    assert parser.parse_args(["--seed", "4"]).seed == 4
    with pytest.raises(argparse.ArgumentError, match=r"--seed=-1 is invalid: must be an int in \[0, 2\*\*63\)"):
        parser.parse_args(["--seed=-1"])
