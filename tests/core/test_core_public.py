"""Public surface: cheap import, honest __all__, exception hierarchy."""

from __future__ import annotations

import subprocess
import sys

import gradcheck_kit as gk


def test_import_does_not_load_torch_or_hypothesis():
    code = (
        "import gradcheck_kit, sys; "
        "assert 'torch' not in sys.modules and 'hypothesis' not in sys.modules, "
        "sorted(m for m in ('torch', 'hypothesis') if m in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_all_is_honest():
    assert len(gk.__all__) == len(set(gk.__all__))
    for name in gk.__all__:
        assert getattr(gk, name) is not None, name
    for name in (
        "check_gradients",
        "assert_gradients_close",
        "assert_grad_equals",
        "GradientReport",
        "Mismatch",
        "GradientMismatch",
        "InvalidArgument",
    ):
        assert name in gk.__all__


def test_unknown_attribute_raises_attribute_error():
    try:
        gk.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_exception_hierarchy():
    assert issubclass(gk.GradientMismatch, AssertionError)
    assert issubclass(gk.InvalidArgument, ValueError)
    assert issubclass(gk.GradientMismatch, gk.GradcheckKitError)
    assert issubclass(gk.InvalidArgument, gk.GradcheckKitError)
    err = gk.GradientMismatch("msg", report="r")
    assert err.report == "r" and str(err) == "msg"
