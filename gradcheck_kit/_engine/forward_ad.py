"""The forward-AD check: forward-mode J·u against the checked backward Jacobian (full mode) or against the
directional numerics, entry by entry against finite differences where they disagree."""

from __future__ import annotations


import numpy as np
import torch

from gradcheck_kit._engine import allowance, autograd_rows, directional, full, graph, limits, screen, settle, tolerances
from gradcheck_kit._engine.analytic import ForwardADUnsupported, jvp_columns, jvp_directions
from gradcheck_kit._engine.compare import Verdict
from gradcheck_kit._engine.evaluate import describe_exception, exception_text
from gradcheck_kit._engine.limits import EVALUATION_BATCH_ELEMENTS, FORWARD_DIRECTIONS
from gradcheck_kit._engine.reasons import NO_JVP, forward_ad_reason
from gradcheck_kit._inputs import n_coords
from gradcheck_kit.report import CheckResult


def resolve(run) -> None:
    """``run.forward_ad``: ``"auto"`` leaves forward AD out where fn's graph (from its outputs at the inputs)
    is more than ``limits.AUTO_FORWARD_BUILTIN_NODES`` of torch's built-in operations and no custom
    ``autograd.Function``: forward mode there is torch's own formulas, and its pass mixes tangents with
    plain tensors at every operation (``run.forward_ad_builtin``: the number of operations). It leaves it out
    too where every custom ``autograd.Function`` of the graph has no ``jvp`` (``run.forward_ad_without_jvp``:
    their names): a forward-mode pass raises at the first the tangents reach, after a call of fn, and one
    they do not reach leaves torch's formulas alone to check (the skip says so as that raise would). A graph
    that also holds a Function with a ``jvp`` gets the pass."""
    if run.options["forward_ad"] != "auto":
        return
    size = run.graph.builtin_size
    if size is not None and size > limits.AUTO_FORWARD_BUILTIN_NODES:
        run.forward_ad = False
        run.forward_ad_builtin = size
    elif size is None:
        classes = run.graph.classes
        without = [cls for cls in classes if graph.lacks_jvp(cls)]
        if without and len(without) == len(classes):
            run.forward_ad = False
            run.forward_ad_without_jvp = [getattr(cls, "__qualname__", cls.__name__) for cls in without]


def _skipped_detail(run) -> str:
    if run.forward_ad_without_jvp:
        return f"fn does not support forward-mode AD: {NO_JVP} ({', '.join(run.forward_ad_without_jvp)})"
    if not run.forward_ad_builtin:
        return "forward_ad=False"
    return (
        f"fn's graph is {run.forward_ad_builtin} of torch's built-in operations and no custom autograd.Function: "
        "its forward-mode derivatives are torch's own formulas (forward_ad=True checks them)"
    )


def forward_check(run, mode: str) -> None:
    setting = run.forward_ad
    if setting is False:
        run.out.checks.append(CheckResult("forward_ad", "skipped", _skipped_detail(run)))
        return
    try:
        if mode == "full" and run.full is not None:
            failed = forward_full(run)
        else:
            failed = forward_directional(run)
    except ForwardADUnsupported as exc:
        status = "skipped" if setting == "auto" else "error"
        run.out.checks.append(
            CheckResult("forward_ad", status, f"fn does not support forward-mode AD: {exc.reason}")
        )
        return
    except Exception as exc:  # noqa: BLE001
        status = "skipped" if setting == "auto" else "error"
        if status == "skipped":
            detail = forward_ad_reason(exception_text(exc))
        else:
            detail = f"forward-mode AD raised {describe_exception(exc)}"
        run.out.checks.append(CheckResult("forward_ad", status, detail))
        return
    detail = run.forward_detail  # full mode; directional once superseded
    run.out.checks.append(CheckResult("forward_ad", "failed" if failed else "passed", detail or mode))


