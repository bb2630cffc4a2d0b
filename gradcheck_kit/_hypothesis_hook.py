"""Register torch's global RNG with Hypothesis, so ``torch.randn`` inside ``@given`` is reproducible.

Hypothesis calls ``_hypothesis_setup_hook`` (the ``hypothesis`` entry point) when it is imported.
Importing torch there would make every ``import hypothesis`` pay for torch, so the hook registers
only when torch is already imported; ``gradcheck_kit.strategies`` calls :func:`register_torch_random`
again when it loads (it imports torch anyway). Registering twice is harmless.
"""

from __future__ import annotations

import sys

__all__ = ["register_torch_random"]


class _TorchGlobalRandom:
    """The ``seed``/``getstate``/``setstate`` protocol Hypothesis expects, over torch's default generator."""

    def seed(self, seed: int) -> None:
        import torch

        torch.default_generator.manual_seed(seed)

    def getstate(self):
        import torch

        return torch.random.get_rng_state()

    def setstate(self, state) -> None:
        import torch

        torch.random.set_rng_state(state)


# Hypothesis keeps only a weak reference to registered randoms: this module keeps the strong one.
_TORCH_RANDOM = _TorchGlobalRandom()
_registered = False


def register_torch_random() -> None:
    global _registered
    if _registered:
        return
    from hypothesis import register_random

    register_random(_TORCH_RANDOM)
    _registered = True


def _hypothesis_setup_hook() -> None:
    if "torch" in sys.modules:
        register_torch_random()
