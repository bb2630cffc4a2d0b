"""Register torch's global RNG with Hypothesis, so ``torch.randn`` inside ``@given`` is reproducible,
and register the kit's ``gradcheck-*`` Hypothesis profiles.

Hypothesis calls ``_hypothesis_setup_hook`` (the ``hypothesis`` entry point) when it is imported.
Importing torch there would make every ``import hypothesis`` pay for torch, so the hook registers
only when torch is already imported; ``gradcheck_kit.strategies`` calls :func:`register_torch_random`
again when it loads (it imports torch anyway). Registering twice is harmless.

The profiles (:data:`HYPOTHESIS_PROFILES`) are registered, never loaded, by
:func:`register_hypothesis_profiles`: on import of ``gradcheck_kit.strategies``, and by the pytest
plugin once Hypothesis is imported or a ``gradcheck-*`` profile is named on the command line.
Each starts from Hypothesis' ``default`` profile, suppresses the ``too_slow`` and
``data_too_large`` health checks (gradient checks are slow by nature), and sets:

- ``gradcheck-fast``: ``max_examples=10``, ``deadline=None``;
- ``gradcheck-ci``: ``max_examples=50``, ``deadline=None``, ``derandomize=True`` (the same examples
  on every run), ``database=None`` (no ``.hypothesis`` folder), ``print_blob=True`` (a failure prints
  the ``@reproduce_failure`` line);
- ``gradcheck-thorough``: ``max_examples=1000``, ``deadline=None``, ``derandomize=False``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["HYPOTHESIS_PROFILES", "register_hypothesis_profiles", "register_torch_random"]

#: the ``gradcheck-*`` Hypothesis profiles: name -> the settings each sets (besides the health checks)
HYPOTHESIS_PROFILES: dict[str, dict[str, Any]] = {
    "gradcheck-fast": {"max_examples": 10, "deadline": None},
    "gradcheck-ci": {"max_examples": 50, "deadline": None, "derandomize": True, "database": None, "print_blob": True},
    "gradcheck-thorough": {"max_examples": 1000, "deadline": None, "derandomize": False},
}
#: health checks the profiles suppress
SUPPRESSED_HEALTH_CHECKS = ("too_slow", "data_too_large")


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


def register_hypothesis_profiles() -> None:
    """Register the ``gradcheck-*`` Hypothesis profiles (imports Hypothesis; loads none of them)."""
    from hypothesis import HealthCheck, settings

    slow = [getattr(HealthCheck, name) for name in SUPPRESSED_HEALTH_CHECKS]
    base = settings.get_profile("default")  # not whichever profile is loaded now (e.g. "ci")
    for name, options in HYPOTHESIS_PROFILES.items():
        settings.register_profile(name, base, suppress_health_check=slow, **options)


def _hypothesis_setup_hook() -> None:
    if "torch" in sys.modules:
        register_torch_random()
