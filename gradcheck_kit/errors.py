"""The kit's exceptions.

``InvalidArgument`` is raised up front for bad arguments and names ``arg=value``;
``GradientMismatch`` is the only exception that says a gradient is wrong, and it is
raised only by the ``assert_*`` functions; they raise ``FunctionError`` instead where the
checked function itself failed.
"""

from __future__ import annotations

__all__ = ["GradcheckKitError", "InvalidArgument", "GradientMismatch", "FunctionError", "NoAnalyticGradient"]


class GradcheckKitError(Exception):
    """Base class of every exception the kit raises on purpose."""


class InvalidArgument(GradcheckKitError, ValueError):
    """An argument to a public function is invalid; the message names ``arg=value``."""


class FunctionError(GradcheckKitError, RuntimeError):
    """The checked function itself failed (raised, or returned something that is not a tensor), so its
    gradients could not be checked. ``__cause__`` is the exception fn raised, where it raised;
    ``.report`` the :class:`GradientReport` (``report.function_failed`` is True), where a check ran."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class GradientMismatch(GradcheckKitError, AssertionError):
    """Gradients are wrong. ``.report`` holds the full :class:`GradientReport`."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class NoAnalyticGradient(GradcheckKitError, TypeError):
    """``Expression.gradient`` was asked for an expression using an op registered without ``sympy=``
    (there is no formula to differentiate; check such expressions numerically with ``check_gradients``)."""
