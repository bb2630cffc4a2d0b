"""Autograd's round-off allowance, both modes: the scale of each derivative (its own size, the rms of its
row and of every entry of its output, the natural size |out|/|x|), the policy of ``tolerances.AnalyticAllowance``
applied to it, and the conditioning that raises the cap where a float64 run measured an ill-conditioned
float32 derivative.

Both modes go through the same steps, written once: given tolerances replace everything (``given``);
else the policy of the coarsest differentiated dtype, with the part measured against a float64 run where
one exists; where that part reaches the cap (``capped``), the conditioning (one float64 forward and
backward per low-precision input, ``rounding_changes``) may raise it; the natural size (``natural_size``)
joins the scale and leaves the floor's (``floor_scale``). Full mode applies them entry by entry
(``allowance_full``), directional mode to the norms of ``(v·J) ∘ |u|`` (``allowance_along``)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from gradcheck_kit._engine import autograd_rows, reductions, tolerances
from gradcheck_kit._engine import nonfinite as _nonfinite
from gradcheck_kit._engine.finite_diff import Estimates, _rms
from gradcheck_kit._inputs import coords, coords64, is_differentiable
from gradcheck_kit.report import Note, NoteCode


def given(options: dict, est: Estimates | None, shape: tuple) -> torch.Tensor | None:
    """The allowance of given tolerances, ``atol + rtol·|numerical|``, or None where none were given. A
    screen (``est`` None) has not computed the full stencil's value that ``rtol`` scales: ``atol`` alone."""
    if options["atol"] is None and options["rtol"] is None:
        return None
    atol = options["atol"] or 0.0
    if est is None:
        return torch.full(shape, float(atol), dtype=torch.float64)
    return atol + (options["rtol"] or 0.0) * est.central.abs().nan_to_num(0.0)


def capped(policy: tolerances.AnalyticAllowance, scale: torch.Tensor, measured: torch.Tensor | None) -> bool:
    """Whether a measured round-off reaches the policy's cap somewhere (the conditioning may raise it)."""
    return measured is not None and bool(policy.capped(scale, measured).any())


def natural_size(v_norm: float, out_rms: float, x_rms: float) -> float:
    """A derivative's natural size ``|v|·rms(out) / max(rms(x), 1)``: round-off of terms that cancel to an
    exact zero (a shift-invariant input, say) is of this order even where the Jacobian is zero."""
    return v_norm * out_rms / max(x_rms, 1.0)


def natural_scale(run, i: int, k: int, kind: str) -> float:
    """``natural_size`` of (input i, output k) in full mode, from f(x) in the numerics' dtype."""
    pos = run.out_idx.index(k)
    if ("x", i) not in run.rms_cache:  # numpy: full mode's inputs are small
        x = coords64(run.inputs[i]).numpy()
        run.rms_cache[("x", i)] = _rms(np.where(np.isfinite(x), x, 0.0))
    if ("out", k) not in run.rms_cache:
        run.rms_cache[("out", k)] = float(_rms(run.f0[pos]))
    out_rms, x_rms = run.rms_cache[("out", k)], run.rms_cache[("x", i)]
    v_norm = 1.0 if kind == "jacobian" else float(run.v[k].norm())
    return natural_size(v_norm, out_rms, x_rms)


def global_scales(run, rows: dict, jac: dict, inputs: Sequence[int], prepared: dict | None = None) -> dict:
    """Per (input, output): the rms of every Jacobian entry of that output (all inputs) plus the
    natural scale; added to each entry's own scale so exact zeros get a round-off allowance."""
    extra = {}
    prepared = prepared or {}

    def sumsq(i, k):
        if i in prepared and k in prepared[i].sumsq:
            return prepared[i].sumsq[k]
        return reductions.sum_squares(jac[(i, k)])

    for k in run.out_idx:
        total = sum(sumsq(i, k) for i in run.wrt if (i, k) in jac)
        count = sum(jac[(i, k)].numel() for i in run.wrt if (i, k) in jac)
        rms = (total / max(count, 1)) ** 0.5
        for i in inputs:
            natural = natural_scale(run, i, k, rows[k])
            run.natural_parts[(i, k)] = natural
            extra[(i, k)] = rms + natural
    return extra


