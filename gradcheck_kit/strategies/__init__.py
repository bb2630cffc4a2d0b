"""Hypothesis strategies that find the inputs where gradients break.

    from gradcheck_kit import strategies as gst

Shapes (``shapes``, ``broadcastable_shapes``, ``mutually_broadcastable_shapes``), dtypes
(``float_dtypes``, ``complex_dtypes``), tensors with real strided layouts and the values where
gradients break (``tensors``), several related tensors for one function (``broadcastable_tensors``,
``tensor_inputs``), and random differentiable expressions (``expressions``, ``Expression``, ``Op``).
Importing this module registers torch's global RNG with Hypothesis, so ``torch.randn`` inside
``@given`` is reproducible, and registers (never loads) the Hypothesis profiles ``gradcheck-fast``,
``gradcheck-ci`` and ``gradcheck-thorough``: ``settings.load_profile("gradcheck-ci")`` works after
``import gradcheck_kit.strategies`` (what each sets: ``gradcheck_kit._hypothesis_hook``).

The expression names load sympy, so they are imported on first use.

Modules: ``shape_strategies``, ``dtypes``, ``tensor_strategies`` (with ``tensor_spec``, ``elements``,
``apart``, ``layouts`` and ``arguments`` behind it), and ``symbolic`` for the expressions.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradcheck_kit._hypothesis_hook import register_hypothesis_profiles, register_torch_random
from gradcheck_kit.strategies.dtypes import complex_dtypes, float_dtypes
from gradcheck_kit.strategies.shape_strategies import (
    BroadcastableShapes,
    broadcastable_shapes,
    mutually_broadcastable_shapes,
    shapes,
)
from gradcheck_kit.strategies.tensor_strategies import broadcastable_tensors, tensor_inputs, tensors

register_torch_random()
register_hypothesis_profiles()

# name -> module that defines it, loaded on first use
_EXPRESSION_MODULES = {
    "Expression": "gradcheck_kit.strategies.symbolic.expression",
    "Op": "gradcheck_kit.strategies.symbolic.ops",
    "expressions": "gradcheck_kit.strategies.symbolic.builder",
}

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
    module = _EXPRESSION_MODULES.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradcheck_kit.strategies' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
