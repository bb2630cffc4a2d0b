"""gradcheck_kit: prove PyTorch gradients right or wrong.

Public names are loaded lazily so that ``import gradcheck_kit`` stays cheap: torch is
imported when a checker is first used, Hypothesis only by ``gradcheck_kit.strategies``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gradcheck_kit.errors import (
    FunctionError,
    GradcheckKitError,
    GradientMismatch,
    InvalidArgument,
    NoAnalyticGradient,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "check_gradients": "gradcheck_kit.checkers",
    "GradientReport": "gradcheck_kit.report",
    "Mismatch": "gradcheck_kit.report",
    "CheckResult": "gradcheck_kit.report",
    "assert_gradients_close": "gradcheck_kit.assertions",
    "assert_grad_equals": "gradcheck_kit.assertions",
    "check_module_gradients": "gradcheck_kit.modules",
    "assert_module_gradients": "gradcheck_kit.modules",
    "assert_gradient_flow": "gradcheck_kit.modules",
    "check_gradient_flow": "gradcheck_kit.modules",
    "GradientFlowReport": "gradcheck_kit.modules",
    "fuzz_gradients": "gradcheck_kit.fuzz",
    "FuzzReport": "gradcheck_kit.fuzz",
    "GradientRange": "gradcheck_kit._ranges",
}

__all__ = sorted(
    [
        *_LAZY,
        "GradcheckKitError",
        "InvalidArgument",
        "GradientMismatch",
        "FunctionError",
        "NoAnalyticGradient",
        "__version__",
    ]
)


def __getattr__(name: str) -> Any:
    if name == "strategies":
        return importlib.import_module("gradcheck_kit.strategies")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from gradcheck_kit.fuzz import FuzzReport, fuzz_gradients
    from gradcheck_kit.modules import (
        GradientFlowReport,
        assert_gradient_flow,
        assert_module_gradients,
        check_gradient_flow,
        check_module_gradients,
    )
    from gradcheck_kit.report import CheckResult, GradientReport, Mismatch
    from gradcheck_kit.assertions import assert_grad_equals, assert_gradients_close
    from gradcheck_kit.checkers import check_gradients
