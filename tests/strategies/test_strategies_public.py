"""The public surface of gradcheck_kit.strategies: honest __all__, lazy pieces, cheap imports."""

import importlib.util
import subprocess
import sys

import pytest

import gradcheck_kit
from gradcheck_kit import strategies as gst

EXPRESSION_NAMES = {"expressions", "Expression", "Op"}


def test_all_is_sorted_and_every_name_resolves():
    assert gst.__all__ == sorted(gst.__all__)
    for name in set(gst.__all__) - EXPRESSION_NAMES:
        assert getattr(gst, name) is not None, name
    assert set(gst.__all__) <= set(dir(gst))


def test_expression_names_are_reexported_lazily():
    assert EXPRESSION_NAMES <= set(gst.__all__)
    if importlib.util.find_spec("gradcheck_kit._expressions") is None:
        pytest.skip("gradcheck_kit._expressions is not there yet")
    expressions = importlib.import_module("gradcheck_kit._expressions")
    for name in EXPRESSION_NAMES:
        assert getattr(gst, name) is getattr(expressions, name)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="module 'gradcheck_kit.strategies' has no attribute 'nope'"):
        gst.nope


def test_reachable_from_the_package():
    assert gradcheck_kit.strategies is gst
    assert gradcheck_kit.fuzz_gradients.__module__ == "gradcheck_kit.fuzz"
    assert gradcheck_kit.FuzzReport.__module__ == "gradcheck_kit.fuzz"


def test_importing_the_package_and_fuzz_does_not_import_hypothesis():
    code = (
        "import sys, gradcheck_kit as gk; gk.fuzz_gradients; gk.FuzzReport; "
        "assert 'hypothesis' not in sys.modules, 'hypothesis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
