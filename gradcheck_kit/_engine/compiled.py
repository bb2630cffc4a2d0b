"""``torch.compile``'d functions: compiled autograd against eager autograd.

The numerical check runs on the eager function that a compiled one wraps (finite differences through
compiled code would recompile for every new shape and batch). What compile can get wrong on its own is
checked here, directly: the compiled forward and its backward along a few random ``grad_outputs``
against the eager ones on the same inputs, one compile, with an allowance for the rounding that a
compiler's reordering and fusion bring. Nothing here raises for a wrong gradient; the result is data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._engine.evaluate import as_outputs, fresh_args, seed_global_rng
from gradcheck_kit.report import CheckResult, GroupSummary, Mismatch
from gradcheck_kit._engine.tolerances import within_roundings

__all__ = ["CompiledComparison", "compare_with_eager", "eager_of"]

#: random grad_outputs the compiled backward is compared along
COMPILED_VECTORS = 2
#: allowed difference, in roundings of the dtype, of |eager| + the largest |eager| of that tensor
ROUNDINGS = 64
#: rows kept per compared tensor
KEPT_ROWS = 8
CHECK = "compiled"


def eager_of(fn: Any) -> Callable | None:
    """The eager function a ``torch.compile`` result wraps, or None when ``fn`` is not one."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded wherever torch.compile was called
    if eval_frame is not None and isinstance(fn, eval_frame.OptimizedModule):
        return fn._orig_mod
    return getattr(fn, "_torchdynamo_orig_callable", None)


@dataclass
class CompiledComparison:
    """The compiled-against-eager verdict: one check, its mismatch rows and counts, and notes."""

    check: CheckResult
    mismatches: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _run(fn: Callable, inputs: Sequence[Any], wrt: Sequence[int], seed: int) -> tuple[list, dict]:
    args, leaves = fresh_args(inputs, wrt)
    seed_global_rng(seed)
    with torch.enable_grad():
        outs = as_outputs(fn(*args))
    return outs, leaves


def _is_compile_failure(exc: BaseException) -> bool:
    """Whether an exception comes from the compiler stack rather than from fn's own code."""
    seen = exc
    while seen is not None:
        module = type(seen).__module__
        if module.startswith(("torch._dynamo", "torch._inductor")):
            return True
        seen = seen.__cause__
    return False


def _draws_random_numbers(eager: Callable, inputs: Sequence[Any], outs: Sequence[torch.Tensor], seed: int) -> bool:
    """Whether eager fn's outputs change with the global RNG's seed (dropout and the like)."""
    with torch.no_grad():
        args, _ = fresh_args(inputs, ())
        seed_global_rng(seed + 1)
        again = as_outputs(eager(*args))
    return any(not torch.equal(a.detach(), b) for a, b in zip(outs, again) if a.shape == b.shape)


def _differentiable(outs: Sequence[torch.Tensor]) -> list[int]:
    return [k for k, o in enumerate(outs) if (o.is_floating_point() or o.is_complex()) and o.requires_grad]


def _compare(
    what: str, compiled: torch.Tensor, eager: torch.Tensor, input_index: int, output_index: int, name: str
) -> tuple[GroupSummary, list[Mismatch]]:
    """Element-wise comparison of one compiled tensor with its eager counterpart."""
    agreement = within_roundings(compiled, eager, torch.finfo(eager.dtype).eps, ROUNDINGS)
    c, e, diff, allowed, bad = agreement.got, agreement.want, agreement.diff, agreement.allowed, agreement.bad
    both_nan = torch.isnan(c) & torch.isnan(e)
    group = GroupSummary(CHECK, input_index, output_index, "jacobian", compared=e.numel(), failed=int(bad.sum()))
    finite = torch.where(torch.isfinite(diff) & (allowed > 0), diff / allowed.clamp_min(1e-300), torch.full_like(diff, float("inf")))
    group.worst_ratio = float(finite[~both_nan].max()) if e.numel() and bool((~both_nan).any()) else 0.0
    rows = []
    flat_bad = bad.reshape(-1).nonzero().reshape(-1)
    order = finite.reshape(-1)[flat_bad].argsort(descending=True)[:KEPT_ROWS]
    for j in flat_bad[order].tolist():
        index = tuple(int(v) for v in torch.unravel_index(torch.tensor(j), e.shape)) if e.dim() else ()
        rows.append(
            Mismatch(
                check=CHECK,
                input_index=input_index,
                output_index=output_index,
                index=index,
                analytic=complex(c.reshape(-1)[j]) if c.is_complex() else float(c.reshape(-1)[j]),
                numerical=complex(e.reshape(-1)[j]) if e.is_complex() else float(e.reshape(-1)[j]),
                abs_error=float(diff.reshape(-1)[j]),
                allowed=float(allowed.reshape(-1)[j]),
                input_name=name,
                note=f"{what}: compiled (as autograd) against eager (as numerical)",
            )
        )
    return group, rows