def allowance_full(
    run, i: int, k: int, a: torch.Tensor, ref: torch.Tensor | None, est: Estimates, extra: float, idx: tuple
) -> torch.Tensor:
    """Autograd's allowance on the entries ``idx`` (rows, columns) of the ``(n_i, r)`` matrices."""
    fixed = given(run.options, est, ())
    if fixed is not None:
        return fixed
    base = ref if ref is not None else a
    base = base.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    row_rms = base.square().mean(dim=0).sqrt()
    j_idx, r_idx = idx
    scale = base[j_idx, r_idx].abs() + row_rms[r_idx] + extra
    measured = (a[j_idx, r_idx] - ref[j_idx, r_idx]).abs().nan_to_num(0.0) if ref is not None else None
    policy = tolerances.AnalyticAllowance(run.inputs[i].dtype, ref is not None)
    conditioning = None
    if capped(policy, scale, measured):
        cond = full_conditioning(run)
        if cond is not None:
            conditioning = cond[(i, k)][j_idx, r_idx]
    floor_scale = floor_scale_of(run, scale, i, k, measured)
    forward = forward_rounding(run, i, k) if measured is not None else None
    return policy.allowance(scale, measured, conditioning, floor_scale, forward) + run.options["nondet_tol"]


def forward_rounding(run, i: int, k: int) -> float | None:
    """The low-precision forward's measured rounding of output k (|f64 - low| at x) over input i's unit
    scale: the absolute round-off its derivatives carry from intermediates that cancel (``AnalyticAllowance``)."""
    if k not in run.out_idx or len(run.forward_rounding) != len(run.out_idx):
        return None
    x_scale = max(float(_rms(coords64(run.inputs[i]))), 1.0)
    return run.forward_rounding[run.out_idx.index(k)] / x_scale


def floor_scale_of(run, scale: torch.Tensor, i: int, k: int, measured) -> torch.Tensor | None:
    """``scale`` without the natural size of (input i, output k) where a float64 run measured the
    round-off (``AnalyticAllowance.allowance``'s ``floor_scale``), else None (the floor keeps it)."""
    if measured is None:
        return None
    floor = scale - run.natural_parts.get((i, k), 0.0)
    return np.maximum(floor, 0.0) if isinstance(floor, np.ndarray) else floor.clamp_min(0.0)


def full_conditioning(run) -> dict | None:
    """Per (input, output): how far the float64 derivatives move when each low-precision input moves
    by ``CAP_EPS`` roundings of its dtype at unit scale (``64·eps·max(|x|, 1)``, alternating signs),
    summed over those inputs: the error a derivative computed in that dtype carries from rounding its
    inputs and intermediates up to 64 times their size. Computed once per check, on the first entry
    whose measured float32 error exceeds the allowance's cap (one float64 forward and backward per
    such input); ``None`` where that fails."""
    if run.conditioning_rows is not False:
        return run.conditioning_rows
    rows = run.full.rows
    total = rounding_changes(
        run, run.full.reference, lambda leaves, outs: autograd_rows.analytic_full(run, rows, leaves, outs)[0]
    )
    run.conditioning_rows = total
    if total:
        run.out.notes.append(Note(
            "some float32 derivatives differ from float64 autograd by more than 64 eps; their allowance "
            "was raised to how far the float64 derivatives move when the inputs move by 64 float32 "
            "roundings (an ill-conditioned expression rounds its float32 derivatives that much)",
            NoteCode.CONDITIONING, ("full",),
        ))
    return run.conditioning_rows


def rounding_changes(run, reference: dict, derive: Callable) -> dict | None:
    """Per key of ``reference`` (the float64 derivatives), how far ``derive(leaves, outs)`` moves from it
    when each low-precision input in turn moves by ``CAP_EPS`` roundings at unit scale, summed over those
    inputs (``full_conditioning``, ``directional_conditioning``); None where that fails or finds nothing.

    Each input moves twice: signs alternating, and all positive with the change over ``sqrt(n)`` (n its
    coordinates), the larger counting. One pattern alone misses what it cancels: alternating signs leave
    ``d/dy sum(x·y) = sum(x)`` unmoved at ``x = (1, a, -1, a)`` while float32 rounds that sum at the size of
    its terms, and uniform signs leave a shift-invariant fn (softmax) unmoved. Over ``sqrt(n)``: a sum's
    rounding grows as the root of its length, not as the length."""
    low = [j for j, t in enumerate(run.inputs) if is_differentiable(t) and tolerances.eps(t.dtype) > 1e-15]
    try:
        sizes = {
            (j, uniform): _changes(run, reference, derive, j, uniform)
            for j in low for uniform in ((False, True) if coords(run.inputs[j]).numel() > 1 else (False,))
        }
    except Exception:  # noqa: BLE001 - no conditioning: the capped allowance stands
        return None
    return _combined(run, sizes) or None


