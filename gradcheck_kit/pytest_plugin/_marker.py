"""Collection and set-up: the ``gradcheck`` marker's keywords, the dtype and device parametrisation.

The marker takes the keywords of ``check_gradients`` (:data:`gradcheck_kit.options.OPTION_NAMES`,
validated by :func:`gradcheck_kit.options.check_option`) and ``dtype=``, ``dtypes=``, ``devices=``; an
unknown keyword or a bad value is a setup error naming it.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from gradcheck_kit import _hypothesis_hook
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import FLOAT_DTYPES, OPTION_NAMES, check_choice, check_option
from gradcheck_kit.pytest_plugin._state import RunState, state_of

__all__ = [
    "MARKER_KEYWORDS",
    "MARKER_ORDER",
    "dtype_name",
    "DEFAULT_DTYPES",
    "DEFAULT_DEVICES",
    "MarkerError",
    "marker_options",
    "options_in_force",
    "pytest_collection_modifyitems",
    "pytest_generate_tests",
    "pytest_runtest_setup",
]

#: what ``gradcheck_dtype`` and ``gradcheck_device`` are parametrised over unless told otherwise
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_DEVICES = ("cpu", "cuda")
#: keywords of ``@pytest.mark.gradcheck``: check options, the dtype to run in, parametrisation lists
MARKER_KEYWORDS = frozenset(OPTION_NAMES) | {"dtype", "dtypes", "devices"}
#: the same, in the order the marker's help lists them
MARKER_ORDER = (*OPTION_NAMES, "dtype", "dtypes", "devices")


class MarkerError(Exception):
    """A bad ``gradcheck`` marker: reported as the test's setup error."""

    def __init__(self, message: str) -> None:
        super().__init__(f"@pytest.mark.gradcheck: {message}")


def dtype_name(value: Any, keyword: str) -> str:
    """The name of a float dtype given as ``torch.float32`` or ``"float32"``, or a :class:`MarkerError`."""
    try:
        return check_choice(keyword, str(value).removeprefix("torch."), FLOAT_DTYPES)
    except InvalidArgument as exc:
        raise MarkerError(str(exc)) from None


def _device_name(value: Any) -> str:
    import torch

    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError, ValueError):
        example = "such as 'cpu', 'cuda', 'cuda:1', 'mps'"
        raise MarkerError(f"devices: {value!r} is not a torch device ({example})") from None


def _marker_keywords(item: pytest.Item) -> dict[str, Any]:
    """The keywords of every ``gradcheck`` marker on ``item``, the closest marker winning."""
    options: dict[str, Any] = {}
    for marker in reversed(list(item.iter_markers("gradcheck"))):
        if marker.args:
            raise MarkerError(f"takes keywords only, got positional {marker.args!r}")
        options.update(marker.kwargs)
    return options


def marker_options(item: pytest.Item | None) -> dict[str, Any]:
    """The ``gradcheck`` marker keywords on ``item``, the closest marker winning; validated."""
    if item is None:
        return {}
    options = _marker_keywords(item)
    unknown = sorted(set(options) - MARKER_KEYWORDS)
    if unknown:
        raise MarkerError(f"unknown keyword(s) {', '.join(unknown)}; known: {', '.join(sorted(MARKER_KEYWORDS))}")
    for name in sorted(set(OPTION_NAMES) & set(options)):
        try:
            options[name] = check_option(name, options[name])
        except InvalidArgument as exc:
            raise MarkerError(str(exc)) from None
    if options.get("dtype") is not None:
        options["dtype"] = dtype_name(options["dtype"], "dtype")
    for name in ("dtypes", "devices"):
        values = options.get(name, ())
        if name in options and (isinstance(values, str) or not isinstance(values, (list, tuple)) or not values):
            raise MarkerError(f"{name}={values!r} is not a non-empty list")
    if "dtypes" in options:
        options["dtypes"] = [dtype_name(d, "dtypes") for d in options["dtypes"]]
    if "devices" in options:
        options["devices"] = [_device_name(d) for d in options["devices"]]
    return options


def options_in_force(state: RunState, marker: dict[str, Any]) -> dict[str, Any]:
    """``check_gradients`` keyword defaults in force: the marker, then the run's options, then the seed."""
    options: dict[str, Any] = {"seed": state.seed}
    if state.options.mode is not None:
        options["mode"] = state.options.mode
    if state.options.strict:
        options["strict"] = True
    options.update({k: v for k, v in marker.items() if k in OPTION_NAMES and v is not None})
    return options


def pytest_collection_modifyitems(config: pytest.Config) -> None:
    if "hypothesis" in sys.modules:  # a test module imported it: make the profiles available
        _hypothesis_hook.register_hypothesis_profiles()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [name for name in ("gradcheck_dtype", "gradcheck_device") if name in metafunc.fixturenames]
    if not wanted:
        return
    marker: dict[str, Any] = {}
    for mark in reversed(list(metafunc.definition.iter_markers("gradcheck"))):
        marker.update(mark.kwargs)
    try:
        dtypes = [dtype_name(d, "dtypes") for d in marker["dtypes"]] if "dtypes" in marker else None
    except (MarkerError, TypeError):
        dtypes = None  # reported at setup
    option = state_of(metafunc.config).options.dtype
    for name in wanted:
        if name == "gradcheck_dtype":
            values = list(dtypes or ([option] if option else DEFAULT_DTYPES))
        else:
            devices = marker.get("devices")
            values = [str(d) for d in devices] if isinstance(devices, (list, tuple)) and devices else list(DEFAULT_DEVICES)
        # function scope for the parameters (tests keep their order); the fixture stays
        # session-scoped, which is what keeps Hypothesis' function-scoped-fixture check quiet.
        metafunc.parametrize(name, values, indirect=True, ids=values, scope="function")


def pytest_runtest_setup(item: pytest.Item) -> None:
    try:
        marker_options(item)
    except MarkerError as error:
        message = str(error)
    else:
        return
    pytest.fail(message, pytrace=False)
