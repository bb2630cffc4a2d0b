"""pytest plugin for gradcheck_kit: fixtures, the ``gradcheck`` marker, options and a summary.

Installed with the package through the ``pytest11`` entry point ``gradcheck_kit``; disable it with
``-p no:gradcheck_kit``. Start-up stays light: torch, Hypothesis and the checkers are imported only
when a test uses the fixtures (or asks for a ``gradcheck-*`` Hypothesis profile).

Reproduce a run: the report header prints ``gradcheck_kit: --gradcheck-seed=N`` (plus any other
``--gradcheck-*`` option in force); pass the same options back to pytest.

- Fixtures: ``gradcheck`` (a checker that applies the options and marker in force),
  ``gradcheck_seed`` (the run's seed), ``gradcheck_dtype`` and ``gradcheck_device`` (parametrised).
  None is function-scoped, so they are safe in ``@given`` tests.
- Marker: ``@pytest.mark.gradcheck(mode=, atol=, rtol=, order=, forward_ad=, seed=, directions=,
  nondet_tol=, strict=, dtype=, dtypes=, devices=)``; an unknown keyword or a bad value is a setup
  error naming it (values are validated as ``check_gradients`` validates them).
- Options: ``--gradcheck-seed``, ``--gradcheck-mode``, ``--gradcheck-dtype``, ``--gradcheck-strict``,
  ``--gradcheck-report`` (a bad value, or a report path that cannot be written, is a usage error).
- Every ``GradientReport`` made during a test (through the fixture or a direct
  ``gk.assert_gradients_close``) is recorded for the terminal summary and the JSON report, also
  across ``pytest-xdist`` workers (each check travels with its test's report), and counted by the
  outcome of its test: a failing check in a test that did not fail is "expected", one of Hypothesis'
  search in a failing test "explored" (the JSON layout: docs/json-report.md).
- Under ``pytest-xdist`` each worker sets ``OMP_NUM_THREADS`` to cores // workers unless the user set
  the threads (``gradcheck_kit._xdist_threads``); the header says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from gradcheck_kit import _config, _hypothesis_hook, _xdist_threads
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import FORWARD_AD, MODES, ORDERS, check_option, parse_option  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from gradcheck_kit._report import GradientReport

__all__ = [
    "GradcheckFixture",
    "HYPOTHESIS_PROFILES",
    "MARKER_KEYWORDS",
    "register_hypothesis_profiles",
]

# The kit's assert helpers give richer messages when pytest rewrites them; that must happen before
# their first import (an already imported module would only earn a warning).
if "gradcheck_kit.assertions" not in sys.modules:
    pytest.register_assert_rewrite("gradcheck_kit.assertions")

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_DEVICES = ("cpu", "cuda")
#: keywords of ``@pytest.mark.gradcheck``: check options, the dtype to run in, parametrisation lists
MARKER_KEYWORDS = frozenset(_config.CONFIGURABLE | {"dtype", "dtypes", "devices"})
#: Hypothesis profiles offered (registered, never loaded: pick one with ``--hypothesis-profile``)
HYPOTHESIS_PROFILES = _hypothesis_hook.HYPOTHESIS_PROFILES
_RECORDS_KEY = "gradcheck_kit_records"
_SEED_KEY = "gradcheck_seed"
_SHOW_FAILED = 10
_SHOW_CLOSEST = 5


def register_hypothesis_profiles() -> None:
    """Register the ``gradcheck-*`` Hypothesis profiles (imports Hypothesis; loads none of them).

    Importing ``gradcheck_kit.strategies`` does this; so does the plugin when Hypothesis is imported
    by the time pytest is configured or collection ends, or when ``--hypothesis-profile
    gradcheck-...`` is given. What each profile sets: ``gradcheck_kit._hypothesis_hook``.
    """
    _hypothesis_hook.register_hypothesis_profiles()


# --------------------------------------------------------------------------------------------------
# options and configuration


def _seed_arg(value: str) -> int | str:
    if value == "random":
        return value
    try:
        return parse_option("seed", value, "--gradcheck-seed")
    except InvalidArgument as exc:
        raise pytest.UsageError(f"{exc}, or 'random'") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck_kit", "gradient checks (gradcheck_kit)")
    group.addoption(
        "--gradcheck-seed",
        action="store",
        type=_seed_arg,
        default=0,
        metavar="N",
        help="seed of the gradient checks' random directions (default 0; 'random' draws one and "
        "the header prints it).",
    )
    group.addoption(
        "--gradcheck-mode",
        action="store",
        choices=MODES,
        default=None,
        help="mode of the gradient checks where the test's marker does not set one.",
    )
    group.addoption(
        "--gradcheck-dtype",
        action="store",
        choices=FLOAT_DTYPES,
        default=None,
        help="cast the floating inputs of the gradcheck fixture's checks to this dtype (unless the "
        "test's marker sets dtype=), and run gradcheck_dtype tests in it only.",
    )
    group.addoption(
        "--gradcheck-strict",
        action="store_true",
        default=False,
        help="entries that agree only approximately fail the gradient checks (strict=True) where the "
        "test's marker does not set strict=.",
    )
    group.addoption(
        "--gradcheck-report",
        action="store",
        default=None,
        metavar="PATH",
        help="write a JSON record of every gradient check to PATH.",
    )


class _State:
    """Per-run state: the options, the test being run, and a record of every check."""

    def __init__(self, config: pytest.Config, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.mode: str | None = config.getoption("gradcheck_mode")
        self.dtype: str | None = config.getoption("gradcheck_dtype")
        self.strict: bool = bool(config.getoption("gradcheck_strict", False))
        self.report_path: str | None = config.getoption("gradcheck_report")
        self.records: list[dict[str, Any]] = []
        self.item: pytest.Item | None = None
        self.worker = hasattr(config, "workerinput")
        # records made in the running test phase: they travel with that phase's report (also from an
        # xdist worker), and are counted when the test's last report arrives (_finish_test)
        self.pending: list[dict[str, Any]] = []
        self.running: dict[str, dict[str, Any]] = {}
        self.tests: list[dict[str, Any]] = []
        self.generators = _GeneratorCounter()

    def command_line(self) -> str:
        parts = [f"--gradcheck-seed={self.seed}"]
        if self.mode:
            parts.append(f"--gradcheck-mode={self.mode}")
        if self.dtype:
            parts.append(f"--gradcheck-dtype={self.dtype}")
        if self.strict:
            parts.append("--gradcheck-strict")
        return " ".join(parts)

    def record(self, report: GradientReport, kind: str = "gradients") -> None:
        self.add(_record(report, self.item, kind))

    def add(self, record: dict[str, Any]) -> None:
        record["hypothesis"] = _hypothesis_phase()
        self.incoming.append(record)

    @property
    def incoming(self) -> list[dict[str, Any]]:
        """Where a new record goes: the running test's phase, or (outside tests) the run's records."""
        return self.pending if self.item is not None else self.records


_STATE_KEY = pytest.StashKey[_State]()
# Nested runs (pytester) each push their state; a report goes to the innermost run only.
_ACTIVE: list[_State] = []


def _on_report(report: Any) -> None:
    if _ACTIVE:
        _ACTIVE[-1].record(report)


def _state(config: pytest.Config) -> _State:
    return config.stash[_STATE_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(mode=, atol=, rtol=, order=, forward_ad=, seed=, directions=, nondet_tol=, strict=, "
        "dtype=, dtypes=, devices=): options of this test's gradient checks (gradcheck_kit).",
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        _check_report_path(config)  # workers write no report
    if workerinput is not None and _SEED_KEY in workerinput:
        seed = int(workerinput[_SEED_KEY])
    else:
        option = config.getoption("gradcheck_seed")
        seed = random.Random().getrandbits(32) if option == "random" else int(option)
    config.option.gradcheck_seed = seed
    state = _State(config, seed)
    config.stash[_STATE_KEY] = state
    if not _ACTIVE:
        _config.add_report_listener(_on_report)
    _ACTIVE.append(state)
    # tryfirst: before Hypothesis' own pytest_configure loads the profile named on the command line.
    profile = config.getoption("hypothesis_profile", None) or ""
    if "hypothesis" in sys.modules or profile.startswith("gradcheck-"):
        register_hypothesis_profiles()


def _check_report_path(config: pytest.Config) -> None:
    """``--gradcheck-report`` must name a file that can be written, else the run stops now with a usage error
    (not at its end, after every test ran). A file this makes to find out is removed again."""
    option = config.getoption("gradcheck_report", None)
    if not option:
        return
    path = config.invocation_params.dir / option
    problem = None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        problem = exc.strerror or str(exc)
    if problem is None and mode is not None and stat.S_ISDIR(mode):
        problem = "it is a directory"
    elif problem is None and mode is not None and not stat.S_ISREG(mode):
        problem = "it is not a regular file"
    if problem is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
        else:
            if mode is None:
                path.unlink()
    if problem is not None:
        raise pytest.UsageError(f"--gradcheck-report={option}: cannot write the report there ({problem})")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state in _ACTIVE:
        _ACTIVE.remove(state)
        if not _ACTIVE:
            _config.remove_report_listener(_on_report)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"gradcheck_kit: {_state(config).command_line()}"]
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


# --------------------------------------------------------------------------------------------------
# the marker


def _marker_options(item: pytest.Item | None) -> dict[str, Any]:
    """The ``gradcheck`` marker keywords on ``item``, the closest marker winning; validated."""
    if item is None:
        return {}
    options: dict[str, Any] = {}
    for marker in reversed(list(item.iter_markers("gradcheck"))):
        if marker.args:
            raise _MarkerError(f"takes keywords only, got positional {marker.args!r}")
        options.update(marker.kwargs)
    unknown = sorted(set(options) - MARKER_KEYWORDS)
    if unknown:
        raise _MarkerError(f"unknown keyword(s) {', '.join(unknown)}; known: {', '.join(sorted(MARKER_KEYWORDS))}")
    for name in sorted(_config.CONFIGURABLE & set(options)):
        try:
            options[name] = check_option(name, options[name])
        except InvalidArgument as exc:
            raise _MarkerError(str(exc)) from None
    if options.get("dtype") is not None:
        options["dtype"] = _dtype_name(options["dtype"], "dtype")
    for name, default in (("dtypes", None), ("devices", None)):
        if name in options:
            values = options[name]
            if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
                raise _MarkerError(f"{name}={values!r} is not a non-empty list")
    if "dtypes" in options:
        options["dtypes"] = [_dtype_name(d, "dtypes") for d in options["dtypes"]]
    if "devices" in options:
        options["devices"] = [_device_name(d) for d in options["devices"]]
    return options


def _device_name(value: Any) -> str:
    import torch

    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError, ValueError):
        example = "such as 'cpu', 'cuda', 'cuda:1', 'mps'"
        raise _MarkerError(f"devices: {value!r} is not a torch device ({example})") from None


class _MarkerError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(f"@pytest.mark.gradcheck: {message}")


def _dtype_name(value: Any, keyword: str) -> str:
    name = str(value).removeprefix("torch.")
    if name not in FLOAT_DTYPES:
        raise _MarkerError(f"{keyword}: {value!r} is not one of the float dtypes {list(FLOAT_DTYPES)}")
    return name


def _check_options(state: _State, marker: dict[str, Any]) -> dict[str, Any]:
    """``check_gradients`` keyword defaults in force: the marker, then the command line, then the seed."""
    options: dict[str, Any] = {"seed": state.seed}
    if state.mode is not None:
        options["mode"] = state.mode
    if state.strict:
        options["strict"] = True
    options.update({k: v for k, v in marker.items() if k in _config.CONFIGURABLE and v is not None})
    return options


def pytest_runtest_setup(item: pytest.Item) -> None:
    try:
        _marker_options(item)
    except _MarkerError as error:
        message = str(error)
    else:
        return
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Checks made during the test (fixture or direct calls) use the options in force, and are recorded."""
    state = _state(item.config)
    state.item = item
    state.generators = _GeneratorCounter()
    try:
        marker = _marker_options(item)
    except _MarkerError:
        marker = {}  # pytest_runtest_setup reports it
    try:
        with _config.defaults(**_check_options(state, marker)):
            yield
    finally:
        state.item = None
        state.records.extend(state.pending)  # made outside the test's phases (none normally)
        state.pending = []


