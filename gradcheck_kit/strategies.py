"""Hypothesis strategies that find the inputs where gradients break.

    from gradcheck_kit import strategies as gst

Shapes (``shapes``, ``broadcastable_shapes``, ``mutually_broadcastable_shapes``), dtypes
(``float_dtypes``), tensors with real strided layouts and the values where gradients break
(``tensors``), several related tensors for one function (``broadcastable_tensors``,
``tensor_inputs``), and random differentiable expressions (``expressions``, ``Expression``, ``Op``).
Importing this module registers torch's global RNG with Hypothesis, so ``torch.randn`` inside
``@given`` is reproducible, and registers (never loads) the Hypothesis profiles ``gradcheck-fast``,
``gradcheck-ci`` and ``gradcheck-thorough``: ``settings.load_profile("gradcheck-ci")`` works after
``import gradcheck_kit.strategies`` (what each sets: ``gradcheck_kit._hypothesis_hook``).
"""

from __future__ import annotations

import importlib
from typing import Any

from gradcheck_kit import _hypothesis_hook
from gradcheck_kit._strategies import (
    BroadcastableShapes,
    broadcastable_shapes,
    broadcastable_tensors,
    complex_dtypes,
    float_dtypes,
    mutually_broadcastable_shapes,
    shapes,
    tensor_inputs,
    tensors,
)

_hypothesis_hook.register_torch_random()
_hypothesis_hook.register_hypothesis_profiles()

# defined in gradcheck_kit._expressions, loaded on first use
_EXPRESSION_NAMES = ("Expression", "Op", "expressions")

__all__ = [
    "BroadcastableShapes",
    "Expression",
    "Op",
    "broadcastable_shapes",
    "broadcastable_tensors",
    "complex_dtypes",
    "expressions",
    "float_dtypes",
    "mutually_broadcastable_shapes",
    "shapes",
    "tensor_inputs",
    "tensors",
]


def __getattr__(name: str) -> Any:
    if name in _EXPRESSION_NAMES:
        value = getattr(importlib.import_module("gradcheck_kit._expressions"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradcheck_kit.strategies' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
