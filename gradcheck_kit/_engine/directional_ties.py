"""Directional mode's ties (``tie_groups``): large inputs scanned once a projection failed, the ties of the
directions judged by full mode's group rule in each projection ``v_k·out_k``, failed ties recorded, and a
deferred float64 probe's ``f(x)`` compared with the low-precision outputs once it is known."""

from __future__ import annotations

import torch

from gradcheck_kit._engine import allowance, autograd_rows, setup, stencil, tie_groups, tolerances
from gradcheck_kit._engine import ties as _ties
from gradcheck_kit._inputs import coord_index, coords, n_coords
from gradcheck_kit.report import Mismatch


def reach(run) -> float:
    """How far the stencil reaches, in steps."""
    return max(abs(m) for m in run.stencil.multipliers)


def judging_calls(run) -> int:
    """Calls of fn that judging the ties of the inputs of up to ``EAGER_LIMIT`` elements would make one point
    at a time (``judge``: 2 · points per member and per tie), read from their scans (made here; the
    directions reuse them)."""
    points = 2 * len(run.stencil.multipliers)
    calls = 0
    for i in run.wrt:
        x = coords(run.inputs[i].detach()).cpu()
        if x.numel() > tie_groups.EAGER_LIMIT:
            continue
        if i not in run.tie_scans:
            run.tie_scans[i] = tie_groups.scan(x, stencil.step_of(run, i), reach(run))
        groups = tie_groups.pick(run.tie_scans[i], torch.ones(x.numel(), 1, dtype=torch.float64))
        if groups:
            calls += (torch.unique(torch.cat(groups)).numel() + len(groups)) * points
    return calls


def scan_large(run) -> bool:
    """Inputs above ``tie_groups.EAGER_LIMIT`` elements scanned for ties once a projection failed: whether
    some values are equal (the check then runs again with the ties moved together)."""
    large = [i for i in run.wrt if i not in run.tie_scans]
    for i in large:
        run.tie_scans[i] = tie_groups.scan(coords(run.inputs[i].detach()).cpu(), stencil.step_of(run, i), reach(run))
    return any(tie_groups.has_equal(run.tie_scans[i]) for i in large)


def judge(run, grads: dict, failed: bool) -> list[tuple[int, tie_groups.GroupVerdict]]:
    """The ties of the directions judged by full mode's group rule in each projection (``tie_groups``;
    where a projection ``failed`` already, only in small inputs): the failed ``(input, GroupVerdict)``.
    Sets ``run.directional.ties_split`` where fn is not differentiable along some tie, or a tie failed."""
    wrong = []
    for i in run.wrt:
        if failed and n_coords(run.inputs[i]) > tie_groups.NEAR_LIMIT:
            continue
        a = torch.stack([grads[(i, k)].detach().reshape(-1).to(torch.float64).cpu() for k in run.out_idx], 1)
        groups = tie_groups.pick(run.tie_scans.get(i), a)
        if not groups:
            continue
        center = torch.stack([run.f0[pos] @ run.v[k] for pos, k in enumerate(run.out_idx)])
        fmag = torch.tensor([autograd_rows.output_sizes(run, k)[0] for k in run.out_idx], dtype=torch.float64)
        along = lambda masks, offsets, i=i: along_projections(run, i, masks, offsets)  # noqa: E731
        verdicts = tie_groups.judge(
            coords(run.inputs[i].detach()).cpu(), a, groups, along, center, fmag, stencil.step_of(run, i),
            run.stencil, run.inputs[i].dtype, tolerances.kappa(a.numel()),
        )
        wrong += [(i, g) for g in verdicts if not g.ok]
        run.directional.ties_split |= any(g.split or not g.ok for g in verdicts)
    return wrong


def along_projections(run, i: int, masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``v_k·out_k`` at ``x + offsets[p, m] · masks[m]`` (input ``i``): ``(points, m, n_out)``."""
    x = run.evaluator.base_args[i]
    base = coords(x).cpu()
    points = (base.to(torch.float64) + offsets.unsqueeze(2) * masks.unsqueeze(0)).to(base.dtype)
    outs = run.evaluator.batched(i, points.view(-1, base.numel()), x.shape, x.is_complex())
    rows = [outs[pos].to(torch.float64) @ run.v[k].to(torch.float64) for pos, k in enumerate(run.out_idx)]
    return torch.stack(rows, -1).reshape(offsets.shape[0], masks.shape[0], -1)


def record(run, wrong: list[tuple[int, tie_groups.GroupVerdict]]) -> bool:
    """One mismatch per failed tie and projection: the sum of autograd over the tie against the tie's
    one-sided slopes (the midpoint shown), the tie named. A failure at an exact tie is decisive
    (``run.directional.tie_decisive``): no narrowed check overrides it."""
    run.directional.tie_decisive = any(g.exact for _, g in wrong)
    for i, g in wrong:
        text = _ties.tie_text(run.inputs[i], run.names[i], g.members)
        run.tie_failures.append((i, g.members.tolist(), text))
        mid = 0.5 * (g.left + g.right)
        run.out.mismatches.append(Mismatch(
            check="backward", input_index=i, output_index=run.out_idx[g.row],
            index=coord_index(int(g.members[0]), run.inputs[i].shape, False)[0], analytic=g.total,
            numerical=mid, abs_error=abs(g.total - mid), allowed=g.allowed, input_name=run.names[i],
            kind="projected", note=f"at a tie ({text}): the gradient over them is wrong",
        ))
    return bool(wrong)


def deferred_reference_differs(run) -> bool:
    """Where the float64 probe was deferred and ``f(x)`` in float64 has been evaluated since: whether it
    differs from the low-precision outputs by more than rounding explains (``setup.reference_differs``), as
    an undeferred probe would have found. Compared once."""
    if not run.reference_deferred or run.f0_cache is None:
        return False
    run.reference_deferred = False
    probe = {k: run.f0_cache[pos] for pos, k in enumerate(run.out_idx)}
    ref_args = [setup.to_double(t) for t in run.inputs]
    return setup.reference_differs(run, probe, ref_args, run.evaluator.grad_inside, allowance.directional_dtype(run))