def pytest_collection_modifyitems(config: pytest.Config) -> None:
    if "hypothesis" in sys.modules:  # a test module imported it: make the profiles available
        register_hypothesis_profiles()


# --------------------------------------------------------------------------------------------------
# fixtures


class GradcheckFixture:
    """The ``gradcheck`` fixture: the kit's checks with the options in force for the running test.

    Options come, most specific first, from the call's keywords, the test's ``gradcheck`` marker,
    the command line (``--gradcheck-seed``, ``--gradcheck-mode``) and the kit's defaults.
    With ``--gradcheck-dtype`` (or the marker's ``dtype=``), floating tensor inputs are cast to that
    dtype first, keeping their strides and storage offset; ``dtype=None`` on the marker keeps inputs
    as given.
    """

    def __init__(self, state: _State) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<gradcheck fixture {self.options!r} dtype={self._dtype_name()}>"

    @property
    def options(self) -> dict[str, Any]:
        """The ``check_gradients`` keywords in force for the running test."""
        return _check_options(self._state, _marker_options(self._state.item))

    @property
    def seed(self) -> int:
        """The seed the running test's checks use (the marker's, else the run's)."""
        return int(self.options["seed"])

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype floating inputs are cast to, or ``None`` to keep them as given."""
        name = self._dtype_name()
        if name is None:
            return None
        import torch

        return getattr(torch, name)

    def _dtype_name(self) -> str | None:
        marker = _marker_options(self._state.item)
        return marker["dtype"] if "dtype" in marker else self._state.dtype

    def generator(self, device: Any = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` to draw inputs reproducibly; each call in a test gives another one.

        The n-th call in a test is seeded from :attr:`seed`, the test's id and n, so two inputs drawn
        from separate calls differ, and every run (also under xdist, in any order) draws the same
        values. Inside a Hypothesis ``@given`` test the count restarts with each example, so a
        replayed example draws what it drew the first time.
        """
        import torch

        item = self._state.item
        return torch.Generator(device=device).manual_seed(
            _generator_seed(self.seed, item.nodeid if item is not None else "", self._state.generators.next())
        )

    def cast(self, *inputs: Any) -> tuple[Any, ...]:
        """``inputs`` with floating tensors cast to :attr:`dtype` (same layout and ``requires_grad``)."""
        dtype = self.dtype
        if dtype is None:
            return inputs
        return tuple(_cast(value, dtype) for value in inputs)

    def check(self, fn: Callable[..., Any], *inputs: Any, **options: Any) -> GradientReport:
        """``gk.check_gradients`` with the options in force; returns the report."""
        from gradcheck_kit.checkers import check_gradients

        return check_gradients(fn, *self.cast(*inputs), **{**self.options, **options})

    def assert_close(self, fn: Callable[..., Any], *inputs: Any, **options: Any) -> GradientReport:
        """``gk.assert_gradients_close`` with the options in force; raises ``gk.GradientMismatch``."""
        __tracebackhide__ = True
        from gradcheck_kit.assertions import assert_gradients_close

        return assert_gradients_close(fn, *self.cast(*inputs), **{**self.options, **options})

    def assert_equals(self, fn: Callable[..., Any], inputs: Any, expected: Any, **options: Any) -> Any:
        """``gk.assert_grad_equals`` with the marker's ``atol``/``rtol``; inputs cast as for :meth:`check`."""
        __tracebackhide__ = True
        import torch

        from gradcheck_kit.assertions import assert_grad_equals

        single = isinstance(inputs, torch.Tensor)
        cast = self.cast(*((inputs,) if single else tuple(inputs)))
        if self.dtype is not None and not callable(expected):
            if isinstance(expected, torch.Tensor):
                expected = _cast(expected, self.dtype)
            else:
                expected = tuple(_cast(value, self.dtype) for value in expected)
        in_force = self.options
        for name in ("atol", "rtol"):
            if name in in_force:
                options.setdefault(name, in_force[name])
        state = self._state
        before = len(state.incoming)
        start = time.perf_counter()
        try:
            result = assert_grad_equals(fn, cast[0] if single else cast, expected, **options)
        except AssertionError:
            if len(state.incoming) == before:
                state.add(_equals_record(state.item, fn, cast, False, time.perf_counter() - start))
            raise
        if len(state.incoming) == before:
            state.add(_equals_record(state.item, fn, cast, True, time.perf_counter() - start))
        return result


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """A real floating tensor cast to ``dtype`` with the same shape, strides and storage offset."""
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype == dtype:
        return value
    with torch.no_grad():
        source = value.detach()
        if source.layout != torch.strided or source.numel() == 0:
            cast = source.to(dtype)
        else:
            # copy the storage span the tensor covers, then view it exactly as the input was viewed
            offset = source.storage_offset()
            span = 1 + sum((size - 1) * stride for size, stride in zip(source.shape, source.stride()))
            flat = source.as_strided((span,), (1,), offset)
            storage = torch.zeros(offset + span, dtype=dtype, device=source.device)
            storage[offset:].copy_(flat)
            cast = storage.as_strided(source.shape, source.stride(), offset)
    return cast.requires_grad_(value.requires_grad)


