"""The full backward check: autograd's rows against finite differences, input by input after the ±h screens,
each (input, output) group judged (``settle``) and recorded as a group summary and mismatches."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from gradcheck_kit._engine import allowance, autograd_rows, context, limits, paired_rows, screen, settle, stencil, tolerances
from gradcheck_kit._engine import approximate as _approximate
from gradcheck_kit._engine.compare import Verdict
from gradcheck_kit._engine.finite_diff import noise_sigma
from gradcheck_kit._engine.limits import KEPT_PER_GROUP
from gradcheck_kit._engine.notes import NO_GRADIENT_FLOW
from gradcheck_kit._engine.notes import unchecked_notes
from gradcheck_kit._inputs import coord_index, coords, coords64, n_coords, safe_float
from gradcheck_kit.report import Note, NoteCode, CheckResult, GroupSummary, Mismatch


def full_numerics(run, i: int, rows: dict[int, str], known: dict | None = None) -> dict[int, "stencil.FullNumerics"]:
    """Numerical derivatives of every output row w.r.t. every coordinate of input ``i``.

    ``rows[k]`` is ``"jacobian"`` (one row per output coordinate) or ``"projected"`` (one row: v·out).
    Returns per output the raw stencil values ``(points, n_i, r_k)`` with the noise of ``f``.
    ``known``: stencil values already computed for the first multipliers (the screen's ±h).
    """
    mults = run.stencil.multipliers
    done = 0 if known is None else next(iter(known.values())).shape[0]
    fresh = None
    if done < len(mults):
        fresh = outer_kept(run, i, rows, mults[done:]) or stencil.stencil_values(run, i, rows, mults[done:])
    x = run.evaluator.base_args[i]
    xc = coords64(x)
    step = stencil.step_of(run, i)
    numerics = {}
    for pos, k in enumerate(run.out_idx):
        parts = [autograd_rows.project(run, k, rows[k], run.f0[pos].unsqueeze(0)).unsqueeze(1).expand(1, xc.numel(), -1)]
        if known is not None:
            parts.append(known[k])
        if fresh is not None:
            parts.append(fresh[k])
        values = torch.cat(parts)
        fmag = autograd_rows.project(run, k, rows[k], run.f0[pos].abs().unsqueeze(0), absolute=True)  # (1, r)
        sigma = noise_sigma(values, fmag, run.stencil, pool_dim=0)
        flat = (values[1:] == values[0]).all(dim=0)
        numerics[k] = stencil.FullNumerics(values, sigma, step, xc.abs(), flat)
    return numerics


def outer_kept(run, i: int, rows: dict[int, str], mults) -> dict[int, torch.Tensor] | None:
    """``stencil.stencil_values`` of input ``i`` at the multipliers beyond ±h, the coordinates whose open
    entries ``settle.judge_open`` evaluated there read back and only the others evaluated: where fn runs
    point by point (each point a call of fn); ``None`` elsewhere or where nothing was kept."""
    kept = run.full.outer.get(i) if run.full is not None else None
    if kept is None or tuple(mults) != tuple(run.stencil.multipliers[2:]) or not run.budget.point_by_point(run):
        return None
    cols, values = kept
    n_i = n_coords(run.inputs[i])
    rest = torch.ones(n_i, dtype=torch.bool)
    rest[cols] = False
    rest = rest.nonzero().reshape(-1)
    fresh = stencil.columns_at(run, {i: rest}, mults)[i] if rest.numel() else {}
    joined = {}
    for k in run.out_idx:
        part = values[k]
        joined[k] = torch.empty(len(mults), n_i, part.shape[-1], dtype=torch.float64)
        joined[k][:, cols] = part
        if rest.numel():
            joined[k][:, rest] = fresh[k]
    return joined


def backward_full(
    run, *, inputs: Sequence[int] | None = None, check_name: str = "backward", rows: dict | None = None
) -> None:
    rows = rows or (autograd_rows.full_rows(run) if inputs is None else {k: "projected" for k in run.out_idx})
    inputs = list(run.wrt) if inputs is None else list(inputs)
    zero_rows = {} if check_name == "backward" and run.mode == "full" else None
    analytic, flowed, path, reference = paired_rows.rows_and_reference(run, rows, zero_rows)
    if zero_rows:
        run.zero_grad_rows = zero_rows  # structural_checks reads the zero grad_output's gradient here
    prepared, joint = {}, None
    if screen.can_screen(run):
        joint = screen.joint_screen_prepare(run, inputs, rows, analytic, reference)
        if joint is not None:
            prepared = joint.screens()
        else:
            prepared = screen.screens_apart(run, inputs, rows, analytic, reference)
    extra = allowance.global_scales(run, rows, reference if reference is not None else analytic, inputs, prepared)
    run.full = context.FullState(rows, analytic, reference, extra, prepared, joint)
    total = sum(
        n_coords(run.inputs[i]) * autograd_rows.row_count(run, k, rows[k]) for i in inputs for k in run.out_idx
    )
    kap = tolerances.kappa(total)
    failed_any = False
    screened, partly = [], []
    if joint is not None:
        splits = screen.joint_screen_test(run, joint, rows, extra, kap)
    else:
        splits = {i: screen.screen_split(run, i, prepared[i], rows, analytic, reference, extra, kap) for i in prepared}
    opened = {
        i: open_ for i, (_, open_) in splits.items()
        if open_ is not None and any(j.numel() for j, _ in open_.values())
    }
    settled = {}
    if opened and limits.TUNING.open_entries:
        known_all = {i: prepared[i].known for i in opened}
        with run.budget.stencil(run, run.budget.OPEN):
            settled = settle.judge_open(run, opened, known_all, analytic, reference, extra, kap)
    for i in inputs:
        known = prepared[i].known if i in prepared else None
        worst, open_ = splits.get(i, (None, None))
        if open_ is not None and (i not in opened or i in settled):
            (screened if i not in opened else partly).append(i)
            record_settled(run, check_name, i, worst, opened.get(i), settled.get(i), flowed)
            continue
        with run.budget.stencil(run, i):
            num = full_numerics(run, i, rows, known)
        run.full.estimates[i] = num
        failed_i = False
        for k in run.out_idx:
            a = analytic[(i, k)]
            ref = reference[(i, k)] if reference is not None else None
            verdict, j_idx, r_idx = settle.judge(run, i, k, a, ref, num[k], extra[(i, k)], kap)
            failed_i |= record(run, 
                check_name, i, k, rows[k], a, verdict, flowed.get((i, k), True), j_idx, r_idx
            )
        run.full.input_passed[i] = not failed_i
        failed_any |= failed_i
    run.full.screened = screened
    kinds = sorted(set(rows.values()))
    detail = f"full, {'/'.join(kinds)}, numerical {run.evaluator.path}, autograd {path}"
    if screened:
        names = ", ".join(run.names[i] for i in screened)
        detail += f"; settled at ±h (every entry within the plain central difference's tolerance): {names}"
    if partly:
        names = ", ".join(run.names[i] for i in partly)
        detail += f"; settled at ±h but for a few entries, passed by the whole stencil on their coordinates: {names}"
    run.out.checks.append(CheckResult(check_name, "failed" if failed_any else "passed", detail))


def record_settled(run, check: str, i: int, worst: dict, opened: dict | None, verdicts: dict | None, flowed: dict) -> None:
    """Input ``i`` settled by the ±h screen (``worst``: its worst ratio per output), but for the entries
    ``opened`` per output that the whole stencil on their coordinates settled (``verdicts``; both ``None``
    where the screen settled every entry): recorded as passed."""
    run.full.input_passed[i] = True
    run.full.estimates[i] = None  # computed on demand (forward AD per entry)
    screen.tally_settled(run, i)
    rows, analytic = run.full.rows, run.full.analytic
    for k in run.out_idx:
        if opened is None:
            record_screened(run, check, i, k, rows[k], worst[k], flowed.get((i, k), True))
            continue
        j_idx, r_idx = opened[k]
        record(run, check, i, k, rows[k], analytic[(i, k)], verdicts[k], flowed.get((i, k), True), j_idx, r_idx)
        group = run.out.groups[-1]
        group.worst_ratio = max(group.worst_ratio, worst[k])


def record_screened(run, check: str, i: int, k: int, kind: str, worst: float, flowed: bool) -> None:
    group = GroupSummary(check, i, k, kind)
    group.compared = n_coords(run.inputs[i]) * autograd_rows.row_count(run, k, kind)
    group.worst_ratio = worst
    run.out.groups.append(group)
    if not flowed and check == "backward":
        run.out.notes.append(
            no_gradient_note(i, run.names[i], k)
        )


def record(
    run, check: str, i: int, k: int, kind: str, a: torch.Tensor, verdict: Verdict, flowed: bool,
    j_idx: torch.Tensor, r_idx: torch.Tensor,
) -> bool:
    """Add a group summary and its mismatches; return whether anything failed.

    ``verdict`` covers the entries ``(j_idx, r_idx)`` of the ``(n_i, r)`` matrix ``a``; the others passed.
    """
    report = run.out
    group = GroupSummary(check, i, k, kind)
    group.compared = int(a.numel() - verdict.unchecked.sum().item())
    group.unchecked = int(verdict.unchecked.sum().item())
    group.failed = int(verdict.failed.sum().item())
    group.kinks = int(verdict.kink.sum().item())
    finite_ratio = verdict.ratio
    group.worst_ratio = float(finite_ratio.max().item()) if finite_ratio.numel() else 0.0
    report.groups.append(group)
    x = run.inputs[i]
    name = run.names[i]
    if verdict.approximate is not None:
        label = lambda pos: _approximate.entry_label(run.outs[k], run.output_names[k], kind, x, name, int(j_idx[pos]), int(r_idx[pos]))  # noqa: E731
        run.approximate.add(verdict.approximate, _approximate.accuracy(x.dtype), x.dtype, label)
    if group.kinks:
        report.notes.append(Note(
            f"{group.kinks} derivative(s) of output {k} w.r.t. {name} sit at or next to a kink (left and right "
            "slopes differ); autograd's value was accepted where it lies between them or matches the clean side",
            NoteCode.KINK, (name, k, group.kinks),
        ))
    if group.unchecked:
        report.notes.extend(unchecked_notes(verdict, a, j_idx, r_idx, x, k, name))
    if not flowed and check == "backward":
        report.notes.append(
            no_gradient_note(i, name, k)
        )
    if not group.failed:
        return False
    report.mismatches.extend(mismatches(run, check, i, k, kind, a, verdict, flowed, j_idx, r_idx))
    return True


def no_gradient_note(i: int, name: str, k: int) -> Note:
    return Note(
        f"no gradient flows to input {i} ({name}) from output {k}: autograd treats it as not used "
        "(detached, computed under no_grad, or requires_grad_(False)); compared as zero",
        NO_GRADIENT_FLOW, (i, k),
    )


def mismatches(
    run, check: str, i: int, k: int, kind: str, a: torch.Tensor, verdict: Verdict, flowed: bool,
    j_idx: torch.Tensor, r_idx: torch.Tensor,
) -> list[Mismatch]:
    """The failed entries of ``verdict``, worst first (at most ``KEPT_PER_GROUP``), as mismatches."""
    x, name = run.inputs[i], run.names[i]
    found = []
    failed_at = verdict.failed.nonzero().reshape(-1)
    order = torch.argsort(verdict.ratio[failed_at], descending=True)[:KEPT_PER_GROUP]
    xc = coords(x)
    for pos in failed_at[order].tolist():
        j, r = int(j_idx[pos]), int(r_idx[pos])
        index, part = coord_index(j, x.shape, x.is_complex())
        out_shape = run.outs[k].shape
        out_elem = None
        note = []
        if kind == "jacobian":
            out_elem, opart = coord_index(r, out_shape, run.outs[k].is_complex())
            if opart:
                note.append(f"output {opart}")
        if part:
            note.append(f"input {part}")
        if not flowed:
            note.append(f"no gradient flows to input {i}: autograd gave none")
        if bool(verdict.sharp_kink[pos]):
            lo, hi = sorted((float(verdict.left[pos]), float(verdict.right[pos])))
            note.append(
                f"a kink: the one-sided slopes are {lo:.6g} and {hi:.6g}; a valid (sub)gradient lies between them"
            )
        note += [f"at a tie ({text}): the gradient over them is wrong" for t_i, m, text in run.tie_failures
                 if t_i == i and j in m][:1]
        analytic_value = float(a[j, r])
        numerical_value = float(verdict.numerical[pos])
        if not math.isfinite(analytic_value):
            note.append("autograd's value is not finite where the numerical one is")
        found.append(
            Mismatch(
                check=check,
                input_index=i,
                output_index=k,
                index=index,
                analytic=analytic_value,
                numerical=numerical_value,
                abs_error=abs(analytic_value - numerical_value),
                allowed=float(verdict.allowed[pos]),
                output_element=out_elem,
                input_name=name,
                input_value=safe_float(xc[j]),
                kind=kind,
                note="; ".join(note),
            )
        )
    return found
