"""``batched=True``: fn and its derivatives under ``vmap`` against one call per batch entry.

What ``torch.autograd.gradcheck(check_batched_grad=True)`` checks, and a little more, because the kit's
own numerics batch fn's evaluations through ``vmap``. Three comparisons, each against the same thing
computed one batch entry at a time:

- ``forward``: ``torch.func.vmap(fn)`` over a batch of nearby inputs (a custom Function's ``vmap``
  rule, or a ``generate_vmap_rule`` Function whose forward mixes batch entries, shows here);
- ``backward``: the backward for a batch of random ``grad_outputs`` through ``vmap`` over
  ``torch.func.vjp``, and through ``is_grads_batched`` where the graph holds no Python code;
- ``forward_ad``: ``vmap`` over ``torch.func.jvp`` for a batch of random tangents.

A difference beyond rounding is a failure of the check ``batched``, not a wrong gradient: the
derivatives may be right one at a time. A part that cannot run under ``vmap`` is skipped with the
reason. Nothing here raises for a failure; the result is data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._engine.evaluate import as_outputs, exception_text, seed_global_rng
from gradcheck_kit._engine.graph import python_function_nodes
from gradcheck_kit._inputs import layout_clone
from gradcheck_kit._engine.reasons import forward_ad_reason, vmap_reason
from gradcheck_kit.report import CheckResult
from gradcheck_kit._engine.tolerances import within_roundings

__all__ = ["BatchedComparison", "compare_batched"]

#: batch entries compared
BATCH = 3
#: allowed difference, in roundings of the dtype, of |one at a time| + its largest magnitude
ROUNDINGS = 64
CHECK = "batched"


@dataclass
class BatchedComparison:
    """The verdict (one check) and what each part found (``part -> None`` passed, or a description)."""

    check: CheckResult
    parts: dict = field(default_factory=dict)


def _close(batched: torch.Tensor, single: torch.Tensor) -> tuple[bool, float]:
    """Whether two results agree within ``ROUNDINGS`` roundings, and the largest difference."""
    if batched.shape != single.shape:
        return False, float("inf")
    if not single.numel():
        return True, 0.0
    eps = torch.finfo(single.dtype).eps if single.is_floating_point() or single.is_complex() else 0.0
    agreement = within_roundings(batched, single, eps, ROUNDINGS)
    same_nan = torch.isnan(agreement.got) & torch.isnan(agreement.want)
    worst = float(agreement.diff[~same_nan].max()) if bool((~same_nan).any()) else 0.0
    return not bool(agreement.bad.any()), worst


def _reason(exc: BaseException, forward_ad: bool = False) -> str:
    described = exception_text(exc)
    return forward_ad_reason(described) if forward_ad else vmap_reason(described)


def _bound(fn: Callable, inputs: Sequence[Any], wrt: Sequence[int]) -> Callable:
    """fn as a function of the differentiated inputs only, the others fixed."""

    def call(*diff: torch.Tensor):
        args = list(inputs)
        for i, t in zip(wrt, diff):
            args[i] = t
        return tuple(as_outputs(fn(*args)))

    return call


def compare_batched(fn: Callable, inputs: Sequence[Any], wrt: Sequence[int], seed: int) -> BatchedComparison:
    """fn's forward, backward and forward AD under ``vmap`` against one batch entry at a time."""
    gen = torch.Generator().manual_seed(seed ^ 0xBA7C)
    primals = [layout_clone(inputs[i]).detach() for i in wrt]
    call = _bound(fn, inputs, wrt)
    parts: dict[str, str | None] = {}
    skipped: dict[str, str] = {}

    def noise(t: torch.Tensor, scale: float) -> torch.Tensor:
        base = torch.rand((BATCH, *t.shape), generator=gen, dtype=torch.float64).mul_(2).sub_(1).mul_(scale)
        return base.to(t.dtype).to(t.device)

    _forward_part(call, primals, noise, seed, parts, skipped)
    _backward_part(call, primals, noise, seed, parts, skipped)
    _forward_ad_part(call, primals, noise, seed, parts, skipped)
    return _verdict(parts, skipped)


def _forward_part(call, primals, noise, seed: int, parts: dict, skipped: dict) -> None:
    """A batch of nearby points (x + small offsets) through vmap against single calls."""
    points = [p.unsqueeze(0) + noise(p, 0.5) * p.abs().clamp_min(1) for p in primals]
    with torch.no_grad():
        seed_global_rng(seed)
        singles = [call(*(pt[b] for pt in points)) for b in range(BATCH)]
        try:
            seed_global_rng(seed)
            batched = torch.func.vmap(call, randomness="same")(*points)
        except Exception as exc:  # noqa: BLE001 - a function vmap cannot run is reported, not raised
            skipped["forward"] = _reason(exc)
        else:
            parts["forward"] = _mismatch_forward(batched, singles)