@pytest.fixture(scope="session")
def gradcheck(pytestconfig: pytest.Config) -> GradcheckFixture:
    """A checker using the options in force for the running test: ``.check``, ``.assert_close``,
    ``.assert_equals``, ``.seed``, ``.dtype``, ``.cast``, ``.generator``."""
    return GradcheckFixture(_state(pytestconfig))


@pytest.fixture(scope="session")
def gradcheck_seed(pytestconfig: pytest.Config) -> int:
    """The run's seed (``--gradcheck-seed``, as the report header prints it)."""
    return _state(pytestconfig).seed


@pytest.fixture(scope="session")
def gradcheck_dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Parametrised over float32 and float64, the marker's ``dtypes=``, or ``--gradcheck-dtype``."""
    import torch

    return getattr(torch, request.param)


@pytest.fixture(scope="session")
def gradcheck_device(request: pytest.FixtureRequest) -> torch.device:
    """Parametrised over ``cpu`` and ``cuda`` (or the marker's ``devices=``); skipped where absent."""
    import torch

    device = torch.device(request.param)
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type != "cpu" and not (backend is not None and backend.is_available()):
        pytest.skip(f"device {request.param!r} is not available")
    return device


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [name for name in ("gradcheck_dtype", "gradcheck_device") if name in metafunc.fixturenames]
    if not wanted:
        return
    marker: dict[str, Any] = {}
    for mark in reversed(list(metafunc.definition.iter_markers("gradcheck"))):
        marker.update(mark.kwargs)
    try:
        dtypes = [_dtype_name(d, "dtypes") for d in marker["dtypes"]] if "dtypes" in marker else None
    except (_MarkerError, TypeError):
        dtypes = None  # reported at setup
    option = metafunc.config.getoption("gradcheck_dtype")
    for name in wanted:
        if name == "gradcheck_dtype":
            values = list(dtypes or ([option] if option else DEFAULT_DTYPES))
        else:
            devices = marker.get("devices")
            values = [str(d) for d in devices] if isinstance(devices, (list, tuple)) and devices else list(DEFAULT_DEVICES)
        # function scope for the parameters (tests keep their order); the fixture stays
        # session-scoped, which is what keeps Hypothesis' function-scoped-fixture check quiet.
        metafunc.parametrize(name, values, indirect=True, ids=values, scope="function")


