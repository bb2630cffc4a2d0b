"""Search for inputs where a function's gradients are wrong, without writing a test.

``fuzz_gradients`` builds a Hypothesis test programmatically (``@given`` over the caller's
strategies), runs ``check_gradients`` on every drawn input tuple, lets Hypothesis shrink the first
failure, and returns a :class:`FuzzReport` holding the shrunk inputs and their report. Finding a
counterexample is a result, not an error: nothing is raised for it (computing returns data).
Hypothesis is imported inside the function, so ``import gradcheck_kit`` stays cheap.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import Any, Optional

from gradcheck_kit._inputs import function_name
from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.options import OPTION_NAMES, check_option

__all__ = ["FuzzReport", "fuzz_gradients"]

#: elements printed per input in ``str(FuzzReport)``
PRINTED_ELEMENTS = 24


def _describe_layout(t) -> str:
    contiguous = t.is_contiguous()
    if contiguous and t.storage_offset() == 0:
        return "contiguous"
    parts = [] if contiguous else [f"non-contiguous, strides {tuple(t.stride())}"]
    if t.storage_offset():
        parts.append(f"storage offset {t.storage_offset()}")
    return ", ".join(parts)


def _describe_input(index: int, value: Any) -> list[str]:
    import torch

    if not isinstance(value, torch.Tensor):
        return [f"  input {index}: {value!r}"]
    t = value.detach()
    head = (
        f"  input {index}: shape {tuple(t.shape)}, {str(t.dtype).replace('torch.', '')}, {_describe_layout(t)}"
        f"{', requires_grad' if value.requires_grad else ''}"
    )
    flat = t.flatten().tolist() if t.numel() <= PRINTED_ELEMENTS else None
    if flat is None:
        values = f"    {t.numel()} values, min {t.min().item()!r}, max {t.max().item()!r}"
    else:
        values = f"    values: torch.tensor({t.tolist()!r}, dtype={t.dtype})"
    return [head, values]


def _value_to_dict(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach()
        return {
            "shape": list(t.shape),
            "dtype": str(t.dtype).replace("torch.", ""),
            "stride": list(t.stride()),
            "storage_offset": t.storage_offset(),
            "values": t.tolist(),
        }
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


@dataclass
class FuzzReport:
    """What :func:`fuzz_gradients` found.

    ``ok`` is True when no input tuple failed (also ``bool(report)``); ``examples`` counts the input
    tuples generated and checked, up to and including the first failing one (at most ``max_examples``);
    ``shrink_checks`` the further checks run while shrinking it; ``counterexample`` is the shrunk
    failing input tuple (``None`` when ok) and ``report`` its :class:`GradientReport`, whose
    ``fn_failed`` tells a function that raised from a wrong gradient; ``seed`` reproduces the search:
    ``fuzz_gradients(fn, strategy, seed=report.seed, ...)``.
    """

    ok: bool
    examples: int
    counterexample: Optional[tuple]
    report: Any
    seed: int
    function: str = "fn"
    max_examples: int = 100
    shrink_checks: int = 0

    @property
    def fn_failed(self) -> bool:
        """The same as :attr:`function_failed` (the CLI's JSON spells it so)."""
        return self.function_failed

    def __bool__(self) -> bool:
        return self.ok

    @property
    def function_failed(self) -> bool:
        """The counterexample makes fn itself fail (raise, or return no tensors), not its gradients."""
        return bool(self.report is not None and getattr(self.report, "function_failed", False))

    def to_dict(self) -> dict:
        """JSON-ready: verdict, examples, seed, the counterexample's tensors and the report."""
        return {
            "ok": self.ok,
            "function": self.function,
            "examples": self.examples,
            "max_examples": self.max_examples,
            "shrink_checks": self.shrink_checks,
            "fn_failed": self.fn_failed,
            "seed": self.seed,
            "function_failed": self.function_failed,
            "counterexample": None
            if self.counterexample is None
            else [_value_to_dict(value) for value in self.counterexample],
            "report": None if self.report is None else self.report.to_dict(),
        }

    def __str__(self) -> str:
        if self.ok:
            return (
                f"fuzz_gradients({self.function}): no counterexample in {self.examples} examples "
                f"(max_examples={self.max_examples}, seed={self.seed})"
            )
        what = self.report.summary if self.function_failed else "gradients are wrong"
        checks = f"{self.shrink_checks} more check{'' if self.shrink_checks == 1 else 's'}"
        lines = [
            f"fuzz_gradients({self.function}): {what}; counterexample found at example {self.examples} of up "
            f"to {self.max_examples}, shrunk in {checks} to:",
        ]
        for i, value in enumerate(self.counterexample or ()):
            lines.extend(_describe_input(i, value))
        lines.append(str(self.report))
        lines.append(f"Reproduce the search: gk.fuzz_gradients({self.function}, ..., seed={self.seed})")
        return "\n".join(lines)


class _Failed(Exception):
    """Raised inside the Hypothesis test when a check fails, so that Hypothesis shrinks it."""


class _FunctionFailed(Exception):
    """Raised inside the Hypothesis test when fn itself fails: a bug of its own, shrunk apart."""


def _as_strategy(strategy_or_strategies: Any):
    from hypothesis import strategies as st

    if isinstance(strategy_or_strategies, st.SearchStrategy):
        return strategy_or_strategies
    if isinstance(strategy_or_strategies, (list, tuple)) and strategy_or_strategies:
        parts = [s if isinstance(s, st.SearchStrategy) else st.just(s) for s in strategy_or_strategies]
        if not any(isinstance(s, st.SearchStrategy) for s in strategy_or_strategies):
            raise InvalidArgument(
                f"strategy_or_strategies={strategy_or_strategies!r} holds no Hypothesis strategy"
            )
        return st.tuples(*parts)
    raise InvalidArgument(
        f"strategy_or_strategies={strategy_or_strategies!r} must be a Hypothesis strategy of input tuples "
        "or a list of per-input strategies"
    )


def fuzz_gradients(
    fn: Any,
    strategy_or_strategies: Any,
    *,
    max_examples: int = 100,
    seed: Optional[int] = None,
    **check_keywords: Any,
) -> FuzzReport:
    """Search with Hypothesis for inputs where ``check_gradients(fn, *inputs)`` fails.

    ``strategy_or_strategies`` is a strategy drawing input tuples (e.g. ``gst.tensor_inputs(...)``,
    ``gst.broadcastable_tensors(...)``; a strategy drawing a single tensor is treated as one input),
    or a list with one strategy per input (plain values in it are passed as they are).
    ``check_keywords`` go to :func:`gradcheck_kit.check_gradients`.

    Runs up to ``max_examples`` examples, shrinks the first failure and returns a
    :class:`FuzzReport`; it never raises because gradients are wrong. ``seed`` makes the search
    reproducible; ``None`` draws one (reported as ``report.seed``), except under a Hypothesis profile
    with ``derandomize=True`` (e.g. the ``ci`` profile), where the seed is 0.
    """
    from hypothesis import settings

    from gradcheck_kit import _hypothesis_hook

    _hypothesis_hook.register_torch_random()
    _check_arguments(fn, max_examples, seed, check_keywords)
    strategy = _as_strategy(strategy_or_strategies)
    if seed is None:
        seed = 0 if settings.default.derandomize else random.SystemRandom().getrandbits(32)
    search = _Search(fn, check_keywords)
    found = search.run(strategy, max_examples, seed)
    return FuzzReport(
        ok=not found,
        examples=search.found_at if found else search.examples,
        counterexample=search.inputs,
        report=search.report,
        seed=seed,
        function=function_name(fn),
        max_examples=max_examples,
        shrink_checks=search.examples - search.found_at if found else 0,
    )


def _check_arguments(fn: Any, max_examples: Any, seed: Any, check_keywords: dict) -> None:
    """Bad arguments raise :class:`InvalidArgument` before the search starts; the check options are
    validated as ``check_gradients`` validates them (``gradcheck_kit.options``)."""
    from gradcheck_kit.checkers import check_gradients

    if not callable(fn):
        raise InvalidArgument(f"fn={fn!r} is not callable")
    if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
        raise InvalidArgument(f"max_examples={max_examples!r} must be an int >= 1")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise InvalidArgument(f"seed={seed!r} must be None or an int in [0, 2**64)")
    try:
        inspect.signature(check_gradients).bind_partial(**check_keywords)
    except TypeError:
        known = [p for p in inspect.signature(check_gradients).parameters if p not in ("fn", "inputs")]
        unknown = sorted(set(check_keywords) - set(known))
        raise InvalidArgument(
            f"unknown check keyword(s) {', '.join(f'{k}={check_keywords[k]!r}' for k in unknown)}; "
            f"known: {', '.join(known)}"
        ) from None
    for key, value in check_keywords.items():
        if key in OPTION_NAMES:
            check_option(key, value)


class _Search:
    """One Hypothesis search: checks every drawn input tuple, and keeps the last failure (Hypothesis
    replays the shrunk example last, so that is the minimal one)."""

    def __init__(self, fn: Any, check_keywords: dict) -> None:
        self.fn, self.check_keywords = fn, check_keywords
        self.examples = 0
        self.found_at: Optional[int] = None
        self.inputs: Optional[tuple] = None
        self.report: Any = None

    def check(self, inputs: Any) -> None:
        from gradcheck_kit.checkers import check_gradients

        if not isinstance(inputs, (tuple, list)):
            inputs = (inputs,)
        self.examples += 1
        report = check_gradients(self.fn, *inputs, **self.check_keywords)
        if report.ok:
            return
        if self.found_at is None:  # the calls after this one shrink it
            self.found_at = self.examples
        self.inputs, self.report = tuple(inputs), report
        raise _FunctionFailed if report.fn_failed else _Failed

    def run(self, strategy: Any, max_examples: int, seed: int) -> bool:
        """Whether a failing input tuple was found."""
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hypothesis_seed

        test = given(strategy)(self.check)
        test = settings(
            max_examples=max_examples,
            database=None,
            derandomize=False,
            deadline=None,
            print_blob=False,
            report_multiple_bugs=False,
            phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )(test)
        try:
            hypothesis_seed(seed)(test)()
        except (_Failed, _FunctionFailed):
            return True
        return False
