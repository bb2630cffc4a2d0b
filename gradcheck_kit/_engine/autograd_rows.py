"""Autograd's side: the Jacobian's rows (vjp, batched or through functorch), their projections on v, the
float64 reference run, v·J per input for directional checks, and forward AD's v·J·u along directions."""

from __future__ import annotations

from typing import Sequence

import torch

from gradcheck_kit._engine import context, graph, limits, one_vector, reductions, setup, tolerances
from gradcheck_kit._engine.analytic import (
    _check_grad_meta, DualMemo, forward_pass, GradientMetaError, jvp_columns, rows_from_coords, vjp_rows, vjp_rows_functorch,
)
from gradcheck_kit._engine.evaluate import as_outputs, describe_exception, fresh_args, seed_global_rng
from gradcheck_kit._engine.finite_diff import _rms
from gradcheck_kit._engine.limits import FUNCTORCH_ELEMENTS, JACOBIAN_ENTRIES
from gradcheck_kit._inputs import coords, from_coords, n_coords


def row_count(run, k: int, kind: str) -> int:
    return run.f0[run.out_idx.index(k)].numel() if kind == "jacobian" else 1


def project(run, k: int, kind: str, values: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """``(B, n_out_coords)`` -> ``(B, r)``."""
    if kind == "jacobian":
        return values
    v = run.v[k].abs() if absolute else run.v[k]
    return (values @ v).unsqueeze(1)


def row_vectors(run, k: int, kind: str, zero_row: bool = False) -> torch.Tensor:
    """The ``grad_output``s of output ``k``'s rows as ``(r, n_out_coords)`` float64; ``zero_row``: one more
    row of zeros after them."""
    if kind == "jacobian":
        n = run.f0[run.out_idx.index(k)].numel()
        return torch.eye(n + int(zero_row), n, dtype=torch.float64)
    v = run.v[k].unsqueeze(0)
    return torch.cat([v, v.new_zeros(1, v.shape[1])]) if zero_row else v


def analytic_full(
    run, rows: dict[int, str], leaves: dict[int, torch.Tensor], outs, args: Sequence | None = None,
    zero_rows: dict | None = None,
) -> tuple[dict, dict, str]:
    """Autograd's rows: per (input, output) ``(n_i, r_k)`` float64, and whether a gradient flowed.

    ``args``: the call that built ``outs`` (its tensors are ``leaves``); with many rows the rows come
    from ``vmap`` over ``torch.func.vjp`` of the same call where it runs and reproduces ``outs``.
    ``zero_rows``: where every output's rows are batched anyway (two or more), one more row of zeros
    goes with them, and this dict receives per (input, output) the gradient of that zero
    ``grad_output`` (the structural check's zero_grad_output, without a backward of its own)."""
    order = list(run.wrt)
    leaf_list = [leaves[i] for i in order]
    fold = zero_rows is not None and all(row_count(run, k, rows[k]) >= 2 for k in run.out_idx)
    vectors = {k: row_vectors(run, k, rows[k], fold) for k in run.out_idx}
    n_rows = sum(v.shape[0] for v in vectors.values())
    signed = one_vector.signed_vectors(run, rows, leaf_list, outs, n_rows) if fold else None
    if signed is not None:  # (not counted in n_rows: the rows' path is chosen as without them)
        vectors = {k: torch.cat([vectors[k], signed[k]]) for k in vectors}
    results, flowed, path = analytic_rows(run, order, leaf_list, vectors, n_rows, outs, args)
    if signed is not None:
        run.signed_rows = {key: g[:, -2:] for key, g in results.items()} if path == "batched" else None
        results = {key: g[:, :-2] for key, g in results.items()}
    if fold:
        for key, g in results.items():
            zero_rows[key] = g[:, -1]
            results[key] = g[:, :-1]
    return results, flowed, path


def analytic_rows(run, order, leaf_list, vectors, n_rows, outs, args) -> tuple[dict, dict, str]:
    results, flowed = {}, {}
    path = "single"
    if (
        args is not None
        and not run.mutates_inputs
        and n_rows * sum(leaf.numel() for leaf in leaf_list) <= FUNCTORCH_ELEMENTS
        and (limits.TUNING.functorch_rows <= n_rows or (n_rows >= LOOP_ROWS and _functorch_runs(run, outs)))
    ):
        batched = vjp_rows_functorch(run.fn, args, order, outs, vectors, run.rng_seed)
        if batched is not None:
            for k, (per_leaf, flow) in batched.items():
                for i, g, f in zip(order, per_leaf, flow):
                    results[(i, k)] = g.T
                    flowed[(i, k)] = f
            return results, flowed, "batched (vmap over torch.func.vjp)"
    for k in run.out_idx:
        try:
            per_leaf, flow, p = vjp_rows(outs[k], leaf_list, vectors[k])
        except GradientMetaError as exc:
            raise context.Failure(f"autograd returned a malformed gradient for output {k}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a failing backward is reported
            raise context.Failure(f"backward of output {k} raised {describe_exception(exc)}", exc) from None
        path = p if p not in ("single", "none") else path
        for i, g, f in zip(order, per_leaf, flow):
            results[(i, k)] = g.T  # (n_i, r): a view, no copy
            flowed[(i, k)] = f
    return results, flowed, path


#: rows from which a graph holding custom Functions gets them through functorch (``_functorch_runs``): one more
#: forward and a batched backward cost less than this many backwards
LOOP_ROWS = 4


def _functorch_runs(run, outs) -> bool:
    """Whether the graph holds custom Functions, each with the vmap rule torch generates from its forward and
    backward (``generate_vmap_rule``: both written to run batched): ``vjp_rows`` would run one backward per
    row through them, where vmap over ``torch.func.vjp`` batches the rows (functorch raises where a backward
    cannot run batched, and the rows then come one at a time)."""
    classes = run.graph.classes if outs is run.outs else graph.python_function_classes([outs[k] for k in run.out_idx])
    return bool(classes) and all(getattr(cls, "generate_vmap_rule", False) is True for cls in classes)


def reference_leaves(run, perturb: int | None = None, uniform: bool = False, factor: float = 1.0):
    """float64 copies of the inputs with a fresh graph, for the autograd round-off allowance; ``perturb``:
    input moved by ``factor`` times ``CAP_EPS`` roundings of its own dtype at unit scale
    (``allowance.full_conditioning``, ``allowance.cancellation``), signs alternating or, ``uniform``, all
    positive (``setup.nudged``)."""
    args = [setup.to_double(t) for t in run.inputs]
    if perturb is not None:
        # CAP_EPS roundings: intermediates up to that many times the input's unit scale (((10 + 1/(x + 3))²
        # - 71)² forms 1280 from x = 0, and rounds it by eps·1280, 76 roundings of x at unit scale)
        e = factor * tolerances.CAP_EPS * tolerances.eps(run.inputs[perturb].dtype)
        args[perturb] = setup.nudged(args[perturb], e, uniform)
    for i in run.grad_positions:
        args[i] = args[i].detach().clone().requires_grad_(True)
    leaves = {i: args[i] for i in run.wrt}
    seed_global_rng(run.rng_seed)
    with torch.enable_grad():
        outs = as_outputs(run.fn(*args))
    run.extra_evaluations += 1
    return args, leaves, outs


def full_rows(run) -> dict[int, str]:
    rows = {}
    for k in run.out_idx:
        n_k = run.f0[run.out_idx.index(k)].numel()
        rows[k] = "jacobian" if run.n_in * n_k <= JACOBIAN_ENTRIES else "projected"
    return rows


def f0_rows(run, pos: int, k: int, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``f(x)`` in output ``k``'s rows, ``|f(x)|`` projected on ``|v|`` (the noise model's size) and the
    rms of that (cached per output and kind of rows)."""
    key = ("f0 rows", k, kind)
    if key not in run.rms_cache:
        if kind == "jacobian":  # the rows are the output's coordinates
            f0 = run.f0[pos]
            fmag = f0.abs()
        else:
            f0 = project(run, k, kind, run.f0[pos].unsqueeze(0))[0]
            fmag = project(run, k, kind, run.f0[pos].abs().unsqueeze(0), absolute=True)[0]  # (r,)
        run.rms_cache[key] = (f0, fmag, _rms(fmag))
    return run.rms_cache[key]


def output_sizes(run, k: int) -> tuple[float, float, float]:
    """``(sum |f·v|, f·f, v·v)`` of output k at the inputs (the noise model's size, the natural scale's
    sums), from autograd's forward and v in the output's own dtype, summed as ``reductions.size_sq`` says (sizes,
    not differences: the output's rounding does not matter), once per check."""
    key = ("output sizes", k)
    if key not in run.rms_cache:
        f, v = coords(run.outs[k]), coords(run.out_vectors[k])
        run.rms_cache[key] = (reductions.size_abs_dot(f, v), reductions.size_sq(f), reductions.size_sq(v))
    return run.rms_cache[key]


def vjp_vectors(run, leaves: dict[int, torch.Tensor], outs, raw: dict | None = None) -> tuple[dict, dict]:
    """g[(i, k)] = v_k · d out_k / d x_i as real coordinates (in the gradient's dtype), and whether a
    gradient flowed.

    One backward per output (``vjp_rows``' single-row case, without its batching machinery and copies);
    ``raw`` receives autograd's own gradients (``None`` where none flowed), for the re-entrancy check.
    """
    grads, flowed = {}, {}
    order = list(run.wrt)
    leaf_list = [leaves[i] for i in order]
    for k in run.out_idx:
        out = outs[k]
        result: tuple = (None,) * len(order)
        if out.requires_grad:
            grad_output = run.drawn_vectors.get(k)
            if grad_output is None or grad_output.dtype != out.dtype:  # given, or a float64 reference run
                grad_output = rows_from_coords(run.v[k].unsqueeze(0), out)[0]
            try:
                result = torch.autograd.grad(
                    out, leaf_list, grad_outputs=grad_output, retain_graph=True, allow_unused=True
                )
            except Exception as exc:  # noqa: BLE001
                raise context.Failure(f"backward of output {k} raised {describe_exception(exc)}", exc) from None
        for i, leaf, g in zip(order, leaf_list, result):
            flowed[(i, k)] = g is not None
            if raw is not None:
                raw[(i, k)] = None if g is None else g.detach()
            if g is None:
                grads[(i, k)] = torch.zeros(n_coords(leaf), dtype=torch.float64)
                continue
            try:
                _check_grad_meta(g.unsqueeze(0), leaf)
            except GradientMetaError as exc:
                raise context.Failure(f"autograd returned a malformed gradient for output {k}: {exc}") from None
            # coordinates in the gradient's own dtype (exact in float64): the products with u and the
            # sums of squares convert them chunk by chunk, without a full-size float64 copy
            grads[(i, k)] = coords(g.detach()).cpu()
            if i in run.nonfinite:  # not checked there, as in full mode (their u is 0: NaN·0 would spread)
                grads[(i, k)] = grads[(i, k)].index_fill(0, run.nonfinite[i], 0.0)
    return grads, flowed


def dual_memo(run) -> DualMemo:
    """The check's :class:`~analytic.DualMemo`, told that fn's passes need grad where its numerical
    evaluations did (``evaluator.grad_inside``)."""
    if run.evaluator is not None and run.evaluator.grad_inside is not None:
        run.dual.grad = True
    return run.dual


def jvp_args(run) -> list:
    """The inputs as given for a forward-mode pass (fresh copies when fn modifies its inputs)."""
    if not run.mutates_inputs:
        return run.analytic_args
    return fresh_args(run.inputs, run.wrt, run.grad_positions)[0]


def jvp_directional(run, i: int, tangents: torch.Tensor) -> list[torch.Tensor]:
    """``J_i·u`` per output, ``(d, n_out_coords)``: one forward-mode pass for one direction (no vmap
    wrapper, coordinates in the output's dtype), else ``jvp_columns`` (float64)."""
    if tangents.shape[0] != 1:
        cols, _ = jvp_columns(
            run.fn, jvp_args(run), i, tangents, run.out_idx, run.rng_seed, run.mutates_inputs,
            vmap=run.evaluator.vmap_failed is None, memo=dual_memo(run),
        )
        return cols
    args = jvp_args(run)
    primal = args[i]
    tangent = from_coords(tangents, primal.shape, primal.is_complex())[0].to(device=primal.device, dtype=primal.dtype)
    cols = forward_pass(run.fn, args, {i: tangent}, run.out_idx, run.rng_seed, run.mutates_inputs, dual_memo(run))
    return [c.unsqueeze(0) for c in cols]


def jvp_projection(run, u: dict[int, torch.Tensor]) -> torch.Tensor | Exception:
    """``v·J·u`` per output and direction ``(n_out, d)`` from forward-mode passes, or the exception they
    raised (``forward_check`` reports it). Where fn cannot run under vmap, one pass per direction moves every
    input (``jvp_joint``); in low precision the sum inside fn rounds unlike the backward's, so
    ``run.jvp_joint_low`` says that a failing judgement is to be made again from ``jvp_per_input``."""
    run.jvp_joint_low = False
    try:
        if run.evaluator.vmap_failed is not None and len(run.wrt) > 1:  # one call of fn per pass
            joint = jvp_joint(run, u)
            if joint is not None:
                run.jvp_joint_low = not all(run.inputs[i].dtype in (torch.float64, torch.complex128) for i in run.wrt)
                return joint
    except Exception as exc:  # noqa: BLE001 - reported by forward_check, as if raised there
        return exc
    return jvp_per_input(run, u)


def jvp_per_input(run, u: dict[int, torch.Tensor]) -> torch.Tensor | Exception:
    """``jvp_projection`` from passes input by input, their projections summed in float64."""
    try:
        a = torch.zeros(len(run.out_idx), run.n_directions, dtype=torch.float64)
        for i in run.wrt:  # J·u = sum over inputs of J_i·u_i
            cols = jvp_directional(run, i, u[i])
            part = project_tangents(run, cols)
            # a finite projection proves finite tangents (a non-finite one never drops out of it: 0·inf
            # and 0·NaN are NaN): the tangents are counted only where it is not
            if not bool(torch.isfinite(part).all()) and any(reductions.nonfinite_count(c) for c in cols):
                # u's power-of-two scales (|x| rounded) can carry a tangent past the largest float32
                # where the outputs are large too: J·u = s·J·(u/s), both exact for a power of two s
                s = float(u[i].abs().max())
                if s > 1.0:
                    part = s * project_tangents(run, jvp_directional(run, i, u[i] / s))
            a += part
        return a
    except Exception as exc:  # noqa: BLE001 - reported by forward_check, as if raised there
        return exc


def jvp_joint(run, u: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """``v·J·u`` ``(n_out, d)`` from one forward-mode pass per direction moving every input together; None
    where it is not finite (the pass per input rescales its tangents)."""
    args = jvp_args(run)
    a = torch.zeros(len(run.out_idx), run.n_directions, dtype=torch.float64)
    for di in range(run.n_directions):
        tangents = {
            i: from_coords(u[i][di:di + 1], args[i].shape, args[i].is_complex())[0].to(
                device=args[i].device, dtype=args[i].dtype
            )
            for i in run.wrt
        }
        cols = forward_pass(run.fn, args, tangents, run.out_idx, run.rng_seed, run.mutates_inputs, dual_memo(run))
        for pos, col in enumerate(cols):
            a[pos, di] = reductions.dot64(col, run.v[run.out_idx[pos]])
    return a if bool(torch.isfinite(a).all()) else None


def project_tangents(run, cols: list[torch.Tensor]) -> torch.Tensor:
    """``v·col`` per output and direction ``(n_out, d)``, in float64."""
    part = torch.zeros(len(run.out_idx), run.n_directions, dtype=torch.float64)
    for pos, col in enumerate(cols):
        for di in range(col.shape[0]):
            part[pos, di] = reductions.dot64(col[di], run.v[run.out_idx[pos]])
    return part