# --------------------------------------------------------------------------------------------------
# records, summary, JSON report, xdist


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dtype_str(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _record(report: Any, item: pytest.Item | None, kind: str) -> dict[str, Any]:
    inputs = [
        {
            "index": getattr(spec, "index", None),
            "name": getattr(spec, "name", None),
            "shape": list(getattr(spec, "shape", ()) or ()),
            "dtype": _dtype_str(getattr(spec, "dtype", "")),
            "differentiated": getattr(spec, "differentiated", None),
        }
        for spec in getattr(report, "inputs", None) or ()
    ]
    mismatches = getattr(report, "mismatches", None) or ()
    failed = getattr(report, "failed", None)  # the report may list only the first mismatches
    return {
        "test": item.nodeid if item is not None else None,
        "kind": kind,
        "function": str(getattr(report, "function", "?")),
        "inputs": inputs,
        "ok": bool(getattr(report, "ok", False)),
        "mismatches": failed if isinstance(failed, int) else len(mismatches),
        "errors": [str(e) for e in getattr(report, "errors", None) or ()],
        "worst_ratio": _finite(getattr(report, "worst_ratio", None)),
        "summary": getattr(report, "summary", None),
        "evaluations": int(getattr(report, "evaluations", 0) or 0),
        "elapsed": _finite(getattr(report, "elapsed", None)),
        "mode": getattr(report, "mode", None),
        "seed": getattr(report, "seed", None),
    }


def _equals_record(item: pytest.Item | None, fn: Any, inputs: tuple[Any, ...], ok: bool, elapsed: float) -> dict[str, Any]:
    specs = [
        {"index": i, "name": None, "shape": list(x.shape), "dtype": _dtype_str(x.dtype), "differentiated": True}
        for i, x in enumerate(inputs)
        if hasattr(x, "shape") and hasattr(x, "dtype")
    ]
    return {
        "test": item.nodeid if item is not None else None,
        "kind": "grad_equals",
        "function": getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn),
        "inputs": specs,
        "ok": ok,
        "mismatches": 0 if ok else 1,
        "errors": [],
        "worst_ratio": None,
        "evaluations": 1,
        "elapsed": elapsed,
        "mode": None,
        "seed": None,
    }