def _backward_part(call, primals, noise, seed: int, parts: dict, skipped: dict) -> None:
    """vmap over vjp (and is_grads_batched where no Python runs in the backward) against one backward per
    batch entry."""
    leaves = [p.clone().requires_grad_(True) for p in primals]
    seed_global_rng(seed)
    with torch.enable_grad():
        outs = call(*leaves)
    diff_out = [k for k, o in enumerate(outs) if (o.is_floating_point() or o.is_complex()) and o.requires_grad]
    if not diff_out:
        return
    vs = [noise(outs[k], 1.0) for k in diff_out]
    rows = []
    for b in range(BATCH):
        grads = torch.autograd.grad(
            [outs[k] for k in diff_out], leaves, [v[b] for v in vs], retain_graph=True, allow_unused=True
        )
        rows.append([torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)])
    try:
        seed_global_rng(seed)
        _, vjp_fn = torch.func.vjp(call, *primals)

        def pulled(*cotangents):
            full = [torch.zeros_like(o) for o in outs]
            for k, c in zip(diff_out, cotangents):
                full[k] = c
            return vjp_fn(tuple(full))

        got = torch.func.vmap(pulled)(*vs)
    except Exception as exc:  # noqa: BLE001
        skipped["backward (vmap over vjp)"] = _reason(exc)
    else:
        parts["backward (vmap over vjp)"] = _mismatch_rows(got, rows)
    if python_function_nodes([outs[k] for k in diff_out]):
        skipped["backward (is_grads_batched)"] = "Python code in the graph (a custom Function): not run batched"
        return
    try:
        got = torch.autograd.grad(
            [outs[k] for k in diff_out], leaves, vs, retain_graph=True, allow_unused=True, is_grads_batched=True,
        )
    except Exception as exc:  # noqa: BLE001
        skipped["backward (is_grads_batched)"] = _reason(exc)
    else:
        got = [torch.zeros((BATCH, *leaf.shape), dtype=leaf.dtype) if g is None else g for g, leaf in zip(got, leaves)]
        parts["backward (is_grads_batched)"] = _mismatch_rows(got, rows)


def _forward_ad_part(call, primals, noise, seed: int, parts: dict, skipped: dict) -> None:
    """vmap over jvp against one jvp per tangent."""
    tangents = [noise(p, 1.0) for p in primals]
    try:
        with torch.no_grad():
            seed_global_rng(seed)
            singles_t = [torch.func.jvp(call, tuple(primals), tuple(t[b] for t in tangents))[1] for b in range(BATCH)]
            seed_global_rng(seed)
            batched_t = torch.func.vmap(
                lambda *ts: torch.func.jvp(call, tuple(primals), ts)[1], randomness="same"
            )(*tangents)
    except Exception as exc:  # noqa: BLE001
        skipped["forward_ad"] = _reason(exc, forward_ad=True)
    else:
        parts["forward_ad"] = _mismatch_forward(batched_t, singles_t)


def _verdict(parts: dict, skipped: dict) -> BatchedComparison:
    failed = {part: what for part, what in parts.items() if what}
    passed = [part for part, what in parts.items() if not what]
    if failed:
        detail = "; ".join(f"{part}: {what}" for part, what in failed.items())
        return BatchedComparison(CheckResult(CHECK, "failed", f"vmap gives other results than one call per entry: {detail}"), parts)
    if not passed:
        reasons = "; ".join(f"{part}: {why}" for part, why in skipped.items())
        return BatchedComparison(CheckResult(CHECK, "skipped", f"nothing could run under vmap ({reasons})"), parts)
    detail = f"{', '.join(passed)} under vmap equal one call per entry ({BATCH} entries)"
    if skipped:
        detail += "; not run: " + "; ".join(f"{part} ({why})" for part, why in skipped.items())
    return BatchedComparison(CheckResult(CHECK, "passed", detail), parts)


def _mismatch_forward(batched: Sequence[torch.Tensor], singles: Sequence[Sequence[torch.Tensor]]) -> str | None:
    for k, out in enumerate(batched):
        for b in range(BATCH):
            ok, worst = _close(out[b], singles[b][k])
            if not ok:
                return f"output {k} of batch entry {b} differs by {worst:.2g}"
    return None


def _mismatch_rows(batched: Sequence[torch.Tensor], rows: Sequence[Sequence[torch.Tensor]]) -> str | None:
    for i, got in enumerate(batched):
        for b in range(BATCH):
            ok, worst = _close(got[b], rows[b][i])
            if not ok:
                return f"the gradient of differentiated input {i} for grad_output {b} differs by {worst:.2g}"
    return None
