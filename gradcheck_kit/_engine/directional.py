"""The directional backward check: random directions u, phi(t) = v·f(x + t·h·u) on the stencil (stopping
after ±h where the screen decides), against autograd's (v·J)·u."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradcheck_kit._engine import (
    allowance, autograd_rows, context, reductions, settle, setup, stencil, tolerances, words,
)
from gradcheck_kit._engine import directional_ties, tie_groups
from gradcheck_kit._engine import approximate as _approximate
from gradcheck_kit._engine import kinks as _kinks
from gradcheck_kit._engine import limits
from gradcheck_kit._engine import screen as _screen
from gradcheck_kit._engine.compare import compare, Verdict
from gradcheck_kit._engine.evaluate import EvaluationFailed
from gradcheck_kit._engine.finite_diff import estimate, estimate_with_sigma, Estimates, noise_sigma
from gradcheck_kit._engine.limits import DEFAULT_DIRECTIONS, LARGE_COORDS
from gradcheck_kit._inputs import coords, coords64, from_coords
from gradcheck_kit.report import CheckResult, GroupSummary, Mismatch


def screens(run) -> bool:
    """Whether the ±h screen may decide (``screen``): float64 numerics, unless switched off."""
    return _screen.applies(run.stencil) and limits.TUNING.directional_screen


def directions(run) -> dict[int, torch.Tensor]:
    """Per input ``(d, n_i)``: random signs times each coordinate's step scale (``scale_of``), so ``|u|``
    is the scale; float64 for float64 inputs, else float32 (powers of two: exact in both)."""
    d = run.options["directions"] or (DEFAULT_DIRECTIONS if run.n_in <= LARGE_COORDS else 1)
    run.n_directions = d
    out = {}
    for i in run.wrt:
        x = coords(run.inputs[i].detach()).cpu()  # base_args[i]'s values (a float64 copy of low precision)
        out[i] = words.rademacher(x if x.dtype in words.FLOAT_BITS else x.to(torch.float32), d, run.gen)
        if i not in run.tie_scans and x.numel() <= tie_groups.EAGER_LIMIT:
            run.tie_scans[i] = tie_groups.scan(x, stencil.step_of(run, i), directional_ties.reach(run))
        out[i] = tie_groups.together(out[i], run.tie_scans.get(i))  # tied elements move together
        if i in run.nonfinite:  # never moved: x + t·h·u stays what fn masks
            out[i][:, run.nonfinite[i]] = 0.0
    return out


def directional_numerics(run, u: dict[int, torch.Tensor]) -> "DirectionalNumerics":
    """phi(0) for every output and direction, then phi(+-h), or the whole stencil where no screen applies
    (``screen``): the rest of the stencil is evaluated by ``directional_estimates`` on first need."""
    d = run.n_directions
    n_out = len(run.out_idx)
    values = torch.full((run.stencil.points + 1, n_out, d), math.nan, dtype=torch.float64)
    fmag = torch.tensor([[autograd_rows.output_sizes(run, k)[0]] for k in run.out_idx], dtype=torch.float64)
    num = DirectionalNumerics(values, fmag, evaluated=1, center=False)
    if not run.reference_pending:  # phi(0) from f(x), which is known (a deferred probe: on first need)
        directional_center(run, num)
    evaluate_directional(run, num, u, _screen.POINTS if screens(run) else values.shape[0])
    return num


def directional_center(run, num: "DirectionalNumerics") -> None:
    """phi(0) from f(x)."""
    for pos, k in enumerate(run.out_idx):
        num.values[0, pos, :] = run.f0[pos] @ run.v[k]
    num.center = True


def outputs_at(run, repl: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """``evaluator.outputs_at``; the first call of a deferred probe also checks that fn computes in
    float64 there (``context.NoFloat64`` where it does not, or fails)."""
    if not run.reference_pending:
        return run.evaluator.outputs_at(repl)
    try:
        outs = run.evaluator.raw_outputs_at(repl)
    except EvaluationFailed:
        raise context.NoFloat64 from None
    if not all(outs[k].dtype in (torch.float64, torch.complex128) for k in run.out_idx):
        raise context.NoFloat64
    run.reference_pending = False
    return [coords64(outs[k]) for k in run.out_idx]


def evaluate_directional(
    run, num: "DirectionalNumerics", u: dict[int, torch.Tensor], upto: int, h: float | None = None
) -> None:
    """Fill the stencil rows ``num.evaluated .. upto - 1`` (offsets ``multipliers[row - 1]`` times h, the
    stencil's step unless given)."""
    h = run.stencil.h0 if h is None else h
    mult = run.stencil.multipliers
    base = {i: coords(run.evaluator.base_args[i]) for i in run.wrt}
    buffers = {i: torch.empty_like(base[i]) for i in run.wrt}
    for di in range(run.n_directions):
        for row in range(num.evaluated, upto):
            repl = {}
            for i in run.wrt:
                x = run.evaluator.base_args[i]
                step = u[i][di]
                if step.dtype != base[i].dtype or step.device != base[i].device:
                    # float32 directions (a mixed add is slower), or an input on another device
                    step = buffers[i].copy_(step)
                point = torch.add(base[i], step, alpha=mult[row - 1] * h, out=buffers[i])
                repl[i] = from_coords(point.unsqueeze(0), x.shape, x.is_complex())[0].to(x.dtype)
            outs = outputs_at(run, repl)
            for pos, k in enumerate(run.out_idx):
                num.values[row, pos, di] = outs[pos] @ run.v[k]
            del outs, repl  # not held while fn computes the next point (one output less at the peak)
    num.evaluated = max(num.evaluated, upto)


def directional_estimates(run) -> Estimates:
    """The full stencil's estimates (evaluating the points the screen left out), and for low-precision
    inputs the float64 autograd reference its allowance measures round-off against."""
    state = run.directional
    num = state.numerics
    if num.estimates is None:
        if not num.center:
            directional_center(run, num)
        evaluate_directional(run, num, state.u, num.values.shape[0])
        h = torch.tensor(run.stencil.h0, dtype=torch.float64)
        num.estimates = estimate(num.values, h, num.fmag, run.stencil, pool_dim=1)
        if run.reference:
            directional_reference(run)
    return num.estimates


def directional_reference(run) -> dict | None:
    """The float64 autograd run's ``v·J`` (``grads_ref``), computed on first need; None where it fails
    (the allowance is then the blanket one)."""
    state = run.directional
    if not state.reference_ran:
        state.reference_ran = True
        try:
            _, ref_leaves, ref_outs = autograd_rows.reference_leaves(run)
            state.grads_ref, _ = autograd_rows.vjp_vectors(run, ref_leaves, ref_outs)
        except Exception:  # noqa: BLE001 - no reference: blanket allowance
            state.grads_ref = None
    return state.grads_ref


def judge_directional(run, a: torch.Tensor, backward: bool = True) -> tuple[Verdict, torch.Tensor, bool]:
    """Autograd's ``(n_out, d)`` values against the numerics: the +-h screen where it decides (every value
    passes it), else the full stencil. Returns the verdict, the scale of each value, and whether the screen
    decided. In the cost plan a failure of the ``backward`` values notes whether it is beyond the
    approximate tier (``beyond_tier``)."""
    kap = tolerances.kappa(a.numel())
    num = run.directional.numerics
    if num.estimates is None and screens(run):
        allow, scale = allowance.allowance_directional(run, screen=True)
        verdict = _screen.screen(
            a, num.values, run.stencil.h0, num.fmag, run.stencil, allow, kap, num.center, screen_margin(run),
        )
        if verdict is None and run.reference and directional_reference(run) is not None:
            # low-precision inputs: the floor alone did not settle it; with autograd's round-off measured
            # against the float64 run (the allowance the full comparison gives) it may, without the
            # rest of the stencil
            allow, scale = allowance.allowance_directional(run, screen="measured")
            verdict = _screen.screen(a, num.values, run.stencil.h0, num.fmag, run.stencil, allow, kap, num.center)
        if verdict is not None:
            return verdict, scale, True
        if backward and run.cost_plan:
            early = early_failure(run, a, num, allow, kap)
            if early is not None:
                return early, scale, False
    est = directional_estimates(run)
    allow, scale = allowance.allowance_directional(run, screen=False)
    # no second opinion at smaller steps here (full mode's settle.refine): one coordinate's steep feature
    # would dominate the projection and its tolerance there, and hide a wrong element elsewhere. Auto
    # mode narrows a failure down with a full check, whose entries get it one by one (narrow)
    verdict = compare(a, est, allow, kap)
    settle_directional_kinks(run, a, est, allow, verdict, kap)
    if backward and run.cost_plan and bool(verdict.failed.any()):
        num.beyond_tier = beyond_tier(a, verdict, allowance.directional_own_scale(run), allowance.directional_dtype(run))
        num.within_tier = not num.beyond_tier
    if bool(verdict.failed.any()) and settle.approximate_tier(run):
        _approximate.apply(
            verdict, a, allowance.directional_own_scale(run), _approximate.accuracy(allowance.directional_dtype(run), True),
            run.options["strict"],
        )
    return verdict, scale, False


#: the cost plan's ±h screen allows this fraction of the directional approximate tier beyond its round-off
#: tolerance (``screen_margin``): far below any disagreement the tier's note would be worth listing
SCREEN_MARGIN = 0.02


def screen_margin(run) -> torch.Tensor | None:
    """What the cost plan's ±h screen may allow beyond its tolerance (``screen.screen``'s ``margin``):
    ``SCREEN_MARGIN`` of the approximate tier the full stencil's comparison adds to the projection's size
    (``approximate.apply`` there), where that tier applies (no given tolerances, not ``strict``), so that a
    screened value is one the full stencil passes, on its central value or as approximate. The whole
    stencil along ``u`` (``(points - 2) · d`` calls) is left out where the first difference at ±h misses
    its round-off bound by its truncation alone; disagreements beyond the margin go on to it (and to the
    approximate note)."""
    if not run.cost_plan or not settle.approximate_tier(run) or run.options["strict"]:
        return None
    rho = _approximate.accuracy(allowance.directional_dtype(run), True)
    return SCREEN_MARGIN * rho * allowance.directional_own_scale(run)


def early_failure(run, a: torch.Tensor, num: "DirectionalNumerics", allow: torch.Tensor, kap: float) -> Verdict | None:
    """The cost plan's failed verdict from ``phi(±h)`` alone where the directions disagree as an iterative
    solver's derivative does (within the full check's approximate tier, beyond the projection's: the full
    check passes such entries as approximate) and the rest of the stencil along ``u`` is not worth its calls
    (``settles_unlikely``): the full check it stands in for runs right away. Every value fails (the verdict
    only sends the check to the full check, whose results replace it). None where the stencil along ``u``
    goes on: a disagreement beyond the approximate tier (a wrong derivative, a staircase, a jump at x, which
    the whole stencil tells apart and ``precision_first`` reads), ``phi`` not smooth at ±h (one-sided slopes
    that the screen's kink test tells apart, a value not finite), f(x) not known, or given tolerances (no
    approximate tier; an ``rtol`` widens the whole stencil's allowance beyond the screen's)."""
    h, values = run.stencil.h0, num.values
    if not settle.approximate_tier(run) or not num.center:
        return None
    if not bool(torch.isfinite(values[: _screen.POINTS]).all()):
        return None
    central, noise, _, _, no_kink = _screen.terms(values, h, num.fmag, run.stencil, kap)
    # one-sided slopes that differ as the screen's kink test has it: a kink or a jump along u, which the
    # whole stencil tells apart (kinks pass between the slopes, jumps are not compared)
    if not bool(no_kink.all()):
        return None
    own = allowance.directional_own_scale(run)
    dtype = allowance.directional_dtype(run)
    diff = (a - central).abs()
    if bool((diff > noise + allow + _approximate.accuracy(dtype) * own).any()):
        return None  # beyond the full check's approximate tier: a wrong derivative, a staircase, a jump
    excess = diff / (noise + allow + _approximate.accuracy(dtype, True) * own).clamp_min(1e-300)
    if not settles_unlikely(run, float(excess.nan_to_num(float("inf")).max())):
        return None
    num.within_tier = True
    failed = torch.ones_like(a, dtype=torch.bool)
    none = torch.zeros_like(failed)
    return Verdict(
        failed=failed, kink=none, unchecked=none, numerical=central, allowed=allow.expand_as(a).clone(),
        ratio=(diff / allow.clamp_min(1e-300)).expand_as(a).clone(), sharp_kink=none, left=central, right=central,
    )


def settles_unlikely(run, excess: float) -> bool:
    """Whether the cost plan's directions, which missed the ±h screen by ``excess`` times the directional
    approximate tier (the screen's tolerance plus that tier, at most), go to the full check without the rest
    of their stencil. The rest (``(points - 2) · d`` calls) passes only where truncation at h explains the
    disagreement, less likely the more tiers it spans: taken as one chance in ``excess``, it is worth its
    calls where that chance times the calls of the full check it may save (at least ±h per coordinate)
    exceeds them. Within the tier (``excess <= 1``) the stencil always goes on. A cost rule only: either
    way a failure runs the full check, whose verdict counts."""
    if excess <= 1.0:
        return False
    rest = (run.stencil.points - (_screen.POINTS - 1)) * run.n_directions
    full = (2 if _screen.can_screen(run) else run.stencil.points) * run.n_in
    return full <= rest * excess


def judge_projections(run, a: torch.Tensor, backward: bool = True) -> tuple[torch.Tensor, Verdict]:
    """``judge_directional`` of forward AD's projections ``a`` (``backward`` passed on), what it finds added to
    ``run.out``.
    Where ``a`` came from one pass for every input in low precision (``run.jvp_joint_low``) and failed, the
    projections from passes input by input replace it and are judged instead: only a failure needs them.
    Returns the projections judged and their verdict."""
    with run.stage() as found:
        verdict, _, _ = judge_directional(run, a, backward)
    if run.jvp_joint_low and bool(verdict.failed.any()):
        a = per_input_projections(run)
        verdict, _, _ = judge_directional(run, a, backward)
        return a, verdict
    run.out.extend(found)
    return a, verdict


def per_input_projections(run) -> torch.Tensor:
    """Forward AD's projections from passes input by input, in place of the joint ones (raises what they raised)."""
    run.jvp_joint_low = False
    a = run.jvp_projections = autograd_rows.jvp_per_input(run, run.directional.u)
    if isinstance(a, Exception):
        raise a
    return a


def beyond_tier(a: torch.Tensor, verdict: Verdict, scale: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a failed directional value of ``verdict`` differs from autograd's ``a`` by more than the full
    check's approximate tier of the projection's size ``scale`` (``approximate``): an approximate derivative
    (an iterative solver's) does not explain the disagreement."""
    rho = _approximate.accuracy(dtype)
    beyond = (a - verdict.numerical).abs() > verdict.allowed + rho * scale
    return bool((verdict.failed & beyond).any())


def settle_directional_kinks(run, a, est: Estimates, allow, verdict: Verdict, kap: float) -> None:
    """Directional values that passed on a central value spoiled by a kink along ``u`` inside the stencil
    (``kinks``), judged again with the stencil at smaller steps on the kink's clean side."""
    flat = lambda t: None if t is None else t.view(-1)  # noqa: E731 - (n_out, d) -> flat positions (views: writes reach verdict)
    view = Verdict(*(flat(getattr(verdict, f)) for f in Verdict.__dataclass_fields__))
    read = lambda t: None if t is None else t.reshape(-1)  # noqa: E731 - read only (an expanded allowance)
    flat_est = Estimates(*(read(t) for t in vars(est).values()))
    idx = _kinks.suspects(read(a), flat_est, read(allow), kap, view).nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    state = run.directional
    num = state.numerics

    def estimates_at(level: int, open_: torch.Tensor) -> Estimates:
        h = run.stencil.h0 / _kinks.STEP_FACTOR**level
        fine = DirectionalNumerics(num.values.clone(), num.fmag, evaluated=1)
        evaluate_directional(run, fine, state.u, num.values.shape[0], h=h)
        sigma = noise_sigma(fine.values, fine.fmag, run.stencil, pool_dim=1)
        e = estimate_with_sigma(fine.values, torch.tensor(h, dtype=torch.float64), sigma, run.stencil, unit_floor=False)
        return Estimates(*(None if t is None else read(t)[idx[open_]] for t in vars(e).values()))

    settled = _kinks.settle(read(a)[idx], read(allow)[idx], kap, estimates_at)
    decided, wrong, level = _kinks.apply(view, idx, settled, read(a)[idx])
    if decided:
        run.out.notes.append(_kinks.note("directional derivative(s)", decided, wrong, level))


def backward_directional(run) -> bool:
    """The directional backward check; whether it failed in auto mode, or at near-ties in any mode (the
    pipeline narrows it down then: full mode's verdict settles them)."""
    failed = once_probed(run)
    return failed and (run.options["mode"] == "auto" or run.directional.at_ties)


def once_probed(run) -> bool:
    """``backward_directional_once``, again after a deferred probe's point told that fn is not float64."""
    try:
        return backward_directional_once(run)
    except context.NoFloat64:  # the deferred probe: fn is not float64 at x + h·u, or another function (reference)
        setup.choose_numeric_dtype(run, defer=False)  # the probe at x decides, as for any other check
        run.extra_evaluations += 1  # the point that told
        return backward_directional_once(run)


def backward_directional_once(run) -> bool:
    u = directions(run)
    # forward AD's projections now, while least else is held in memory (the check of them comes with
    # forward_check): its temporaries on top of the numerics' and the backward's cost page faults on
    # large inputs
    run.jvp_projections = autograd_rows.jvp_projection(run, u) if run.forward_ad is not False else None
    num = directional_numerics(run, u)
    raw: dict = {}
    grads, flowed = autograd_rows.vjp_vectors(run, run.leaves, run.outs, raw)
    run.directional = context.DirectionalState(u, num, grads, raw)
    run.directional_allowance.clear()  # of an earlier attempt's directions
    a = run.directional.projections = project_directional(run, grads, u)
    with run.stage() as found:  # dropped where the check runs again
        verdict, scale, screened = judge_directional(run, a)
        again = bool(verdict.failed.any()) and directional_ties.scan_large(run)  # ties moved apart
        # a failed projection of the cost plan goes to the full check, which judges the ties itself
        skip_ties = again or (run.cost_plan and bool(verdict.failed.any()))
        wrong_ties = [] if skip_ties else directional_ties.judge(run, grads, failed=bool(verdict.failed.any()))
        differs = not again and directional_ties.deferred_reference_differs(run)
    if again:  # once more, with the ties moved together
        return backward_directional_once(run)
    if differs:
        raise context.NoFloat64
    run.out.extend(found)
    failed = record_directional(run, "backward", a, verdict, all(flowed.values()))
    failed = directional_ties.record(run, wrong_ties) or failed
    run.out.resolution = float((verdict.allowed / scale.clamp_min(1e-300)).max())
    if screened:
        detail = (
            f"directional, {run.n_directions} direction(s), 2 evaluations each (stopped after ±h: the "
            "central difference already agreed within its round-off"
            + (f", or {SCREEN_MARGIN:.0%} of the approximate tier beyond it)" if screen_margin(run) is not None else ")")
        )
        if not num.center:
            detail += "; f(x) in float64 was not needed, so a kink exactly at x was not looked for"
    else:
        detail = f"directional, {run.n_directions} direction(s), {run.stencil.points} evaluations each"
    run.out.checks.append(CheckResult("backward", "failed" if failed else "passed", detail))
    return failed


def project_directional(run, grads: dict, u: dict) -> torch.Tensor:
    a = torch.zeros(len(run.out_idx), run.n_directions, dtype=torch.float64)
    for pos, k in enumerate(run.out_idx):
        for i in run.wrt:
            # the first direction's pass also sums (g·u)² = (g·|u|)², the allowance's scale
            value, square_sum = reductions.dot_and_square_sum(u[i][0], grads[(i, k)])
            a[pos, 0] += value
            run.directional_square_sums[(i, k)] = square_sum
            for di in range(1, run.n_directions):
                a[pos, di] += reductions.dot64(u[i][di], grads[(i, k)])
    return a


def record_directional(run, check: str, a: torch.Tensor, verdict: Verdict, flowed: bool) -> bool:
    failed_any = False
    first_input = run.wrt[0]
    for pos, k in enumerate(run.out_idx):
        group = GroupSummary(check, first_input if len(run.wrt) == 1 else -1, k, "directional")
        group.compared = int((~verdict.unchecked[pos]).sum())
        group.unchecked = int(verdict.unchecked[pos].sum())
        group.failed = int(verdict.failed[pos].sum())
        group.kinks = int(verdict.kink[pos].sum())
        group.worst_ratio = float(verdict.ratio[pos].max())
        run.out.groups.append(group)
        if verdict.approximate is not None:
            run.approximate.add(
                verdict.approximate[pos], _approximate.accuracy(allowance.directional_dtype(run), True), allowance.directional_dtype(run),
                lambda di, k=k: f"directional derivative {di} of output {k}", directional=True,
            )
        for di in range(a.shape[1]):
            if not verdict.failed[pos, di]:
                continue
            failed_any = True
            analytic_value = float(a[pos, di])
            run.out.mismatches.append(
                Mismatch(
                    check=check,
                    input_index=group.input_index,
                    output_index=k,
                    index=(di,),
                    analytic=analytic_value,
                    numerical=float(verdict.numerical[pos, di]),
                    abs_error=abs(analytic_value - float(verdict.numerical[pos, di])),
                    allowed=float(verdict.allowed[pos, di]),
                    input_name="+".join(run.names[i] for i in run.wrt),
                    kind="directional",
                    note="" if flowed else "some input gets no gradient from autograd",
                )
            )
    return failed_any


@dataclass
class DirectionalNumerics:
    """``phi(t) = v_k·out_k(x + t·h·u)`` per output and direction: ``values`` ``(points + 1, n_out, d)`` in the
    stencil's order ``[0, +1, -1, +2, -2, ...]`` of which the first ``evaluated`` rows are known; ``fmag``
    (``(n_out, 1)``, ``sum |f(x)|·|v|``) sizes the noise model; ``estimates`` once the whole stencil ran."""

    values: torch.Tensor
    fmag: torch.Tensor
    evaluated: int
    center: bool = True  # row 0 (phi(0)) known: False until f(x) is, where the float64 probe was deferred
    estimates: Estimates | None = None
    beyond_tier: bool = False  # the cost plan's failed disagreement is beyond the approximate tier
    within_tier: bool = False  # ... and where it failed within it (an iterative solver's derivative)