def _describe(record: dict[str, Any]) -> str:
    args = ", ".join(
        f"{spec['name'] or 'input ' + str(spec['index'])}: "
        + (spec["dtype"] if spec.get("differentiated") is False and not spec["shape"] else f"{tuple(spec['shape'])} {spec['dtype']}")
        for spec in record["inputs"]
    )
    return f"{record['test']}: {record['function']}({args})"


def _worst_per_call_site(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """One line per test and function (a ``@given`` test makes many checks): its worst check, and how many."""
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["test"], record["function"]), []).append(record)
    worst = [
        (max(group, key=lambda r: -1.0 if r["worst_ratio"] is None else r["worst_ratio"]), len(group))
        for group in groups.values()
    ]
    return sorted(worst, key=lambda pair: -1.0 if pair[0]["worst_ratio"] is None else -pair[0]["worst_ratio"])


def _line(record: dict[str, Any], count: int) -> str:
    ratio = record["worst_ratio"]
    text = f"  {_describe(record)}: "
    if not record["ok"] and record.get("summary"):  # "fn raised ...", "... non-finite ...", a failed check's reason
        return text + record["summary"] + (f" (worst of {count} checks)" if count > 1 else "")
    if not record["ok"]:
        text += f"{record['mismatches']} mismatch(es), " if record["mismatches"] else "; ".join(record["errors"]) + ", "
    text += "error vs allowed n/a" if ratio is None else f"worst error {ratio:.3g} x allowed"
    if count > 1:
        text += f" (worst of {count} checks)"
    return text


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker uses the controller's seed (also a drawn one)."""
    node.workerinput[_SEED_KEY] = _state(node.config).seed


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect the records a worker made outside any test (sent at its shutdown)."""
    payload = getattr(node, "workeroutput", {}).get(_RECORDS_KEY)
    if payload:
        _state(node.config).records.extend(json.loads(payload))


# Each check is counted by the outcome of its test. Records made during a test phase are attached to
# that phase's report (xdist serializes the attribute with the report, so a worker that crashes later
# loses nothing already reported); the controller (or the single process) gathers them in
# pytest_runtest_logreport and classifies them when the test's teardown report arrives.
_REPORT_ATTRIBUTE = "gradcheck_kit_records"
#: what a record's ``status`` can be
STATUSES = ("passed", "failed", "expected", "explored")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    state = _state(item.config)
    if state.pending:
        setattr(outcome.get_result(), _REPORT_ATTRIBUTE, state.pending)
        state.pending = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = _ACTIVE[-1] if _ACTIVE else None
    if state is None or state.worker:
        return  # a worker's reports (and their records) go to the controller
    test = state.running.setdefault(report.nodeid, {"phases": [], "records": []})
    test["records"].extend(getattr(report, _REPORT_ATTRIBUTE, None) or ())
    test["phases"].append((report.when, report.outcome, hasattr(report, "wasxfail")))
    if report.when == "teardown":
        _finish_test(state, report.nodeid)


def _finish_test(state: _State, nodeid: str) -> None:
    test = state.running.pop(nodeid)
    outcome = _test_outcome(test["phases"])
    for record in test["records"]:
        record["test_outcome"] = outcome
        record["status"] = _status(record, outcome)
    state.records.extend(test["records"])
    state.tests.append({"test": nodeid, "outcome": outcome, "checks": len(test["records"])})


def _test_outcome(phases: list[tuple[str, str, bool]]) -> str:
    """pytest's outcome of a test from its reports' (when, outcome, wasxfail): passed, failed, error,
    skipped, xfailed or xpassed (a crashed xdist worker's test is failed)."""
    by_phase = {when: (outcome, xfail) for when, outcome, xfail in phases}
    call, call_xfail = by_phase.get("call", (None, False))
    if call == "failed" or by_phase.get("???", ("",))[0] == "failed":
        return "failed"
    if any(outcome == "failed" for outcome, _ in by_phase.values()):
        return "error"
    if any(xfail and outcome == "skipped" for outcome, xfail in by_phase.values()):
        return "xfailed"
    if call_xfail and call == "passed":
        return "xpassed"
    if any(outcome == "skipped" for outcome, _ in by_phase.values()):
        return "skipped"
    return "passed"


def _status(record: dict[str, Any], test_outcome: str | None) -> str:
    """How the summary counts a check: ``passed``; ``failed`` (a failing check in a failing test);
    ``expected`` (a failing check in a test that did not fail: caught by ``pytest.raises``, xfail,
    tested for); ``explored`` (a failing check in a failing test, made while Hypothesis searched or
    shrank: not the final example)."""
    if record["ok"]:
        return "passed"
    if test_outcome in ("passed", "xfailed", "xpassed", "skipped"):
        return "expected"
    if record.get("hypothesis") == "search":
        return "explored"
    return "failed"


def _hypothesis_phase() -> str | None:
    """``"final"`` in the example Hypothesis replays to report a failure, ``"search"`` in any other
    example, ``None`` outside a Hypothesis test."""
    control = sys.modules.get("hypothesis.control")
    if control is None or not control.currently_in_test_context():
        return None
    return "final" if getattr(control.current_build_context(), "is_final", False) else "search"


class _GeneratorCounter:
    """Counts the fixture's ``generator()`` calls in a test; restarts with each Hypothesis example."""

    def __init__(self) -> None:
        self.count = 0
        self.context: Any = None

    def next(self) -> int:
        control = sys.modules.get("hypothesis.control")
        context = control.current_build_context() if control is not None and control.currently_in_test_context() else None
        if context is not self.context:
            self.context, self.count = context, 0
        self.count += 1
        return self.count - 1


def _generator_seed(seed: int, nodeid: str, count: int) -> int:
    """A 63-bit seed from the run's seed, the test's id and the call's number: the same in every run."""
    digest = hashlib.sha256(f"{seed}\0{nodeid}\0{count}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.worker:
        session.config.workeroutput[_RECORDS_KEY] = json.dumps(state.records)  # type: ignore[attr-defined]
        return
    for nodeid in list(state.running):  # no teardown report (a worker crashed): count what arrived
        _finish_test(state, nodeid)
    for record in state.records:  # made outside any test
        record.setdefault("test_outcome", None)
        record.setdefault("status", _status(record, None))
    if state.report_path:
        _write_json(state)


def _summary(records: list[dict[str, Any]], tests: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [r.get("status") or _status(r, None) for r in records]
    return {
        "checks": len(records),
        **{status: statuses.count(status) for status in STATUSES},
        "tests": len({r["test"] for r in records}),
        "test_outcomes": {o: n for o in sorted({t["outcome"] for t in tests}) if (n := sum(t["outcome"] == o for t in tests))},
        "evaluations": sum(r["evaluations"] for r in records),
        "elapsed": sum(r["elapsed"] or 0.0 for r in records),
    }


#: version of the JSON report's layout (docs/json-report.md)
JSON_SCHEMA_VERSION = 2


def _write_json(state: _State) -> None:
    from gradcheck_kit import __version__

    document = {
        "schema_version": JSON_SCHEMA_VERSION,
        "gradcheck_kit": __version__,
        "seed": state.seed,
        "command_line": state.command_line(),
        "options": {"seed": state.seed, "mode": state.mode, "dtype": state.dtype},
        "summary": _summary(state.records, state.tests),
        "tests": state.tests,
        "checks": state.records,
    }
    path = state.config.invocation_params.dir / state.report_path  # type: ignore[operator]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _state(config)
    records = state.records
    if not records and not state.report_path:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gradcheck_kit")
    totals = _summary(records, state.tests)
    apart = "".join(
        f", {totals[status]} {status} ({meaning})"
        for status, meaning in (
            ("expected", "in tests that did not fail"),
            ("explored", "by Hypothesis' search"),
        )
        if totals[status]
    )
    write(
        f"{totals['checks']} gradient check{'s' * (totals['checks'] != 1)} in {totals['tests']} "
        f"test{'s' * (totals['tests'] != 1)}: {totals['passed']} passed, {totals['failed']} failed{apart}, "
        f"{totals['evaluations']} evaluations, {totals['elapsed']:.2f}s (reproduce: {state.command_line()})"
    )
    for title, subset, limit in (
        ("failed:", [r for r in records if r.get("status") == "failed"], _SHOW_FAILED),
        ("closest to tolerance:", [r for r in records if r["ok"] and r["worst_ratio"] is not None], _SHOW_CLOSEST),
    ):
        lines = _worst_per_call_site(subset)
        if lines:
            write(title)
            for record, count in lines[:limit]:
                write(_line(record, count))
            if len(lines) > limit:
                write(f"  ... and {len(lines) - limit} more")
    if state.report_path:
        write(f"JSON report: {state.report_path}")
