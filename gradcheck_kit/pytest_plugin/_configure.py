"""Start of a run: the ``--gradcheck-*`` options and their ini keys, configuration, the report header.

Every value is validated by :mod:`gradcheck_kit.options`, so a bad one is a usage error with the same
text as a bad keyword of ``check_gradients`` or a bad flag of the command line, naming ``arg=value``.
"""

from __future__ import annotations

import os
import random
import stat
import sys
from typing import Any, Callable

import pytest

from gradcheck_kit import _config, _hypothesis_hook, _xdist_threads
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import FLOAT_DTYPES, MODES, CheckOptions, check_choice, parse_option
from gradcheck_kit.pytest_plugin._marker import MARKER_ORDER
from gradcheck_kit.pytest_plugin._state import ACTIVE, STATE_KEY, RunOptions, RunState, route_report, state_of
from gradcheck_kit.pytest_plugin._xdist import SEED_KEY, XdistHooks

__all__ = [
    "INI_KEYS",
    "parse_value",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
    "pytest_report_header",
    "pytest_load_initial_conftests",
]

#: run options read from the ini file where the command line does not give them: option -> ini key
INI_KEYS = {"seed": "gradcheck_seed", "mode": "gradcheck_mode", "dtype": "gradcheck_dtype", "strict": "gradcheck_strict"}


def parse_value(key: str, text: str, name: str) -> Any:
    """The value of run option ``key`` given as ``text`` under ``name`` (a flag or an ini key), or a
    ``pytest.UsageError`` with :mod:`gradcheck_kit.options`' message. ``seed`` also takes ``random``."""
    try:
        if key == "dtype":
            return check_choice(name, str(text).strip(), FLOAT_DTYPES)
        if key == "seed" and str(text).strip() == "random":
            return "random"
        return parse_option(key, text, name)
    except InvalidArgument as exc:
        raise pytest.UsageError(f"{exc}, or 'random'" if key == "seed" else str(exc)) from None


def _flag_type(key: str, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        return parse_value(key, text, flag)

    convert.__name__ = key
    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck_kit", "gradient checks (gradcheck_kit)")
    group.addoption(
        "--gradcheck-seed", action="store", type=_flag_type("seed", "--gradcheck-seed"), default=None, metavar="N",
        help="seed of the gradient checks' random directions (default 0; 'random' draws one and the header prints it).",
    )
    group.addoption(
        "--gradcheck-mode", action="store", type=_flag_type("mode", "--gradcheck-mode"), choices=MODES, default=None,
        help="mode of the gradient checks where the test's marker does not set one.",
    )
    group.addoption(
        "--gradcheck-dtype", action="store", type=_flag_type("dtype", "--gradcheck-dtype"), choices=FLOAT_DTYPES,
        default=None,
        help="cast the floating inputs of the gradcheck fixture's checks to this dtype (unless the test's marker "
        "sets dtype=), and run gradcheck_dtype tests in it only.",
    )
    group.addoption(
        "--gradcheck-strict", action="store_true", default=False,
        help="entries that agree only approximately fail the gradient checks (strict=True) where the test's "
        "marker does not set strict=.",
    )
    group.addoption(
        "--gradcheck-report", action="store", default=None, metavar="PATH",
        help="write a JSON record of every gradient check to PATH.",
    )
    for key, ini in INI_KEYS.items():
        parser.addini(ini, f"as --gradcheck-{key}, where the command line does not give it (gradcheck_kit)")


def _run_options(config: pytest.Config) -> RunOptions:
    """The command line's options, else the ini file's; the seed from the controller in an xdist worker."""
    values: dict[str, Any] = {}
    for key, ini in INI_KEYS.items():
        value = config.getoption(f"gradcheck_{key}")
        if value is None or value is False:
            text = str(config.getini(ini) or "").strip()
            value = parse_value(key, text, ini) if text else None
        values[key] = value
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and SEED_KEY in workerinput:
        seed = int(workerinput[SEED_KEY])
    elif values["seed"] == "random":
        seed = random.Random().getrandbits(32)
    else:
        seed = int(values["seed"] if values["seed"] is not None else CheckOptions().seed)
    report = config.getoption("gradcheck_report", None)
    return RunOptions(seed, values["mode"], values["dtype"], bool(values["strict"]), report)


def _marker_line() -> str:
    keywords = ", ".join(f"{name}=" for name in MARKER_ORDER)
    return f"gradcheck({keywords}): options of this test's gradient checks (gradcheck_kit)."


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _marker_line())
    if getattr(config, "workerinput", None) is None:
        _check_report_path(config)  # workers write no report
    options = _run_options(config)
    config.option.gradcheck_seed = options.seed
    state = RunState(config, options)
    config.stash[STATE_KEY] = state
    if not ACTIVE:
        _config.add_report_listener(route_report)
    ACTIVE.append(state)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "gradcheck_kit.xdist")
    # tryfirst: before Hypothesis' own pytest_configure loads the profile named on the command line.
    profile = config.getoption("hypothesis_profile", None) or ""
    if "hypothesis" in sys.modules or profile.startswith("gradcheck-"):
        _hypothesis_hook.register_hypothesis_profiles()


def _report_path_problem(path: Any) -> str | None:
    """Why a report cannot be written at ``path`` (``None`` when it can). A file made to find out is
    removed again."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        return exc.strerror or str(exc)
    if mode is not None and stat.S_ISDIR(mode):
        return "it is a directory"
    if mode is not None and not stat.S_ISREG(mode):
        return "it is not a regular file"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if mode is None:
        path.unlink()
    return None


def _check_report_path(config: pytest.Config) -> None:
    """``--gradcheck-report`` must name a file that can be written, else the run stops now with a usage error
    (not at its end, after every test ran)."""
    option = config.getoption("gradcheck_report", None)
    if not option:
        return
    problem = _report_path_problem(config.invocation_params.dir / option)
    if problem is not None:
        raise pytest.UsageError(f"--gradcheck-report={option}: cannot write the report there ({problem})")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state in ACTIVE:
        ACTIVE.remove(state)
        if not ACTIVE:
            _config.remove_report_listener(route_report)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"gradcheck_kit: {state_of(config).command_line()}"]
    workers = len(getattr(config.option, "tx", None) or ()) if getattr(config.option, "dist", "no") != "no" else 0
    if workers and not hasattr(config, "workerinput"):
        lines.append(f"gradcheck_kit: {_xdist_threads.plan(workers, os.environ)[1]}")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """In an xdist worker, before conftests (and torch) load: share the cores among the workers."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if os.environ.get("PYTEST_XDIST_WORKER") and count.isdigit():
        _xdist_threads.apply_in_worker(int(count), os.environ)
