"""Setup of a check: the numerics' dtype and base point (float64 where fn runs in float64, probed at x), the
evaluator, the output vectors v, and fn's own output precision."""

from __future__ import annotations

from typing import Any

import torch

from gradcheck_kit._engine import reference as _reference
from gradcheck_kit._engine import graph, tolerances, words
from gradcheck_kit._engine.evaluate import EvaluationFailed, Evaluator
from gradcheck_kit._engine.finite_diff import _rms
from gradcheck_kit._engine.limits import DEFERRED_PROBE_COORDS
from gradcheck_kit._engine.reasons import NO_VMAP_RULE
from gradcheck_kit._inputs import coords, coords64, from_coords
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.report import Note, NoteCode


def coarse_eps(run) -> float:
    """eps of a precision coarser than float64 whose values fn returns also where its inputs are not float32
    values (it computes in that precision inside), else 0: the rounding its backward may have too. One
    evaluation, on first need."""
    if run.coarse is None:
        precision = run.quantized or (output_precision(run) if run.num_dtype == torch.float64 else None)
        run.coarse = tolerances.eps(precision) if precision is not None else 0.0
    return run.coarse


#: a float64 value that is a multiple of 2^-g for one of these g (the ulps of values from 1/4 to 2) and holds
#: at most float32's 24 bits is a rounded intermediate of unit size less another, not a float32 value
UNIT_GRIDS = (52, 53, 54)


def _unit_grid(f: torch.Tensor) -> torch.Tensor:
    """Where ``f`` is a small whole multiple of float64's ulp at unit size (``UNIT_GRIDS``)."""
    found = torch.zeros_like(f, dtype=torch.bool)
    for g in UNIT_GRIDS:
        scaled = f * 2.0**g
        found |= (f.abs() < 2.0 ** (24 - g)) & (scaled == scaled.round())
    return found


def output_precision(run) -> torch.dtype | None:
    """The coarsest precision (bfloat16, float16, float32) whose values fn returns at a point that is not a
    float32 value, or None where fn returns float64 values (or integers only) there."""
    repl = {}
    for i in run.wrt:
        x = run.evaluator.base_args[i]
        if not x.is_floating_point():
            return None
        repl[i] = nudged(x, 2.0**-36)
    try:
        outs = run.evaluator.outputs_at(repl)
    except EvaluationFailed:
        return None
    finite = [o[torch.isfinite(o)] for o in outs]
    # integers (a constant 0, rounded values) are values of every precision: they tell nothing; nor do small
    # multiples of float64's ulp at unit size (cos(x) - 1 at 1e-5 rounds cos(x) at 1: -5e-11 has few bits)
    finite = [f[~_unit_grid(f)] for f in finite]
    if not any(bool((f != f.round()).any()) for f in finite):
        return None
    return tolerances.coarsest_precision(finite)


