"""The process state a check runs in, and the caller's state it leaves as it found it.

- **Grad and inference mode.** A check records graphs whatever the caller's mode: it runs with
  ``torch.inference_mode(False)`` and grad enabled, and the caller's modes come back afterwards
  (``isolated_state``). Tensors created inside ``torch.inference_mode()`` cannot take part in a recorded
  graph, so the inputs are replaced by ordinary copies of them first (``outside_inference``).
- **The global RNG.** Every call of fn starts from a global RNG state derived from the check's seed, and
  the caller's state is restored at the end. That state is one per process, shared by all threads (as is
  the state of a checked ``nn.Module``), so a check holds ``CHECK_LOCK`` from saving the caller's state
  to restoring it (re-entrant: a check inside a check, as ``check_module_gradients`` makes, is fine).
  Checks in several threads then run one at a time. A thread that draws from the global RNG while
  another thread's check runs draws from the check's seeded state, and the check's restore undoes those
  draws.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

__all__ = ["CHECK_LOCK", "isolated_state", "outside_inference", "recording", "rng_preserved"]

#: held by every check from saving the caller's global RNG state (and a checked module's state) to
#: restoring it
CHECK_LOCK = threading.RLock()


@contextmanager
def rng_preserved(cuda: bool | None = None) -> Iterator[None]:
    """Under ``CHECK_LOCK``: the global RNG states (CPU, and every CUDA device when CUDA is initialized or
    ``cuda`` is true) are restored on exit."""
    with CHECK_LOCK:
        if cuda is None:
            cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        cpu_rng = torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if cuda else None
        try:
            yield
        finally:
            torch.random.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)


@contextmanager
def recording() -> Iterator[None]:
    """Inference mode off and grad enabled; the caller's modes are as before on exit, also where the code
    inside switched them (``torch.set_grad_enabled(False)`` without a ``with``)."""
    grad_enabled = torch.is_grad_enabled()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        torch.set_grad_enabled(grad_enabled)


@contextmanager
def isolated_state() -> Iterator[None]:
    """``recording`` with the global RNG restored (``rng_preserved``): the caller's grad mode, inference mode
    and RNG states are as before on exit, whatever the checked function does."""
    with rng_preserved(), recording():
        yield


def outside_inference(values: Sequence[Any]) -> list:
    """``values`` with every tensor created in inference mode replaced by an ordinary copy (same values,
    layout and ``requires_grad``); other values as given."""
    return [_ordinary(v) if isinstance(v, torch.Tensor) and v.is_inference() else v for v in values]


def _ordinary(t: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        copy = t.clone()
    return copy.requires_grad_(t.requires_grad) if copy.is_floating_point() or copy.is_complex() else copy
