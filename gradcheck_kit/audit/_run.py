"""Running the audit: each op in each dtype through ``check_gradients`` and, for elementwise ops, inside
random expressions; one :class:`AuditRow` per op and dtype, never an exception for an op that fails."""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from typing import Any, Sequence

import torch

from gradcheck_kit.audit._types import EXAMPLES_FULL, EXAMPLES_QUICK, VERDICTS, AuditOp, KnownIssue

__all__ = ["AuditRow", "AuditResult", "run_audit"]


@dataclasses.dataclass
class AuditRow:
    """The verdict for one op in one dtype."""

    op: str
    family: str
    dtype: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    worst_ratio: float | None = None
    elapsed: float = 0.0
    details: list[str] = dataclasses.field(default_factory=list)
    report: dict[str, Any] | None = None
    expressions: int = 0
    known: tuple[KnownIssue, ...] = ()
    failed_checks: list[str] = dataclasses.field(default_factory=list)
    #: the function itself failed (raised, returned no tensors): its report's ``fn_failed``
    fn_failed: bool = False

    @property
    def known_issue(self) -> str:
        """Why this row's failures are expected ('' when they are not, or when nothing failed)."""
        if not self.failed or not self.known:
            return ""
        if not set(self.failed_checks) <= {c for k in self.known for c in k.checks}:
            return ""
        return "; ".join(k.describe() for k in self.known if set(k.checks) & set(self.failed_checks))

    @property
    def verdict(self) -> str:
        if self.failed:
            return "known" if self.known_issue else "FAIL"
        if self.errors:
            return "error"
        return "pass"

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "known")

    def checks_cell(self) -> str:
        ran = self.passed + self.failed + self.errors
        cell = f"{self.passed}/{ran}"
        if self.skipped:
            cell += f" +{self.skipped} skipped"
        return cell

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "family": self.family,
            "dtype": self.dtype,
            "verdict": self.verdict,
            "checks": {"passed": self.passed, "failed": self.failed, "skipped": self.skipped, "errors": self.errors},
            "expressions": self.expressions,
            "worst_ratio": _finite_or_str(self.worst_ratio),
            "elapsed": round(self.elapsed, 4),
            "details": self.details,
            "known_issue": self.known_issue,
            "failed_checks": self.failed_checks,
            "fn_failed": self.fn_failed,
            "report": self.report,
        }