def _changes(run, reference: dict, derive: Callable, j: int, uniform: bool) -> dict:
    """``|derive - reference|`` per key with input j moved by ``setup.nudged`` (one float64 forward and backward)."""
    _, leaves, outs = autograd_rows.reference_leaves(run, perturb=j, uniform=uniform)
    return {key: (moved - reference[key]).abs().nan_to_num(0.0) for key, moved in derive(leaves, outs).items()}


def cancellation(run, clears: Callable[[dict], bool]) -> dict | None:
    """float64's counterpart of ``full_conditioning``, on a full check with no float64 reference run (every
    differentiated input float64): per (input, output) how far float64 autograd's rows move when each
    float64 input in turn moves by ``CAP_EPS`` of its roundings (``rounding_changes``' two sign patterns),
    summed over those inputs, where they move smoothly; None where that fails or finds nothing.

    A derivative that is a sum of terms cancelling far below their size (``d/dy mean(x·y) = mean(x)`` at
    ``y = 0`` with ``x`` summing to about zero) is rounded by both autograd and the finite differences at
    ``eps`` of its terms, which neither its own size nor ``|out| / |x|`` shows; moving the inputs by a few
    roundings moves it by that much. Smoothly: the move at twice the roundings is 1.5 to 2.5 times the
    move (signed, against the rows made the same way at the inputs); a jump (a kink or tie within those
    roundings: relu at 0, a max of tied values) is no rounding and counts 0.

    Made on a failed comparison only, in two steps: the moves (one forward and backward at the inputs, and
    one per input and sign pattern), then, where ``clears`` (given their sizes, an upper bound of the
    result) says they could clear something, the same at twice the roundings. Each step once per check."""
    full = run.full
    if full is None or full.reference is not None:
        return None
    rows = full.rows
    derive = lambda leaves, outs: autograd_rows.analytic_full(run, rows, leaves, outs)[0]  # noqa: E731
    return _probe(run, full.rounding_probe, derive, clears)


def _probe(run, store: dict, derive: Callable, clears: Callable[[dict], bool]) -> dict | None:
    """``cancellation``'s two steps, their results kept in ``store``."""
    if "once" not in store:
        store["once"] = _moves(run, store, derive, 1.0)
    once = store["once"]
    if not once or not clears(_combined(run, {key: _abs(moved) for key, moved in once.items()})):
        return None
    if "smooth" not in store:
        twice = _moves(run, store, derive, 2.0)
        store["smooth"] = None if twice is None else _combined(run, {
            key: {
                part: torch.where((twice[key][part] - 2 * c).abs() <= c.abs() / 2, c.abs(), torch.zeros_like(c))
                for part, c in moved.items()
            }
            for key, moved in once.items()
        })
        if store["smooth"]:
            run.out.notes.append(CANCELLATION_NOTE)
    return store["smooth"] or None


#: roundings of the largest value a check knows (``known_size``) beyond which a float64 error is no rounding
#: the probe could explain (``cancellation``), as the staircase probe reads float64's own scatter
KNOWN_SIZE_ROUNDINGS = 2.0**20


def rounding_reach(run) -> float:
    """``KNOWN_SIZE_ROUNDINGS`` float64 roundings of the largest value the full check knows without a call of
    fn: every float64 input, output and derivative of autograd, and 1. A failed entry further than this from
    its numerical value is left to the other second opinions: the probe's calls are not made for it."""
    probe = run.full.rounding_probe
    if "reach" not in probe:
        values = [coords64(run.inputs[j]) for j in _own_inputs(run)] + list(run.f0) + list(run.full.analytic.values())
        largest = max([1.0] + [float(t.nan_to_num(0.0, 0.0, 0.0).abs().max()) for t in values if t.numel()])
        probe["reach"] = KNOWN_SIZE_ROUNDINGS * tolerances.eps(torch.float64) * largest
    return probe["reach"]


def cancellation_calls(run, probe: dict) -> int:
    """The calls of fn (each with a backward) that ``cancellation`` may still make with ``probe`` (its
    ``rounding_probe``; 0 once made)."""
    patterns = sum(2 if coords(run.inputs[j]).numel() > 1 else 1 for j in _own_inputs(run))
    return (0 if "smooth" in probe else patterns) + (0 if "once" in probe else patterns + 1)


def _own_inputs(run) -> list[int]:
    """The float64 (and complex128) tensor inputs, which ``cancellation`` moves."""
    return [j for j, t in enumerate(run.inputs) if is_differentiable(t) and tolerances.eps(t.dtype) <= 1e-15]


