"""``check_gradients``: autograd against finite differences, in the inputs' own dtype.

The pipeline (``docs/architecture.md`` draws it): options -> inputs validated -> a :class:`Run` of the
first-order check (``_engine.first_order``: forward, setup, backward full or directional, narrowing,
structural checks, linearity, forward AD, higher orders by composition) -> the checks beside it (compiled
against eager, bias, batched) -> one report built from all their results. Nothing here raises because a
gradient is wrong; see ``assertions`` for that.

Two ways to compare:

- **full**: every input coordinate is perturbed (batched through ``vmap``) and compared with autograd,
  entry by entry of the Jacobian when it is small (``d out[k] / d x[j]``), else projected on the output
  vector ``v`` (``d(v·out) / d x[j]``, one backward); with float64 numerics an input is first evaluated at
  ``x ± h·e_j`` only, and the rest of the stencil runs only when some entry does not pass the plain central
  difference's tolerance (``_engine.screen``);
- **directional**: random directions ``u`` (Rademacher, scaled per coordinate) against ``v·J·u``, a
  constant number of evaluations whatever the size, stopping after ``x ± h·u`` where that already decides
  a pass. ``mode="auto"`` picks by size and, when a directional check fails, narrows it down to the wrong
  input elements.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from gradcheck_kit import _config, _state
from gradcheck_kit._engine import batched as batched_check
from gradcheck_kit._engine import bias, compiled, first_order
from gradcheck_kit._engine.context import Results, Run
from gradcheck_kit._grad_outputs import reject_nonfinite
from gradcheck_kit._inputs import input_names as names_for_inputs  # the keyword shadows the name
from gradcheck_kit._inputs import is_differentiable, resolve_wrt
from gradcheck_kit._state import module_state_kept
from gradcheck_kit.report import CheckResult, GradientReport, Note
from gradcheck_kit._supported import check_grad_outputs, refuse_unsupported
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import (  # noqa: F401 - MODES, FORWARD_AD re-exported
    FORWARD_AD,
    MODES,
    check_input_names,
    resolve_options,
)

__all__ = ["check_gradients", "MODES"]


def check_gradients(
    fn: Callable,
    *inputs: Any,
    wrt: Any = None,
    grad_outputs: Any = None,
    mode: str | None = None,
    order: int | None = None,
    forward_ad: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int | None = None,
    input_names: Sequence[str] | None = None,
    directions: int | None = None,
    nondet_tol: float | None = None,
    strict: bool | None = None,
    batched: bool | None = None,
) -> GradientReport:
    """Compare autograd's derivatives of ``fn(*inputs)`` with finite differences; return a report.

    ``wrt``: indices of the inputs to differentiate (default: the tensors that require grad, or every
    floating tensor when none does). ``grad_outputs``: the vector ``v`` (one tensor per output) that
    projects outputs where a projection is used (default: uniform in (-1, 1), from the private generator).
    ``mode``: ``"full"``, ``"directional"`` or ``"auto"``. ``order=2`` also checks the backward of the
    backward. ``forward_ad``: ``True`` checks forward-mode AD too, ``"auto"`` where supported, ``False``
    skips it. ``atol``/``rtol``: ``None`` derives the allowance for autograd's round-off from the dtype
    (and a float64 run where possible); given values replace it (``atol + rtol·|numerical|``); the
    numerical error estimate is always added. ``seed`` seeds every random choice (the caller's RNG is
    untouched). ``input_names``: display names of the inputs in messages. ``directions``: random
    directions per directional check (default 2). ``strict``: entries that agree only approximately fail
    (see :class:`gradcheck_kit.options.CheckOptions`). ``batched=True`` also checks fn, its backward and
    its forward AD under ``vmap`` against one call per batch entry (the check ``batched``). Keywords left
    ``None`` take the defaults of ``gradcheck_kit._config.defaults`` (the pytest plugin sets them from its
    options).
    """
    given = dict(mode=mode, order=order, forward_ad=forward_ad, atol=atol, rtol=rtol, seed=seed,
                 directions=directions, nondet_tol=nondet_tol, strict=strict, batched=batched)
    # a keyword left None takes the default: only the given ones need a look
    resolved = resolve_options({k: v for k, v in given.items() if v is not None}, _config.current_defaults())
    options = resolved.plain()
    if not callable(fn):
        raise InvalidArgument(f"fn={fn!r} is not callable")
    inputs = _torch_style(inputs)
    names = names_for_inputs(fn, len(inputs), check_input_names(input_names, len(inputs)))
    for i, t in enumerate(inputs):
        refuse_unsupported(t, f"inputs[{i}] ({names[i]})")
    check_grad_outputs(grad_outputs)
    reject_nonfinite(grad_outputs)
    inputs = tuple(_state.outside_inference(inputs))  # made in inference mode: ordinary copies
    wrt_list = resolve_wrt(inputs, wrt)
    eager = compiled.eager_of(fn)  # torch.compile'd: numerics on the eager function, compiled against eager
    run = Run(fn if eager is None else eager, inputs, wrt_list, names, grad_outputs, options)
    # a module's buffers (BatchNorm's running statistics) and .grad kept, one check at a time (_state)
    with _state.CHECK_LOCK, module_state_kept(fn):
        facts = first_order.run_stages(run)
        beside = checks_beside(run, fn, eager)
    report = first_order.build_report(run, facts, beside)
    _config.notify_report(report)
    return report


def checks_beside(run: Run, fn: Callable, eager: Callable | None) -> Results:
    """The checks beside the first-order comparison: compiled against eager (where fn is compiled), bias,
    and batched (``batched=True``, or where the numerics found fn's vmap giving other values)."""
    found = Results()
    seed = run.options["seed"]
    if eager is not None:
        with _state.isolated_state():
            comparison = compiled.compare_with_eager(fn, eager, run.inputs, run.wrt, run.names, seed)
        found.extend(_compiled_results(comparison))
    if not run.out.errors and any(
        isinstance(run.inputs[i], torch.Tensor) and run.inputs[i].dtype in bias.HALF_DTYPES for i in run.wrt
    ):  # the check ``bias`` looks at half-precision inputs only
        with _state.isolated_state():
            check = bias.bias_check(run.fn, run.inputs, run.wrt, seed)
        if check is not None:
            found.checks.append(check)
    if run.options["batched"] and not run.out.errors:
        with _state.isolated_state():
            found.checks.append(batched_check.compare_batched(run.fn, run.inputs, run.wrt, seed).check)
    elif run.evaluator is not None and run.evaluator.vmap_mismatch is not None:
        found.checks.append(CheckResult(
            "batched", "failed",
            f"fn under vmap gives other values than one call per point ({run.evaluator.vmap_mismatch}): a "
            "vmap rule that mixes batch entries? The numerical derivatives were evaluated point by point",
        ))
    return found


def _compiled_results(comparison: compiled.CompiledComparison) -> Results:
    """The compiled-against-eager verdict as the check ``compiled`` beside the eager function's."""
    found = Results(checks=[comparison.check], groups=list(comparison.groups), mismatches=list(comparison.mismatches))
    found.notes.append(Note(
        "fn is compiled (torch.compile): the numerical check ran on the eager function it wraps (eager == "
        "numerical: the backward check), and compiled autograd was compared with eager autograd on the same "
        "inputs (compiled == eager: the compiled check)",
        "compiled",
    ))
    found.notes.extend(Note(n, "compiled") for n in comparison.notes)
    return found


def _torch_style(inputs: tuple) -> tuple:
    """``check_gradients(fn, (x, y))``, as ``torch.autograd.gradcheck`` takes them, means ``(fn, x, y)``."""
    if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)) and any(is_differentiable(t) for t in inputs[0]):
        return tuple(inputs[0])
    return inputs