def _finite_or_str(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


@dataclasses.dataclass
class AuditResult:
    rows: list[AuditRow]
    elapsed: float
    seed: int
    quick: bool
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    expressions_available: bool = False

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        from gradcheck_kit import __version__

        counts = {v: sum(1 for r in self.rows if r.verdict == v) for v in VERDICTS}
        return {
            "ok": self.ok,
            "torch": torch.__version__,
            "gradcheck_kit": __version__,
            "seed": self.seed,
            "quick": self.quick,
            "elapsed": round(self.elapsed, 3),
            "expressions": self.expressions_available,
            "summary": {"rows": len(self.rows), "passed": counts["pass"], "failed": counts["FAIL"],
                        "errors": counts["error"], "known": counts["known"]},
            "results": [row.to_dict() for row in self.rows],
            "notes": self.notes,
        }


def run_audit(
    ops: Sequence[AuditOp],
    *,
    dtypes: Sequence[str] = ("float32", "float64"),
    quick: bool = False,
    examples: int | None = None,
    seed: int = 0,
    order: int | None = None,
    strict: bool = False,
    progress: Any = None,
) -> AuditResult:
    """Check every op in every dtype; never raises for an op that fails or errors.

    A failure explained by a :class:`KnownIssue` of the op (``AuditOp.known``: those dtypes, only
    those checks failing) gets the verdict ``known`` and does not fail the audit, unless ``strict``."""
    import gradcheck_kit as gk

    expressions = _expressions_module()
    n_examples = examples if examples is not None else (EXAMPLES_QUICK if quick else EXAMPLES_FULL)
    start = time.perf_counter()
    rows: list[AuditRow] = []
    total = sum(len(op.dtypes or dtypes) for op in ops)
    index = 0
    for op in ops:
        for dtype_name in op.dtypes or dtypes:
            index += 1
            if progress is not None:
                progress.start(index, total, op, dtype_name)
            highest = min(op.order, order if order is not None else (1 if quick else 2))
            row = _audit_one(gk, op, dtype_name, seed=seed, order=highest, strict=strict)
            if expressions is not None and op.expression is not None and n_examples > 0:
                _expression_checks(row, op, dtype_name, n_examples, seed, expressions)
            rows.append(row)
            if progress is not None:
                progress.done(row)
    if progress is not None:
        progress.finish()
    notes = {op.name: op.note for op in ops if op.note}
    return AuditResult(rows, time.perf_counter() - start, seed, quick, notes, expressions is not None)


def _op_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _audit_one(gk: Any, op: AuditOp, dtype_name: str, *, seed: int, order: int, strict: bool = False) -> AuditRow:
    row = AuditRow(op.name, op.family, dtype_name, known=() if strict else op.known_issues(dtype_name))
    t0 = time.perf_counter()
    try:
        gen = torch.Generator().manual_seed(_op_seed(seed, op.name))
        inputs = op.make_inputs(getattr(torch, dtype_name), gen)
        report = gk.check_gradients(op.fn, *inputs, order=order, forward_ad="auto", seed=seed)
    except Exception as exc:  # the checker itself failed: say so, keep auditing
        row.errors += 1
        row.details.append(f"check_gradients raised {type(exc).__name__}: {_first_line(exc)}")
        row.elapsed = time.perf_counter() - t0
        return row
    _absorb_report(row, report)
    row.elapsed = time.perf_counter() - t0
    return row


def _absorb_report(row: AuditRow, report: Any) -> None:
    for check in getattr(report, "checks", []):
        status = getattr(check, "status", "passed")
        if status == "passed":
            row.passed += 1
        elif status == "failed":
            row.failed += 1
            row.failed_checks.append(getattr(check, "name", "?"))
        elif status == "skipped":
            row.skipped += 1
        else:
            row.errors += 1
    if not report.ok and not row.failed and not row.errors:
        # a report that failed without a failed check (mismatches or errors only)
        if getattr(report, "mismatches", None):
            row.failed += 1
            row.failed_checks.append("report")
        else:
            row.errors += 1
    row.fn_failed = row.fn_failed or bool(getattr(report, "fn_failed", False))
    worst = getattr(report, "worst_ratio", None)
    if worst is not None:
        row.worst_ratio = worst if row.worst_ratio is None else max(row.worst_ratio, worst)
    if not report.ok:
        row.details.append(str(report))
    try:
        row.report = report.to_dict()
    except Exception:  # pragma: no cover - a report that cannot be serialised is still shown
        row.report = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _expressions_module() -> Any:
    """The expressions strategy, or None where it is not part of this build."""
    try:
        import importlib

        importlib.import_module("gradcheck_kit.strategies.symbolic")
        from gradcheck_kit import strategies as gst

        gst.expressions  # noqa: B018
        gst.Op  # noqa: B018
    except (ImportError, AttributeError):
        return None
    return gst


def _expression_checks(row: AuditRow, op: AuditOp, dtype_name: str, n: int, seed: int, gst: Any) -> None:
    """Up to ``n`` random expressions containing ``op`` (Hypothesis, shrinking a failure): autograd
    against finite differences (``check_gradients``) and, where every op has a sympy counterpart,
    against the expression's analytic gradient. Adds one check, passed or failed, to ``row``."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    import gradcheck_kit as gk

    t0 = time.perf_counter()
    spec = op.expression
    dtype = getattr(torch, dtype_name)
    try:
        user_op = gst.Op(f"torch_{op.name}", op.fn, sympy=spec.sympy, domain=spec.domain)
        strategy = gst.expressions(extra_ops=[user_op], max_depth=2)
    except Exception as exc:
        row.errors += 1
        row.details.append(f"random expressions: could not register {op.name}: {type(exc).__name__}: {exc}")
        return
    state: dict[str, Any] = {"count": 0, "failure": None, "worst": None}

    def probe(data: Any) -> None:
        expr = data.draw(strategy, label="expression")
        xs = data.draw(expr.inputs(dtype=dtype, max_side=3), label="inputs")
        state["count"] += 1
        report = gk.check_gradients(expr, *xs, seed=seed, forward_ad=False)
        worst = getattr(report, "worst_ratio", None)
        if worst is not None and math.isfinite(worst):
            state["worst"] = worst if state["worst"] is None else max(state["worst"], worst)
        problems = [] if report.ok else [str(report)]
        if expr.has_analytic_gradient:
            grad_outputs = data.draw(expr.grad_outputs(*xs), label="grad_outputs")
            try:
                gk.assert_grad_equals(
                    expr, tuple(xs), expr.gradient(*xs, grad_outputs=grad_outputs), grad_outputs=grad_outputs
                )
            except AssertionError as exc:
                problems.append(f"autograd against the sympy gradient: {exc}")
        if problems:
            shapes = ", ".join(f"{tuple(x.shape)}" for x in xs)
            state["failure"] = f"random expression {expr} on inputs of shape {shapes}:\n" + "\n".join(problems)
            raise _ExpressionFailed

    test = given(st.data())(probe)
    test = settings(
        max_examples=n,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )(test)
    test = hypothesis_seed(_op_seed(seed, f"{op.name}/{dtype_name}"))(test)
    try:
        test()
    except _ExpressionFailed:
        row.failed += 1
        row.failed_checks.append("expressions")
        row.details.append(state["failure"])
    except Exception as exc:  # the strategy or the checker broke: report it, keep auditing
        row.errors += 1
        row.details.append(f"random expressions with {op.name} raised {type(exc).__name__}: {_first_line(exc)}")
    else:
        row.passed += 1
    row.expressions += state["count"]
    if state["worst"] is not None:
        row.worst_ratio = state["worst"] if row.worst_ratio is None else max(row.worst_ratio, state["worst"])
    row.elapsed += time.perf_counter() - t0


class _ExpressionFailed(Exception):
    """Raised inside the Hypothesis probe so that Hypothesis shrinks the failing expression."""