def forward_full(run) -> bool:
    """Forward AD in full mode. Inputs whose backward Jacobian passed entry by entry are checked against
    it along ``FORWARD_DIRECTIONS`` Gaussian direction(s) (one forward-mode pass per direction for all of
    them: ``J·u`` from forward AD against ``J·u`` from the checked backward Jacobian, within autograd's
    round-off). An
    input whose backward failed, or a disagreement there, gets every forward column compared entry by
    entry with the finite differences, which is what names the wrong entries."""
    state = run.full
    rows = state.rows
    failed_any = False
    total = sum(n_coords(run.inputs[i]) * autograd_rows.row_count(run, k, rows[k]) for i in state.estimates for k in run.out_idx)
    kap = tolerances.kappa(total)
    verified = [i for i in state.estimates if state.input_passed.get(i)]
    per_entry = [i for i in state.estimates if i not in verified]
    run.forward_detail = "full, every column against the finite differences"
    if verified:
        if forward_against_backward(run, verified):
            run.forward_detail = (
                f"full: J·u along {FORWARD_DIRECTIONS} random direction{'s' if FORWARD_DIRECTIONS != 1 else ''} "
                "against the checked backward Jacobian"
                + (f"; every column of {', '.join(run.names[i] for i in per_entry)} against the finite "
                   "differences" if per_entry else "")
            )
            for i in verified:
                for k in run.out_idx:
                    full.record_screened(run, "forward_ad", i, k, rows[k], 0.0, True)
        else:
            per_entry = list(state.estimates)
            run.forward_detail = (
                "full: J·u disagreed with the checked backward Jacobian; every column compared with the "
                "finite differences"
            )
    if per_entry:  # fn runs again below: its latest call is no longer the pass kept
        run.dual_calls = -1
    for i in per_entry:
        est = state.estimates[i]
        if est is None:  # settled by the screen: the full stencil is needed now
            est = state.estimates[i] = full.full_numerics(run, i, rows)
        n_i = n_coords(run.inputs[i])
        cols_per_batch = max(1, EVALUATION_BATCH_ELEMENTS // (n_i + run.n_out))
        parts: dict[int, list] = {k: [] for k in run.out_idx}
        for start in range(0, n_i, cols_per_batch):
            stop = min(n_i, start + cols_per_batch)
            tangents = torch.zeros(stop - start, n_i, dtype=torch.float64)
            tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            cols, _ = jvp_columns(
                run.fn, autograd_rows.jvp_args(run), i, tangents, run.out_idx, run.rng_seed, run.mutates_inputs
            )
            for pos, k in enumerate(run.out_idx):
                parts[k].append(autograd_rows.project(run, k, rows[k], cols[pos]))
        for k in run.out_idx:
            a = torch.cat(parts[k])
            ref = state.reference[(i, k)] if state.reference is not None else None
            verdict, j_idx, r_idx = settle.judge(run, i, k, a, ref, est[k], state.extra[(i, k)], kap)
            failed_any |= full.record(run, "forward_ad", i, k, rows[k], a, verdict, True, j_idx, r_idx)
    return failed_any


def forward_against_backward(run, inputs: list[int]) -> bool:
    """Whether forward AD's ``J·u`` matches the backward Jacobian's (already checked) ``J·u``.

    Where the ±h screen listed every nonzero entry of the inputs' Jacobians (``screen.screen_candidates``),
    the products and scales are sums over those entries, all inputs at once; else input by input over
    the dense matrices."""
    state = run.full
    rows, analytic, reference, extra = state.rows, state.analytic, state.reference, state.extra
    sizes = [n_coords(run.inputs[i]) for i in inputs]
    # one tensor per input (make_dual copies a tangent that is a view into a larger storage)
    tangents = {
        i: torch.randn(FORWARD_DIRECTIONS, n, generator=run.gen, dtype=torch.float64) for i, n in zip(inputs, sizes)
    }
    cols, _ = jvp_directions(
        run.fn, autograd_rows.jvp_args(run), tangents, run.out_idx, run.rng_seed, run.mutates_inputs,
        autograd_rows.dual_memo(run), keep=True,
    )
    run.dual_calls = run.evaluator.calls  # the pass came after every numerical evaluation so far
    dtype = min((run.inputs[i].dtype for i in inputs), key=lambda dt: -tolerances.eps(dt))
    policy = tolerances.AnalyticAllowance(dtype, reference is not None)
    nondet_tol = run.options["nondet_tol"]
    sparse = None
    if reference is None and limits.TUNING.sparse_forward:
        sparse = screen.screen_candidates(run, inputs, sizes)
    # numpy on the host: the Jacobians are held there, and a numpy call costs a fraction of torch's
    u_norm = np.sqrt(np.stack([np.square(u.numpy()).sum(axis=1) for u in tangents.values()], axis=1))  # (d, inputs)
    if sparse is not None:
        limits.TUNING.record("sparse_forward", list(inputs))
        u_all = np.concatenate([u.numpy() for u in tangents.values()], axis=1)
    for pos, k in enumerate(run.out_idx):
        got = autograd_rows.project(run, k, rows[k], cols[pos])  # (d, r)
        if sparse is not None:
            # J·u and sum (u b)² over the nonzero entries b of the stacked (sum n_i, r) Jacobians
            j_idx, r_idx, b, row_rms = sparse[k]
            ub = u_all[:, j_idx] * np.where(np.isfinite(b), b, 0.0)  # unchecked entries (fn not finite) as 0
            r = got.shape[1]
            expected = np.stack([np.bincount(r_idx, weights=row, minlength=r) for row in ub])
            scale2 = np.stack([np.bincount(r_idx, weights=row * row, minlength=r) for row in ub])
            extra_k = np.array([[extra[(i, k)]] for i in inputs])
            if not jvp_within(got.numpy(), expected, scale2, u_norm, row_rms, extra_k, policy, None, nondet_tol):
                return False
            continue
        # dense: input by input over the matrices
        if not _dense_within(got, tangents, analytic, reference, extra, k, inputs, u_norm, policy, nondet_tol):
            return False
    return True


def _dense_within(got, tangents, analytic, reference, extra, k, inputs, u_norm, policy, nondet_tol) -> bool:
    """``forward_against_backward``'s dense comparison of output ``k``: ``J·u`` and ``sum (u b)²`` summed over
    the inputs' matrices ``b`` (the float64 reference's where there is one), in numpy."""
    got = screen.host_array(got)
    expected, scale2 = np.zeros_like(got), np.zeros_like(got)
    measured2 = np.zeros_like(got) if reference is not None else None
    rms_parts = []
    with np.errstate(all="ignore"):
        for i, u in tangents.items():
            u = u.numpy()
            a = screen.host_array(analytic[(i, k)])
            ref = screen.host_array(reference[(i, k)]) if reference is not None else None
            base = ref if ref is not None else a
            product = u @ base
            if not np.isfinite(product).all():  # entries left unchecked (fn not finite there)
                base = np.where(np.isfinite(base), base, 0.0)
                product = u @ base
            expected += product
            b2 = np.square(base)
            u2 = np.square(u)
            scale2 += u2 @ b2
            rms_parts.append(np.sqrt(b2.mean(axis=0)))
            if measured2 is not None:
                gap = a - ref  # NaN as 0; an inf squares to inf either way
                measured2 += u2 @ np.square(np.where(np.isnan(gap), 0.0, gap))
        extra_k = np.array([[extra[(i, k)]] for i in inputs], dtype=np.float64)
        measured = np.sqrt(measured2) if measured2 is not None else None
        row_rms = np.stack(rms_parts)  # (inputs, r)
    return jvp_within(got, expected, scale2, u_norm, row_rms, extra_k, policy, measured, nondet_tol)


def forward_directional(run) -> bool:
    if run.directional is None:
        raise ForwardADUnsupported("no directional numerics to compare with", "no directional numerics to compare with")
    a = run.jvp_projections
    if isinstance(a, Exception):
        raise a
    if run.directional_superseded:
        return forward_against_backward_directional(run, directional.per_input_projections(run) if run.jvp_joint_low else a)
    # the jvp's round-off is judged like the backward's: same scale, same measured float32 error; the
    # backward's screen may have stopped the stencil early, the jvp is screened (or not) on its own
    a, verdict = directional.judge_projections(run, a)
    return directional.record_directional(run, "forward_ad", a, verdict, True)


def forward_against_backward_directional(run, a: torch.Tensor) -> bool:
    """Forward AD's ``v·J·u`` against the backward's ``(v·J)·u``, once the backward was verified element by
    element and the finite differences along u were found off: both carry autograd's round-off, so each
    gets the allowance once."""
    state = run.directional
    backward = directional.project_directional(run, state.grads, state.u)
    allow, _ = allowance.allowance_directional(run, screen=False)
    diff = (a - backward).abs()
    tol = 2 * allow
    ok = torch.isfinite(a) & (diff <= tol)
    none = torch.zeros_like(ok)
    verdict = Verdict(
        failed=~ok, kink=none, unchecked=none, numerical=backward, allowed=tol,
        ratio=torch.where(tol > 0, diff / tol.clamp_min(1e-300), torch.zeros_like(diff)), sharp_kink=none,
        left=backward, right=backward,
    )
    run.forward_detail = "directional, against the backward's v·J·u (verified element by element)"
    return directional.record_directional(run, "forward_ad", a, verdict, True)


def jvp_within(got, expected, scale2, u_norm, row_rms, extra, policy, measured, nondet_tol) -> bool:
    """Whether forward AD's ``J·u`` (``got``, ``(d, r)``) equals the checked backward Jacobian's ``J·u``
    (``expected``) within autograd's round-off allowance (twice it without a float64 run: both sides carry
    it) of each column's scale ``||u_i|| (row rms_i + extra_i)`` over inputs ``i`` plus
    ``sqrt(scale2)``, ``scale2 = sum (u b)²`` over the entries ``b``: ``|b| + c`` bounds an entry's scale as in
    the backward check, and ``|| u * (|b| + c) || <= || u * b || + c || u ||``. Numpy arrays."""
    with np.errstate(all="ignore"):
        scale = u_norm @ (row_rms + extra) + np.sqrt(scale2)
        allow = policy.allowance(scale, measured) * (1.0 if measured is not None else 2.0)
        if nondet_tol:
            allow = allow + nondet_tol * scale.clip(min=1.0)
        return bool((abs(got - expected) <= allow).all())
