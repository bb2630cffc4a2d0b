"""Report notes built from a comparison's data: each with a code, and the cause that was seen."""

from __future__ import annotations

import os

import torch

from gradcheck_kit._engine.compare import UNCHECKED_CAUSES, Verdict
from gradcheck_kit._inputs import coord_index
from gradcheck_kit.report import Note, NoteCode, format_index

__all__ = ["require_codes", "unchecked_notes", "DEBUG_ENV"]

#: set to 1 (the test suite does), the report builder refuses a note without a :class:`NoteCode`
DEBUG_ENV = "GRADCHECK_KIT_DEBUG"

#: the code of the note that no gradient flows from an output to an input (autograd gave none)
NO_GRADIENT_FLOW = NoteCode.NO_GRADIENT_FLOW

_WHY = {
    "nonfinite": "fn is not finite (NaN or inf) at the points next to {at} that the finite differences need",
    "jump": "fn jumps (a discontinuity) between the points next to {at}: the derivative does not exist there",
    "underflow": "fn is exactly 0 at every point next to {at} (it underflows) while autograd's derivative is "
    "below sqrt(tiny)",
    "flat": "fn does not change at all along {at} (every point gives the same value) while autograd's "
    "derivative is too small for fn's rounding to show",
    "unknown": "no numerical derivative could be computed next to {at}",
}


def unchecked_notes(
    verdict: Verdict, a: torch.Tensor, j_idx: torch.Tensor, r_idx: torch.Tensor, x: torch.Tensor, k: int, name: str
) -> list[Note]:
    """One note per cause among the unchecked entries of ``verdict`` (over ``(j_idx, r_idx)`` of ``a``):
    how many, the cause, and the first such element of input ``x`` (named ``name``)."""
    unchecked = verdict.unchecked.reshape(-1)
    cause = verdict.cause.reshape(-1) if verdict.cause is not None else torch.zeros_like(unchecked, dtype=torch.int8)
    notes = []
    for code in sorted(set(cause[unchecked].tolist())):
        kind = UNCHECKED_CAUSES.get(code, "unknown")
        positions = (unchecked & (cause == code)).nonzero().reshape(-1)
        j = int(j_idx.reshape(-1)[positions[0]])
        index, _ = coord_index(j, x.shape, x.is_complex())
        at = f"{name}{format_index(index)}" + (f" and {len(positions) - 1} more" if len(positions) > 1 else "")
        text = (
            f"{len(positions)} derivative(s) of output {k} w.r.t. {name} could not be checked: "
            + _WHY[kind].format(at=at)
        )
        notes.append(Note(text, f"unchecked_{kind}", (name, k, index, len(positions))))
    return notes


def require_codes(notes: list) -> None:
    """Under ``DEBUG_ENV=1``: an ``AssertionError`` naming the notes that carry no :class:`NoteCode` (a note
    written as plain text), so that a new kind of note cannot enter a report without a code."""
    if os.environ.get(DEBUG_ENV) != "1":
        return
    uncoded = [str(n) for n in notes if not isinstance(getattr(n, "code", None), NoteCode)]
    assert not uncoded, f"notes without a NoteCode: {uncoded}"
