"""Shared test helpers: seeded tensors, and custom autograd Functions that are right or carry a typical bug.

Import them as ``from tests.helpers import randn, unary, SinOnePercentOff`` (the repository root is on
``sys.path``: pytest puts the root ``conftest.py``'s folder there, in every xdist worker too).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Union

import torch

__all__ = [
    "randn",
    "rand",
    "unary",
    "Counted",
    "around",
    "SinRight",
    "SinWithVmapRule",
    "SinOnePercentOff",
    "SinSignFlipped",
    "SinHalfRounded",
    "SquareRight",
    "SquareWithVmapRule",
    "WRONG_ELEMENT",
    "SquareOneWrongElement",
    "DoubleSignFlipped",
    "CubeDetached",
    "DoubleScalesGradOutputInPlace",
    "NAN",
    "INF",
    "load_benchmark",
    "note_codes",
    "notes_with",
]

NAN = math.nan
INF = math.inf


class Counted:
    """``fn`` counting its calls (``calls``); ``seconds`` of sleep in each: an expensive fn."""

    def __init__(self, fn: Callable, seconds: float = 0.0):
        self.fn, self.calls, self.seconds = fn, 0, seconds

    def __call__(self, *args):
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)
        return self.fn(*args)


def randn(
    *shape: int, dtype: torch.dtype = torch.float64, seed: int = 0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Standard normal values drawn in float64 from ``generator`` (default: a fresh one seeded with ``seed``),
    then cast to ``dtype``: the same values, rounded, in every dtype; the global RNG is not touched."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def rand(
    *shape: int, dtype: torch.dtype = torch.float64, seed: int = 0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Uniform values in [0, 1) drawn like :func:`randn`."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


Derivative = Callable[[torch.Tensor], Union[torch.Tensor, float]]


def unary(
    forward: Callable[[torch.Tensor], torch.Tensor],
    derivative: Derivative,
    *,
    factor: float = 1.0,
    at: Optional[int] = None,
    offset: float = 0.0,
    rounding: Optional[torch.dtype] = None,
    on_grad: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    vmap_rule: bool = False,
    jvp: Optional[float] = None,
    name: str = "Unary",
) -> type:
    """A custom Function ``y = forward(x)`` (element-wise) whose backward is ``grad * derivative(x)``, with a bug:

    - ``factor``: the whole gradient times ``factor`` (1.01: 1% too large; -1: sign flipped);
    - ``at``: only the element at this flat index is wrong, ``g[at] * factor + offset`` (``factor=NAN``: a NaN
      there; ``factor=0, offset=INF``: an inf there);
    - ``rounding``: the gradient rounded through this dtype (``torch.float16``: a half-precision backward);
    - ``on_grad``: grad_output transformed before use (``g.abs()``, ``g.clamp(-1, 1)``: a backward that is not
      linear in grad_output).

    ``vmap_rule=True`` writes it in the functorch style (``setup_context``, ``generate_vmap_rule``), which
    vmap and the batched checks can run; ``jvp`` (a factor, 1.0 for a right one) gives it a forward-mode rule
    ``t * derivative(x) * jvp``, unaffected by the backward's bugs. Otherwise it is an old-style Function that
    functorch refuses and that has no forward-mode rule.
    """

    def gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g = (grad if on_grad is None else on_grad(grad)) * derivative(x)
        if rounding is not None:
            g = g.to(rounding).to(grad.dtype)
        if at is None:
            return g * factor if factor != 1.0 else g
        g = g.clone()
        flat = g.view(-1)
        flat[at] = flat[at] * factor + offset
        return g

    if vmap_rule or jvp is not None:
        def forward_new(x):
            return forward(x)

        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return gradient(x, grad)

        def tangent(ctx, t):
            (x,) = ctx.saved_tensors
            return t * derivative(x) * jvp if jvp != 1.0 else t * derivative(x)

        body = {
            "generate_vmap_rule": vmap_rule,
            "forward": staticmethod(forward_new),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward),
        }
        if jvp is not None:
            body["jvp"] = staticmethod(tangent)
    else:
        def forward_old(ctx, x):
            ctx.save_for_backward(x)
            return forward(x)

        def backward_old(ctx, grad):
            (x,) = ctx.saved_tensors
            return gradient(x, grad)

        body = {"forward": staticmethod(forward_old), "backward": staticmethod(backward_old)}
    cls = type(name, (torch.autograd.Function,), {"__doc__": unary.__doc__.splitlines()[0], **body})
    cls.__qualname__ = name
    return cls


def around(
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    factor: float = 1.0,
    edit: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    name: str = "Around",
) -> type:
    """A custom Function around ``forward`` (any function of one tensor) whose backward is torch's own
    gradient of ``forward``, recomputed at x, times ``factor``, then passed through ``edit(x, grad)`` (a bug
    at chosen elements)."""

    def forward_old(ctx, x):
        ctx.save_for_backward(x)
        return forward(x)

    def backward_old(ctx, g):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(forward(leaf), leaf, g)
        grad = grad * factor if factor != 1.0 else grad
        return grad if edit is None else edit(x, grad)

    body = {"forward": staticmethod(forward_old), "backward": staticmethod(backward_old)}
    cls = type(name, (torch.autograd.Function,), {"__doc__": around.__doc__.splitlines()[0], **body})
    cls.__qualname__ = name
    return cls


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


def _twice(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


#: sin, right, old style (functorch refuses to transform it)
SinRight = unary(torch.sin, torch.cos, name="SinRight")
#: sin, right, with a generated vmap rule
SinWithVmapRule = unary(torch.sin, torch.cos, vmap_rule=True, name="SinWithVmapRule")
#: sin whose backward is 1% too large on every element
SinOnePercentOff = unary(torch.sin, torch.cos, factor=1.01, name="SinOnePercentOff")
#: sin whose backward has the wrong sign
SinSignFlipped = unary(torch.sin, torch.cos, factor=-1.0, name="SinSignFlipped")
#: sin with the right formula, its gradient rounded through float16
SinHalfRounded = unary(torch.sin, torch.cos, rounding=torch.float16, name="SinHalfRounded")
#: x * x, right
SquareRight = unary(_square, _twice, name="SquareRight")
#: x * x, right, with a generated vmap rule
SquareWithVmapRule = unary(_square, _twice, vmap_rule=True, name="SquareWithVmapRule")
#: the flat index of SquareOneWrongElement's wrong element
WRONG_ELEMENT = 377
#: x * x whose backward is 1.5x too large at the one element WRONG_ELEMENT (needs at least 378 elements)
SquareOneWrongElement = unary(_square, _twice, at=WRONG_ELEMENT, factor=1.5, name="SquareOneWrongElement")
#: 2 x whose backward has the wrong sign
DoubleSignFlipped = unary(_double, lambda x: 2, factor=-1.0, name="DoubleSignFlipped")
#: x**3 whose backward is right but not differentiable (computed from ``x.detach()``)
CubeDetached = unary(lambda x: x**3, lambda x: 3 * x.detach() ** 2, name="CubeDetached")


class DoubleScalesGradOutputInPlace(torch.autograd.Function):
    """2 x whose backward returns the right gradient 2 g, computed by doubling grad_output in place."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g.mul_(2)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (loaded once; ``benchmarks/`` goes on ``sys.path`` for
    the modules it imports)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def note_codes(report) -> list:
    """The codes of a report's notes, in order (``None`` for a note without one)."""
    return [getattr(n, "code", None) for n in report.notes]


def notes_with(report, code) -> list:
    """The notes of ``report`` whose code is ``code`` (a ``NoteCode`` or its value), in order."""
    return [n for n in report.notes if getattr(n, "code", None) == code]
