"""Choosing ops: catalogue names as torch spells them, ``--ops`` entries, and the user's own functions."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Sequence

import torch

from gradcheck_kit._text import UsageError
from gradcheck_kit.audit._types import USER_FAMILY, AuditOp
from gradcheck_kit.options import FLOATING_DTYPES

__all__ = ["select", "split_ops", "is_function_entry", "function_op"]


def _normalise_name(name: str) -> str:
    name = name.strip()
    for prefix in ("torch.nn.functional.", "nn.functional.", "F.", "torch.", "Tensor."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def select(ops: Sequence[AuditOp], names: Sequence[str] | None, *, quick: bool = False) -> list[AuditOp]:
    """The ops named (as torch spells them; ``torch.`` and ``nn.functional.`` prefixes allowed), in
    catalogue order; all of them, or the quick subset, when ``names`` is None.

    Raises :class:`UsageError` for an unknown name, listing close matches.
    """
    by_name = {op.name: op for op in ops}
    if names is None:
        return [op for op in ops if op.quick] if quick else list(ops)
    chosen: list[str] = []
    for raw in names:
        name = _normalise_name(raw)
        if name not in by_name and f"linalg.{name}" in by_name:
            name = f"linalg.{name}"
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"--ops: unknown op {raw!r}{hint} ('gradcheck-kit audit --list' lists all)")
        if name not in chosen:
            chosen.append(name)
    return [op for op in ops if op.name in chosen]


def split_ops(values: Sequence[str]) -> list[str]:
    """The entries of every ``--ops`` value: comma-separated, where the commas of a
    ``MODULE:FUNCTION=SHAPE`` entry's shapes stay with it (``f=4,8:float32,tanh`` is two entries).

    Raises :class:`UsageError` when no entry is left (``--ops ","``)."""
    entries: list[str] = []
    for value in values:
        current: list[str] = []
        for token in value.split(","):
            token = token.strip()
            continues = current and "=" in current[0] and (not token or token[0] in "0123456789?():;[]")
            if continues:
                current.append(token)
                continue
            if current:
                entries.append(",".join(current))
            current = [token] if token else []
        if current:
            entries.append(",".join(current))
    if not entries:
        raise UsageError(f"--ops {','.join(values)!r}: no op names given ('gradcheck-kit audit --list' lists them)")
    return entries


def is_function_entry(entry: str) -> bool:
    """``MODULE:FUNCTION`` (with or without ``=SHAPES``), not a catalogue name."""
    return ":" in entry.partition("=")[0]


def function_op(
    target: str,
    fn: Callable[..., Any],
    specs: Sequence[Any],
    explicit: Sequence[bool],
    make_input: Callable[..., Any],
    order: int = 1,
) -> AuditOp:
    """An audit entry for the user's function ``target``: ``specs`` (``InputSpec``) are its inputs;
    a floating input whose dtype was not written (``explicit`` False) is drawn in each dtype of the
    audit, written ones keep theirs (when all are written, the op runs in that dtype only)."""
    floating = [i for i, spec in enumerate(specs) if spec.dtype in FLOATING_DTYPES]
    if not floating:
        raise UsageError(f"--ops {target!r}: no floating input to differentiate among {len(specs)} input(s)")
    fixed = None
    if all(explicit[i] for i in floating):
        fixed = (specs[floating[0]].dtype,)

    def make_inputs(dtype: torch.dtype, gen: torch.Generator) -> tuple:
        name = str(dtype).replace("torch.", "")
        return tuple(
            make_input(spec if explicit[i] or spec.dtype not in FLOATING_DTYPES else dataclasses.replace(spec, dtype=name), gen)
            for i, spec in enumerate(specs)
        )

    shown = ", ".join(
        (",".join(str(s) for s in spec.shape) or "()") + (f":{spec.dtype}" if explicit[i] else "")
        for i, spec in enumerate(specs)
    )
    return AuditOp(target, USER_FAMILY, fn, make_inputs, f"{target}({shown})", order=order, dtypes=fixed)