def _moves(run, probe: dict, derive: Callable, factor: float) -> dict | None:
    """Per (float64 input, uniform): the signed move of ``derive``'s derivatives per (input, output) when that
    input moves by ``factor·CAP_EPS`` roundings (``setup.nudged``), against those made the same way at the
    inputs (kept in ``probe``); None where a run fails."""
    moves = {}
    if not _own_inputs(run):
        return None
    try:
        if "base" not in probe:
            probe["base"] = derive(*autograd_rows.reference_leaves(run)[1:])
        base = probe["base"]
        for j in _own_inputs(run):
            for uniform in (False, True) if coords(run.inputs[j]).numel() > 1 else (False,):
                _, leaves, outs = autograd_rows.reference_leaves(run, perturb=j, uniform=uniform, factor=factor)
                moved = derive(leaves, outs)
                moves[(j, uniform)] = {part: (moved[part] - base[part]).nan_to_num(0.0) for part in moved}
    except Exception:  # noqa: BLE001 - no probe: the allowance stands
        return None
    return moves


def _abs(moved: dict) -> dict:
    return {part: c.abs() for part, c in moved.items()}


def _combined(run, sizes: dict) -> dict:
    """Per (input, output): over the moved inputs j, the sum of the larger of the alternating move and the
    uniform one over ``sqrt(n_j)`` (``rounding_changes``)."""
    total: dict = {}
    for (j, uniform), moved in sizes.items():
        if uniform:
            continue
        partner = sizes.get((j, True))
        root = math.sqrt(coords(run.inputs[j]).numel())
        for part, c in moved.items():
            c = c if partner is None else torch.maximum(c, partner[part] / root)
            total[part] = c if part not in total else total[part] + c
    return total


CANCELLATION_NOTE = Note(
    "some float64 derivatives differ from the finite differences by more than their allowance, by no more "
    "than 4 times how far float64 autograd's derivatives move when the inputs move by 64 roundings: their "
    "allowance was raised to that (a sum whose terms cancel far below their size rounds at the size of its terms)",
    NoteCode.CONDITIONING, ("float64",),
)


def directional_own_scale(run) -> torch.Tensor:
    """Per output ``(n_out, 1)``: ``||(v·J) ∘ |u| ||`` of autograd's gradients (0 where not finite)."""
    scale = torch.zeros(len(run.out_idx), 1, dtype=torch.float64)
    for pos, k in enumerate(run.out_idx):
        sums = [run.directional_square_sums.get((i, k)) for i in run.wrt]
        if all(s is not None for s in sums):
            scale[pos] = math.sqrt(max(sum(float(s) for s in sums), 0.0))
    return torch.nan_to_num(scale, nan=0.0, posinf=0.0)


def directional_dtype(run) -> torch.dtype:
    return min((run.inputs[i].dtype for i in run.wrt), key=lambda dt: -tolerances.eps(dt))


