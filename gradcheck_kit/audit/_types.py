"""The audit's vocabulary: its families and verdicts, a catalogue entry (:class:`AuditOp`), and the known
issues that explain expected failures."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

__all__ = [
    "FAMILIES", "USER_FAMILY", "QUICK", "VERDICTS", "COLOURS", "EXAMPLES_FULL", "EXAMPLES_QUICK",
    "ExpressionSpec", "KnownIssue", "AuditOp",
]

FAMILIES = ("elementwise", "reduction", "linalg", "normalisation", "convolution", "loss")
#: the family of the user's own MODULE:FUNCTION entries
USER_FAMILY = "user"

#: ops run by ``--quick``: one or two per family, kinks and linear algebra included
QUICK = (
    "tanh",
    "log",
    "relu",
    "softmax",
    "amax",
    "matmul",
    "linalg.solve",
    "layer_norm",
    "conv1d",
    "cross_entropy",
    "mse_loss",
)

VERDICTS = ("pass", "FAIL", "error", "known")
COLOURS = {"pass": "green", "FAIL": "red", "error": "yellow", "known": "yellow"}

#: random expressions per elementwise op and dtype
EXAMPLES_FULL = 20
EXAMPLES_QUICK = 4


@dataclasses.dataclass(frozen=True)
class ExpressionSpec:
    """How random expressions use an elementwise op: its smooth domain and sympy counterpart."""

    domain: tuple[float | None, float | None] | None = None
    sympy: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class KnownIssue:
    """A failure investigated and explained: which dtypes, which checks may fail, and why.

    ``source`` is ``"torch"`` (a limitation of torch's implementation) or ``"gradcheck_kit"`` (a
    limitation of our checker, reported upstream). Only failures of the listed ``checks`` are
    covered; any other failure of the op is still a FAIL."""

    dtypes: tuple[str, ...]
    checks: tuple[str, ...]
    reason: str
    source: str = "torch"

    def describe(self) -> str:
        who = "known torch issue" if self.source == "torch" else "known gradcheck_kit limitation"
        return f"{who}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class AuditOp:
    """One catalogue entry.

    ``make_inputs(dtype, generator)`` returns the positional inputs (differentiated tensors have
    ``requires_grad=True``); ``call`` says how the op is applied (``conv1d(x, w, b, padding=1)``);
    ``expression`` is set for elementwise unary ops that random expressions use: the open interval
    where the op is defined and smooth (``None`` for an open end; Hypothesis keeps arguments inside)
    and, where numpy can evaluate it, a sympy counterpart that gives an analytic gradient
    independent of torch.
    """

    name: str
    family: str
    fn: Callable[..., Any]
    make_inputs: Callable[[torch.dtype, torch.Generator], tuple]
    call: str
    note: str = ""
    order: int = 2
    expression: ExpressionSpec | None = None
    known: tuple[KnownIssue, ...] = ()
    #: the dtypes this op runs in (``None``: every dtype the audit runs)
    dtypes: tuple[str, ...] | None = None

    def known_issues(self, dtype: str) -> tuple[KnownIssue, ...]:
        """The known issues that explain failures of this op in ``dtype``."""
        return tuple(k for k in self.known if dtype in k.dtypes)

    @property
    def quick(self) -> bool:
        return self.name in QUICK