def choose_numeric_dtype(run, defer: bool = True, own: bool = False) -> None:
    """The numerics' dtype and base point: float64 where fn runs in float64 (for low-precision inputs a
    probe at x tells), else the inputs' own (always with ``own``).

    A directional check of more than ``DEFERRED_PROBE_COORDS`` low-precision coordinates defers the
    probe (``defer``): its first point, x + h·u, is the probe (``directional.outputs_at``), and f(x) in float64
    is evaluated only where the check needs it (``f0``): one float64 forward fewer, a fifth of the check.
    """
    run.extra_evaluations = 1  # the analytic forward
    low = [run.inputs[i].dtype for i in run.wrt if tolerances.eps(run.inputs[i].dtype) > 1e-15]
    run.reference = False
    run.reference_pending = run.reference_deferred = False
    run.no_reference_reason = ""
    run.low_dtype_name = ""
    run.f0_cache = None
    grad_inside = None
    probe = None
    if low:
        run.low_dtype_name = str(low[0]).replace("torch.", "")
        ref_args = [to_double(t) for t in run.inputs]
        if own:
            pass
        elif defer and run.mode == "directional" and run.n_in > DEFERRED_PROBE_COORDS:
            run.reference = run.reference_pending = run.reference_deferred = True
            base = ref_args
        else:
            probe, grad_inside = probe_float64(run, ref_args)
            if probe is not None and reference_differs(run, probe, ref_args, grad_inside, low[0]):
                probe = None
            if probe is not None:
                run.reference = True
                base = ref_args
    borrowed: list[int] = []
    if not run.reference:
        # the inputs' values in the inputs' dtype. A directional check only reads the differentiated
        # inputs (fn gets x ± h·u in buffers of ours): it borrows the caller's tensors, which the
        # Evaluator never hands to fn (a call that would gets a copy); every other base is a copy
        if run.mode == "directional" and not run.mutates_inputs:
            borrowed = [i for i in run.wrt if run.inputs[i].is_contiguous()]
        base = [
            (t.detach() if i in borrowed else t.detach().clone()) if isinstance(t, torch.Tensor) else t
            for i, t in enumerate(run.inputs)
        ]
    num_dtype = torch.float64
    if not run.reference and low:
        num_dtype = real_of(low[0])
    run.num_dtype = num_dtype
    run.stencil = tolerances.stencil_for(num_dtype)
    base = [b.contiguous() if isinstance(b, torch.Tensor) else b for b in base]
    run.evaluator = Evaluator(
        run.fn, base, run.out_idx, run.rng_seed, fresh_copies=run.mutates_inputs, borrowed=borrowed,
        grad_inputs=run.grad_positions, out_shapes=[run.outs[k].shape for k in run.out_idx],
        grad_inside=grad_inside,
    )
    run.evaluator.nondet_tol = float(run.options["nondet_tol"])
    if not run.reference and not low:
        # numerics in the inputs' own dtype: autograd's forward already is f(x)
        run.f0_cache = [coords64(run.outs[k]) for k in run.out_idx]
    elif probe is not None:  # the float64 probe ran at the base point with the same RNG state: f(x)
        run.f0_cache = [coords64(probe[k]) for k in run.out_idx]
    elif not run.reference_pending:
        run.f0_cache = run.evaluator.outputs_at({})


def rule_out_vmap(run) -> None:
    """Full mode's batches point by point from the start where fn's graph at the inputs holds a custom
    ``autograd.Function`` that defines its context in ``forward``: torch refuses it under vmap, so the first
    batch's vmap would raise after a call of fn, and the evaluator would go point by point from there on.
    (Where fn routes around that Function without grad, vmap could run: its points then take the loop,
    whose values are fn's own.) Nothing where vmap already ran or failed, or is not tried."""
    ev = run.evaluator
    if run.mode != "full" or ev.vmap_failed is not None or ev.used_vmap or ev.grad_inside is not None:
        return
    if any(map(graph.lacks_setup_context, run.graph.classes)):
        ev.vmap_failed = NO_VMAP_RULE


def probe_float64(run, ref_args: list) -> tuple[tuple | None, str | None]:
    """fn at the inputs in float64: its outputs where they are float64 of the same shapes (and why calls
    need grad, if they do), else ``None`` with ``no_reference_reason`` saying why."""
    # fresh copies where fn modifies its inputs: ref_args become the numerics' base point
    prober = Evaluator(
        run.fn, ref_args, run.out_idx, run.rng_seed, fresh_copies=run.mutates_inputs,
        grad_inputs=run.grad_positions,
    )
    try:
        ref_outs = prober.call(ref_args)
    except EvaluationFailed as exc:
        run.no_reference_reason = Note(
            f"fn cannot run in float64 (it {exc.what}): numerical derivatives in "
            f"{run.low_dtype_name}, so resolution is coarse",
            NoteCode.NO_FLOAT64, ("fails", run.low_dtype_name),
        )
        return None, None
    run.extra_evaluations += 1
    ok = len(ref_outs) == len(run.outs) and all(
        ref_outs[k].dtype in (torch.float64, torch.complex128) and ref_outs[k].shape == run.outs[k].shape
        for k in run.out_idx
    )
    if not ok:
        dts = ", ".join(str(ref_outs[k].dtype) for k in run.out_idx if k < len(ref_outs))
        run.no_reference_reason = Note(
            f"fn does not compute in float64 (float64 inputs gave {dts}): numerical derivatives in "
            f"{run.low_dtype_name}, so resolution is coarse",
            NoteCode.NO_FLOAT64, ("other_dtype", run.low_dtype_name),
        )
        return None, None
    return ref_outs, prober.grad_inside


