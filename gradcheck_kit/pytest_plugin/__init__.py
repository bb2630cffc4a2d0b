"""pytest plugin for gradcheck_kit: fixtures, the ``gradcheck`` marker, options and a summary.

Installed with the package through the ``pytest11`` entry point ``gradcheck_kit``; disable it with
``-p no:gradcheck_kit``. Start-up stays light: torch, Hypothesis and the checkers are imported only
when a test uses the fixtures (or asks for a ``gradcheck-*`` Hypothesis profile).

Reproduce a run: the report header prints ``gradcheck_kit: --gradcheck-seed=N`` (plus any other
``--gradcheck-*`` option in force); pass the same options back to pytest.

- Fixtures: ``gradcheck`` (a checker that applies the options and marker in force),
  ``gradcheck_seed`` (the run's seed), ``gradcheck_dtype`` and ``gradcheck_device`` (parametrised).
  None is function-scoped, so they are safe in ``@given`` tests.
- Marker: ``@pytest.mark.gradcheck(mode=, order=, forward_ad=, atol=, rtol=, seed=, directions=,
  nondet_tol=, strict=, batched=, dtype=, dtypes=, devices=)``; an unknown keyword or a bad value is a
  setup error naming it (values are validated as ``check_gradients`` validates them).
- Options: ``--gradcheck-seed``, ``--gradcheck-mode``, ``--gradcheck-dtype``, ``--gradcheck-strict``,
  ``--gradcheck-report``; the first four also as the ini keys ``gradcheck_seed``, ``gradcheck_mode``,
  ``gradcheck_dtype``, ``gradcheck_strict`` (the command line wins). A bad value, or a report path that
  cannot be written, is a usage error.
- Every ``GradientReport`` made during a test (through the fixture or a direct
  ``gk.assert_gradients_close``) is recorded for the terminal summary and the JSON report, also
  across ``pytest-xdist`` workers (each check travels with its test's report), and counted by the
  outcome of its test: a failing check in a test that did not fail is "expected", one of Hypothesis'
  search in a failing test "explored" (the JSON layout: docs/json-report.md).
- Under ``pytest-xdist`` each worker sets ``OMP_NUM_THREADS`` to cores // workers unless the user set
  the threads (``gradcheck_kit._xdist_threads``); the header says so.

The hooks below are listed in the order pytest calls them; each module holds one stage of a run.
"""

from __future__ import annotations

import sys

import pytest

# The kit's assert helpers give richer messages when pytest rewrites them; that must happen before
# their first import (an already imported module would only earn a warning).
if "gradcheck_kit.assertions" not in sys.modules:
    pytest.register_assert_rewrite("gradcheck_kit.assertions")

from gradcheck_kit import _hypothesis_hook  # noqa: E402
from gradcheck_kit.options import FORWARD_AD, MODES, ORDERS  # noqa: E402, F401 - re-exported

# start of a run: options, configuration, the header
from gradcheck_kit.pytest_plugin._configure import (  # noqa: E402, F401
    pytest_addoption,
    pytest_configure,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_unconfigure,
)

# collection and set-up: the marker, parametrisation
from gradcheck_kit.pytest_plugin._marker import (  # noqa: E402, F401
    MARKER_KEYWORDS,
    pytest_collection_modifyitems,
    pytest_generate_tests,
    pytest_runtest_setup,
)

# the fixtures a test asks for
from gradcheck_kit.pytest_plugin._fixtures import (  # noqa: E402, F401
    GradcheckFixture,
    gradcheck,
    gradcheck_device,
    gradcheck_dtype,
    gradcheck_seed,
)

# running a test and its reports
from gradcheck_kit.pytest_plugin._running import (  # noqa: E402, F401
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
)

# end of the run: JSON report and terminal summary
from gradcheck_kit.pytest_plugin._summary import pytest_sessionfinish, pytest_terminal_summary  # noqa: E402, F401

from gradcheck_kit.pytest_plugin._records import STATUSES, CheckRecord, InputRecord, TestRecord  # noqa: E402, F401
from gradcheck_kit.pytest_plugin._state import route_report  # noqa: E402, F401

__all__ = [
    "GradcheckFixture",
    "HYPOTHESIS_PROFILES",
    "MARKER_KEYWORDS",
    "CheckRecord",
    "InputRecord",
    "TestRecord",
    "register_hypothesis_profiles",
    "route_report",
]

#: Hypothesis profiles offered (registered, never loaded: pick one with ``--hypothesis-profile``)
HYPOTHESIS_PROFILES = _hypothesis_hook.HYPOTHESIS_PROFILES


def register_hypothesis_profiles() -> None:
    """Register the ``gradcheck-*`` Hypothesis profiles (imports Hypothesis; loads none of them).

    Importing ``gradcheck_kit.strategies`` does this; so does the plugin when Hypothesis is imported
    by the time pytest is configured or collection ends, or when ``--hypothesis-profile
    gradcheck-...`` is given. What each profile sets: ``gradcheck_kit._hypothesis_hook``.
    """
    _hypothesis_hook.register_hypothesis_profiles()