def allowance_directional(run, screen: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd's allowance and scale per ``(n_out, d)`` value; backward and jvp share them.

    ``screen``: what the +-h screen may allow, never more than the full comparison: with given tolerances
    ``atol`` alone (``rtol`` scales the full stencil's value), for low-precision inputs the floor that
    ``AnalyticAllowance`` always allows (the part measured against a float64 autograd run only adds).
    ``screen="measured"``: the screen's second try for low-precision inputs, with that measured part (the
    full comparison's allowance, the float64 run made for it).
    """
    key = screen if screen == "measured" else ("screen" if screen else "full")
    if key not in run.directional_allowance:
        state = run.directional
        run.directional_allowance[key] = compute_allowance_directional(
            run, state.grads, None if screen is True else state.grads_ref, state.u,
            None if screen else state.numerics.estimates,
        )
    return run.directional_allowance[key]


def compute_allowance_directional(run, grads, ref, u, est) -> tuple[torch.Tensor, torch.Tensor]:
    """``est`` None: the screen's allowance (see ``allowance_directional``)."""
    n_out = len(run.out_idx)
    scale, own, measured = directional_scales(run, grads, ref, u)
    shape = (n_out, run.n_directions)
    fixed = given(run.options, est, shape)
    if fixed is not None:
        return fixed, scale.expand(*shape)
    return allowance_along(run, scale, own, measured, ref, u, est).expand(*shape), scale.expand(*shape)


def directional_scales(run, grads, ref, u) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per output ``(n_out, 1)``: the scale ``||(v·J) ∘ |u| ||`` (of the float64 run's where given) plus the
    largest natural size, the scale without it (the floor's where round-off is measured), and the
    measured part ``||(v·J - v·J_64) ∘ |u| ||`` (None without a float64 run)."""
    n_out = len(run.out_idx)
    scale = torch.zeros(n_out, 1, dtype=torch.float64)
    measured = torch.zeros(n_out, 1, dtype=torch.float64) if ref is not None else None
    for pos, k in enumerate(run.out_idx):
        for i in run.wrt:
            s = u[i][0]  # |u| is each coordinate's step scale; signs do not change a sum of squares
            base = ref[(i, k)] if ref is not None else grads[(i, k)]
            known = run.directional_square_sums.get((i, k)) if ref is None else None
            scale[pos] += known if known is not None else reductions.scaled_square_sum(base, s)
            if measured is not None:
                measured[pos] += reductions.scaled_square_sum(grads[(i, k)] - ref[(i, k)], s)
    scale = scale.sqrt()
    own = scale.clone()
    for pos, k in enumerate(run.out_idx):
        scale[pos] += max(directional_natural_scale(run, i, k) for i in run.wrt)
    return scale, own, (measured.sqrt() if measured is not None else None)


def allowance_along(run, scale, own, measured, ref, u, est) -> torch.Tensor:
    """The policy's allowance per output ``(n_out, 1)`` of directional derivatives (``est`` None: the
    screen's, never more than the full comparison's)."""
    dtype = directional_dtype(run)
    if est is None and run.reference and ref is None:
        # the screen of low-precision inputs: the floor alone (a measured round-off of 0)
        policy = tolerances.AnalyticAllowance(dtype, True)
        measured = torch.zeros_like(scale)
    else:
        policy = tolerances.AnalyticAllowance(dtype, measured is not None)
    floor_scale = own if measured is not None else None
    conditioning = None
    if est is not None and capped(policy, scale, measured):
        conditioning = directional_conditioning(run, ref, u)
        if conditioning is not None:
            # only where the conditioning explains the measured error: a projection can be far smaller
            # than the error's norm by chance, so a float32-only bug (a backward through float16, well
            # beyond the conditioning) must not get the raised allowance on the chance that it projects small
            explained = measured <= tolerances.MEASURED_FACTOR * conditioning
            conditioning = torch.where(explained, conditioning, torch.zeros_like(conditioning))
            if bool(explained.any()) and CONDITIONING_NOTE not in run.out.notes:
                run.out.notes.append(CONDITIONING_NOTE)
    return policy.allowance(scale, measured, conditioning, floor_scale) + run.options["nondet_tol"] * scale.clamp_min(1.0)


def directional_conditioning(run, ref: dict, u: dict) -> torch.Tensor | None:
    """``full_conditioning`` for a directional check, per output ``(n_out, 1)``: how far the float64 ``v·J``
    moves when each low-precision input moves by ``CAP_EPS`` roundings at unit scale, summed over those
    inputs, in the measured part's norm (``||change · |u| ||``). One float64 forward and backward per such
    input, on the first full comparison whose measured float32 error exceeds the cap; None where that
    fails."""
    state = run.directional
    if state.conditioning_ran:
        return state.conditioning
    state.conditioning_ran = True
    total = rounding_changes(run, ref, lambda leaves, outs: autograd_rows.vjp_vectors(run, leaves, outs)[0])
    if total is None:
        return None
    cond = torch.zeros(len(run.out_idx), 1, dtype=torch.float64)
    for pos, k in enumerate(run.out_idx):
        for i in run.wrt:
            cond[pos] += reductions.scaled_square_sum(total[(i, k)], u[i][0])
    state.conditioning = cond.sqrt()
    return state.conditioning


def directional_natural_scale(run, i: int, k: int) -> float:
    """``natural_size`` of (input i, output k) in directional mode, from autograd's outputs in their own
    dtype by dot products (one pass each, cached per check)."""
    key = ("directional", i, k)
    if key not in run.rms_cache:
        x = coords(run.inputs[i])  # the inputs' values (a scale: summed in their dtype)
        if i in run.nonfinite:
            x = _nonfinite.finite_or_zero(x)
        sums = autograd_rows.output_sizes(run, k)[1:]
        x_rms = math.sqrt(reductions.size_sq(x) / max(x.numel(), 1))
        out_rms = math.sqrt(sums[0] / max(run.v[k].numel(), 1))
        run.rms_cache[key] = natural_size(math.sqrt(sums[1]), out_rms, x_rms)
    return run.rms_cache[key]


CONDITIONING_NOTE = Note(
    "the float32 directional derivatives differ from float64 autograd's by more than 64 eps, and by no more "
    "than 4 times how far the float64 ones move when the inputs move by 64 float32 roundings: their allowance "
    "was raised to that (an ill-conditioned expression rounds its float32 derivatives that much)",
    NoteCode.CONDITIONING, ("directional",),
)