def reference_differs(run, probe: tuple, ref_args: list, grad_inside, low: torch.dtype) -> bool:
    """Whether fn's float64 outputs at x differ from its low-precision ones by more than rounding explains
    (``reference``): then ``no_reference_reason`` says so and the numerics stay in the inputs' dtype."""
    e = tolerances.eps(low)

    def moved() -> list[torch.Tensor] | None:
        repl = {i: _reference.moved_point(ref_args[i], e) for i in run.wrt if tolerances.eps(run.inputs[i].dtype) > 1e-15}
        prober = Evaluator(
            run.fn, ref_args, run.out_idx, run.rng_seed, fresh_copies=True, grad_inputs=run.grad_positions,
            grad_inside=grad_inside,
        )
        run.extra_evaluations += 1
        try:
            return prober.outputs_at(repl)
        except EvaluationFailed:
            return None

    low_outs = [coords64(run.outs[k]) for k in run.out_idx]
    x_scale = max(float(_rms(coords64(run.inputs[i]))) for i in run.wrt)
    gap = _reference.forward_gap(low_outs, [coords64(probe[k]) for k in run.out_idx], e, x_scale, moved)
    run.forward_rounding = gap.rounding
    if gap.ratio <= 1.0:
        return False
    run.no_reference_reason = _reference.gap_note(gap, run.low_dtype_name, run.out_idx[gap.output])
    return True


def output_vectors(run) -> dict[int, torch.Tensor]:
    """v per differentiable output, as float64 real coordinates of the output's own dtype values."""
    given = run.user_grad_outputs
    if given is not None:
        if isinstance(given, torch.Tensor):
            given = (given,)
        given = tuple(given)
        if len(given) != len(run.outs):
            raise InvalidArgument(
                f"grad_outputs has {len(given)} tensor(s) but fn returned {len(run.outs)} output(s)"
            )
    vectors = {}
    run.drawn_vectors: dict[int, torch.Tensor] = {}  # v as drawn, in the output's dtype and shape
    run.out_vectors: dict[int, torch.Tensor] = {}  # v as drawn or given, in the output's dtype and shape
    for k in run.out_idx:
        out = run.outs[k]
        if given is not None:
            g = given[k]
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(out.shape):
                shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
                raise InvalidArgument(
                    f"grad_outputs[{k}] has shape {shape}; output {k} has shape {tuple(out.shape)}"
                )
            v = g.detach().to(device=out.device, dtype=out.dtype)
        else:
            wide = torch.float64 if real_of(out.dtype) == torch.float64 else torch.float32
            v = words.uniform_vector(out.shape, run.gen, wide)
            if out.is_complex():
                v = torch.complex(v, words.uniform_vector(out.shape, run.gen, wide))
            # exact in float32 and float64, rounded once in lower precision; on the output's device
            v = v.to(device=out.device, dtype=out.dtype)
            run.drawn_vectors[k] = v
        run.out_vectors[k] = v
        vectors[k] = coords64(v)
    return vectors


def alternating(n: int, dtype: torch.dtype) -> torch.Tensor:
    """+1, -1, +1, ... (n values)."""
    return 1.0 - 2.0 * (torch.arange(n) % 2).to(dtype)


def nudged(t: torch.Tensor, rel: float, uniform: bool = False) -> torch.Tensor:
    """``t`` with each real coordinate moved by ``rel·max(|c|, 1)``, signs alternating, or all positive
    where ``uniform`` (a new tensor)."""
    c = coords(t)
    signs = torch.ones(c.numel(), dtype=c.dtype) if uniform else alternating(c.numel(), c.dtype)
    moved = c + c.abs().clamp_min(1.0) * rel * signs.to(c.device)
    return from_coords(moved.unsqueeze(0), t.shape, t.is_complex())[0].to(t.dtype)


def real_of(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def to_double(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            return t.detach().to(torch.complex128).contiguous()
        if t.is_floating_point():
            return t.detach().to(torch.float64).contiguous()
        return t.detach().clone()
    return t