def compare_with_eager(
    compiled: Callable, eager: Callable, inputs: Sequence[Any], wrt: Sequence[int], names: Sequence[str], seed: int
) -> CompiledComparison:
    """Compiled forward and backward (along ``COMPILED_VECTORS`` random grad_outputs) against eager."""
    try:
        outs_c, leaves_c = _run(compiled, inputs, wrt, seed)
    except Exception as exc:  # noqa: BLE001 - any failure of compile is reported, not raised
        root = exc
        while (getattr(root, "inner_exception", None) or root.__cause__) is not None:
            root = getattr(root, "inner_exception", None) or root.__cause__
        text = str(root).strip()
        reason = f"{type(root).__name__}: {text.splitlines()[0] if text else ''}"
        where = "torch.compile could not compile fn" if _is_compile_failure(exc) else "the compiled fn raised"
        return CompiledComparison(
            CheckResult(CHECK, "skipped", f"{where} ({reason[:160]}); only the eager function was checked"),
            notes=[f"{where}: compiled autograd was not compared with eager autograd"],
        )
    outs_e, leaves_e = _run(eager, inputs, wrt, seed)
    if _draws_random_numbers(eager, inputs, outs_e, seed):
        return CompiledComparison(
            CheckResult(
                CHECK, "skipped",
                "fn draws random numbers (its outputs change with the global seed): a compiled kernel draws "
                "other ones, so compiled and eager cannot be compared element by element",
            )
        )
    result = CompiledComparison(CheckResult(CHECK, "passed"))
    if len(outs_c) != len(outs_e) or any(c.shape != e.shape for c, e in zip(outs_c, outs_e)):
        shapes = lambda outs: [tuple(o.shape) for o in outs]  # noqa: E731
        result.check = CheckResult(
            CHECK, "failed", f"compiled outputs {shapes(outs_c)} differ in shape from eager {shapes(outs_e)}"
        )
        return result
    for k, (c, e) in enumerate(zip(outs_c, outs_e)):
        if c.is_floating_point() or c.is_complex():
            group, rows = _compare("forward", c, e, -1, k, "out")
            result.groups.append(group)
            result.mismatches.extend(rows)
    _compare_backwards(result, outs_c, leaves_c, outs_e, leaves_e, wrt, names, seed)
    failed = [g for g in result.groups if g.failed]
    detail = (
        f"compiled == eager: outputs and the backward along {COMPILED_VECTORS} random grad_outputs, "
        f"within {ROUNDINGS} roundings"
    )
    if failed:
        parts = ", ".join(
            f"{'forward' if g.input_index < 0 else 'backward to ' + names[g.input_index]}: {g.failed} of {g.compared}"
            for g in failed
        )
        result.check = CheckResult(CHECK, "failed", f"compiled differs from eager ({parts})")
    else:
        result.check = CheckResult(CHECK, "passed", detail)
    return result


def _compare_backwards(result: CompiledComparison, outs_c, leaves_c, outs_e, leaves_e, wrt, names, seed: int) -> None:
    """The compiled backward against eager's along ``COMPILED_VECTORS`` random grad_outputs: one group per
    differentiated input, its mismatches (at most ``KEPT_ROWS`` per input) added to ``result``."""
    outputs = _differentiable(outs_e)
    positions = [i for i in wrt if i in leaves_e]
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    sums: dict[tuple[int, int], GroupSummary] = {}
    for _ in range(COMPILED_VECTORS):
        vs = [torch.rand(outs_e[k].shape, generator=gen, dtype=torch.float64).mul_(2).sub_(1) for k in outputs]
        vs_c = [v.to(outs_c[k].dtype).to(outs_c[k].device) for v, k in zip(vs, outputs)]
        vs_e = [v.to(outs_e[k].dtype).to(outs_e[k].device) for v, k in zip(vs, outputs)]
        if not outputs or not positions:
            break
        grads_c = torch.autograd.grad(
            [outs_c[k] for k in outputs], [leaves_c[i] for i in positions], vs_c, retain_graph=True, allow_unused=True
        )
        grads_e = torch.autograd.grad(
            [outs_e[k] for k in outputs], [leaves_e[i] for i in positions], vs_e, retain_graph=True, allow_unused=True
        )
        for i, gc, ge in zip(positions, grads_c, grads_e):
            gc = torch.zeros_like(leaves_c[i]) if gc is None else gc
            ge = torch.zeros_like(leaves_e[i]) if ge is None else ge
            group, rows = _compare("backward", gc, ge, i, 0, names[i])
            key = (i, 0)
            if key in sums:
                merged = sums[key]
                merged.compared += group.compared
                merged.failed += group.failed
                merged.worst_ratio = max(merged.worst_ratio, group.worst_ratio)
            else:
                sums[key] = group
            result.mismatches.extend(rows[: max(0, KEPT_ROWS - sum(1 for m in result.mismatches if m.input_index == i))])
    result.groups.extend(sums.values())
