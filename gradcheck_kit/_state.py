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
- **A checked module.** Where fn is an ``nn.Module`` (or a bound method of one), its buffers (BatchNorm's
  running statistics) and its parameters' ``.grad`` are as before on exit (``module_state_kept``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch

__all__ = [
    "CHECK_LOCK",
    "buffers_restored",
    "grads_restored",
    "isolated_state",
    "module_state_kept",
    "outside_inference",
    "owning_module",
    "recording",
    "rng_preserved",
]

#: held by every check from saving the caller's global RNG state (and a checked module's state) to
#: restoring it
CHECK_LOCK = threading.RLock()


@contextmanager
def rng_preserved(cuda: bool | None = None) -> Iterator[None]:
    """Under ``CHECK_LOCK``: the global RNG states (CPU, and every CUDA device when CUDA is initialized or
    ``cuda`` is true) are restored on exit."""
    with CHECK_LOCK:
        if cuda is None:
            cuda = torch.cuda.is_initialized() and torch.cuda.is_available()  # the cheap test first
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
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.enable_grad():
                yield
        else:  # (inference mode already off: grad switched on for the block, the finally restores it)
            torch.set_grad_enabled(True)
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


@contextmanager
def buffers_restored(module: Optional[torch.nn.Module]) -> Iterator[None]:
    """Put every buffer back afterwards: same tensor object, same values (BatchNorm running stats)."""
    if module is None:
        yield
        return
    saved = [
        (owner, key, buffer, buffer.detach().clone())
        for owner in module.modules()
        for key, buffer in owner._buffers.items()
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for owner, key, buffer, copy in saved:
                owner._buffers[key] = buffer
                buffer.copy_(copy)


@contextmanager
def grads_restored(module: Optional[torch.nn.Module]) -> Iterator[None]:
    """Put every parameter's ``.grad`` back afterwards: the same tensor (or ``None``), the same values."""
    if module is None:
        yield
        return
    saved = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in module.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, grad, copy in saved:
                p.grad = grad
                if grad is not None:
                    grad.copy_(copy)


def owning_module(fn: Any) -> Optional[torch.nn.Module]:
    """The module whose state calls of ``fn`` can change: ``fn`` itself, or the module of a bound method."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


@contextmanager
def module_state_kept(fn: Any) -> Iterator[None]:
    """Where ``fn`` is a module or a bound method of one, its buffers (BatchNorm's running statistics) and
    its parameters' ``.grad`` are as before on exit; otherwise nothing to do."""
    module = owning_module(fn)
    if module is None:
        yield
        return
    with buffers_restored(module), grads_restored(module):
        yield
