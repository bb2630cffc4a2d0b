"""The audit: a catalogue of torch operations and the runner behind ``gradcheck-kit audit``.

Each :class:`AuditOp` names an operation as torch spells it (``tanh``, ``softmax``, ``layer_norm``,
``linalg.solve``), the function checked (the op, wrapped where the numerical side needs it, as
torch's own OpInfo ``gradcheck_wrapper_*`` do: ``linalg.eigvalsh(A + A.mT)``), and an input builder
that draws inputs valid for the op from a private generator: positive values for ``log``,
well-conditioned matrices for ``linalg.solve``, symmetric positive definite ones for ``cholesky``.
Kinks are avoided unless an entry includes them on purpose (``abs`` and ``relu`` at 0, ties in
``amax`` and ``maximum``, ``clamp`` at its bounds), where the checker must accept torch's convention.

Functions of the user's (``--ops mylib.ops:my_sparsemax=4,8:float32``) join the catalogue as
:func:`function_op` entries of the family ``user``.

Every op is checked in float32 and float64 with :func:`gradcheck_kit.check_gradients` (first and,
outside ``--quick``, second order; forward mode where the op supports it) and, for elementwise ops,
inside random expressions drawn from :func:`gradcheck_kit.strategies.expressions` when available.

Layout: ``_types`` (families, verdicts, :class:`AuditOp`, :class:`KnownIssue`), ``_builders`` (input
builders), ``_catalogue`` (the catalogue as a table of entries), ``_select`` (``--ops`` names and the
user's functions), ``_run`` (checking each op, :class:`AuditRow`, :class:`AuditResult`) and ``_format``
(progress and the closing table). Nothing here imports the command line; the text helpers both use live
in :mod:`gradcheck_kit._text`.
"""

from __future__ import annotations

from gradcheck_kit.audit._catalogue import CATALOGUE, catalogue
from gradcheck_kit.audit._format import Progress, format_results
from gradcheck_kit.audit._run import AuditResult, AuditRow, run_audit
from gradcheck_kit.audit._select import function_op, is_function_entry, select, split_ops
from gradcheck_kit.audit._types import (
    COLOURS,
    EXAMPLES_FULL,
    EXAMPLES_QUICK,
    FAMILIES,
    QUICK,
    USER_FAMILY,
    VERDICTS,
    AuditOp,
    ExpressionSpec,
    KnownIssue,
)

__all__ = [
    "AuditOp", "KnownIssue", "ExpressionSpec", "AuditRow", "AuditResult", "CATALOGUE", "catalogue", "select",
    "run_audit", "format_results", "Progress", "split_ops", "is_function_entry", "function_op", "FAMILIES",
    "USER_FAMILY", "QUICK", "VERDICTS", "COLOURS", "EXAMPLES_FULL", "EXAMPLES_QUICK",
]
