"""The verdict corpus: correct functions and deliberately wrong custom ``autograd.Function``s.

Each :class:`Entry` has a function, an input builder that draws from a seeded private
``torch.Generator`` (the global RNG is never touched), the expected verdict (``"correct"`` or
``"wrong"``) and a ``kind`` that says how it is checked:

- ``"first"``: first derivatives; ours ``gk.check_gradients(fn, *inputs)`` with default settings,
  torch ``gradcheck(fn, inputs)``;
- ``"order2"``: second derivatives; ours ``order=2``, torch ``gradgradcheck``;
- ``"forward_ad"``: forward mode; ours ``forward_ad=True``, torch ``gradcheck(check_forward_ad=True)``;
- ``"module"``: an ``nn.Module``; ours ``gk.check_module_gradients(module, x)``, torch ``gradcheck`` on
  ``functional_call(module, params, x)`` with the parameters as inputs.

Builders take ``(dtype, generator)`` and return the tuple of inputs (for ``"module"`` entries:
``(module, x)``). Tensors to differentiate have ``requires_grad=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Entry", "CORPUS", "entries", "build_inputs"]


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable | None
    build: Callable[[torch.dtype, torch.Generator], tuple]
    expected: str  # "correct" | "wrong"
    kind: str = "first"  # "first" | "order2" | "forward_ad" | "module"
    quick: bool = False
    note: str = ""
    seed: int = 1234
    tags: tuple = field(default_factory=tuple)


def build_inputs(entry: Entry, dtype: torch.dtype) -> tuple:
    gen = torch.Generator().manual_seed(entry.seed)
    return entry.build(dtype, gen)


# ---------------------------------------------------------------------------------------------------
# input helpers (private generator only)
def _randn(gen, dtype, *shape, scale=1.0, grad=True):
    t = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return t.requires_grad_(grad)


def _uniform(gen, dtype, lo, hi, *shape, grad=True):
    t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    return t.requires_grad_(grad)


def _next_to_pole(dtype, gen):
    """1/x's inputs in [0.5, 1.5] with one at 1e-8: the finite-difference step (7.6e-6) reaches past the pole's
    scale there."""
    t = torch.rand(12, generator=gen, dtype=torch.float64) + 0.5
    t[3] = 1e-8
    return (t.to(dtype).requires_grad_(True),)


def _away_from_zero(gen, dtype, *shape):
    """Normal values pushed away from 0 (|x| >= 0.2) so that kinks elsewhere are not hit by accident."""
    t = torch.randn(*shape, generator=gen, dtype=torch.float64)
    t = torch.where(t.abs() < 0.2, torch.sign(t + 1e-12) * 0.2 + t, t)
    return t.to(dtype).requires_grad_(True)


# ---------------------------------------------------------------------------------------------------
# correct functions
def f_exp(x):
    return torch.exp(x)


def f_sin(x):
    return torch.sin(x)


def f_tanh(x):
    return torch.tanh(x)


def f_softmax(x):
    return torch.softmax(x, dim=-1)


def f_log_softmax(x):
    return torch.log_softmax(x, dim=-1)


def f_layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b)


def f_matmul(a, b):
    return a @ b


def f_conv1d(x, w, b):
    return F.conv1d(x, w, b, padding=1)


def f_attention(q, k, v):
    d = q.shape[-1]
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v


def f_cross_entropy(logits, target):
    return F.cross_entropy(logits, target)


def f_solve(a, b):
    return torch.linalg.solve(a, b)


def f_sin_times_x_sum(x):
    return (x.sin() * x).sum()


def f_relu(x):
    return torch.relu(x)


def f_abs(x):
    return torch.abs(x)


def f_amax(x):
    return torch.amax(x, dim=1)


def f_max(x):
    return torch.max(x)


def f_sigmoid(x):
    return torch.sigmoid(x)


def f_gelu(x):
    return F.gelu(x)


def f_mlp(x, w1, b1, w2, b2):
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def f_logsumexp(x):
    return torch.logsumexp(x, dim=-1)


def f_rational(x, y):
    return x**3 / (1 + y**2)


def f_prod(x):
    return torch.prod(x)


def f_norm(x):
    return torch.linalg.vector_norm(x)


def f_std(x):
    return torch.std(x, dim=0)


def f_softplus(x):
    return F.softplus(x)


def f_reciprocal(x):
    return torch.reciprocal(x)


def f_steep_tanh(x):
    return torch.tanh(1e6 * x)


def f_sin_float32_inside(x):
    return torch.sin(x.float()).to(x.dtype)


def f_mse(pred, target):
    return F.mse_loss(pred, target)


# correct custom Functions (counterparts of the wrong ones below)
class GoodSin(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)


class GoodMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.transpose(-2, -1), a.transpose(-2, -1) @ g


class GoodTwoOutputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x), torch.exp(x)

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        return g1 * torch.cos(x) + g2 * torch.exp(x)


def f_good_sin(x):
    return GoodSin.apply(x)


def f_good_matmul(a, b):
    return GoodMatmul.apply(a, b)


def f_good_two_outputs(x):
    return GoodTwoOutputs.apply(x)


# ---------------------------------------------------------------------------------------------------
# deliberately wrong custom Functions
class SinTooLarge(torch.autograd.Function):
    """sin, gradient 1% too large."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x) * 1.01


class ExpSignFlip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return -g * y


class XSinXMissingTerm(torch.autograd.Function):
    """x·sin x, backward forgets the sin x term of the product rule."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * torch.cos(x)


class BroadcastAddMean(torch.autograd.Function):
    """x + b with b broadcast over rows; backward of b takes the mean over rows instead of the sum."""

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, g):
        return g, g.mean(dim=0)


class MatmulNoTranspose(torch.autograd.Function):
    """a @ b on square matrices; grad of a uses b instead of bᵀ (shapes still match)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b, a.transpose(-2, -1) @ g


class TanhHalfBackward(torch.autograd.Function):
    """tanh whose backward is rounded through float16."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        grad = g * (1 - y * y)
        return grad.half().to(g.dtype)


WRONG_INDEX = 137


class SinOneWrong(torch.autograd.Function):
    """sin on 1,000 elements; one gradient element (index 137) doubled."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grad = g * torch.cos(x)
        scale = torch.ones_like(grad)
        scale.view(-1)[WRONG_INDEX] = 2.0
        return grad * scale


class TwoOutputsSecondIgnored(torch.autograd.Function):
    """(sin x, exp x); backward ignores the gradient of the second output."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x), torch.exp(x)

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        return g1 * torch.cos(x)


class SinSquareNoChain(torch.autograd.Function):
    """sin(x²), backward forgets the inner derivative 2x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x * x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x * x)


class LinearNoBiasGrad(torch.autograd.Function):
    """x @ wᵀ + b; backward returns a zero gradient for b."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x, torch.zeros_like(g[0])


# ---------------------------------------------------------------------------------------------------
# issue 3: second order, forward mode, modules
class GoodCosMul(torch.autograd.Function):
    """g·cos(x), with a correct backward (so sin built on it is twice differentiable)."""

    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return g * torch.cos(x)

    @staticmethod
    def backward(ctx, h):
        g, x = ctx.saved_tensors
        return h * torch.cos(x), -h * g * torch.sin(x)


class BadCosMul(torch.autograd.Function):
    """g·cos(x) whose own backward (the double backward of sin) is 10% off in x."""

    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return g * torch.cos(x)

    @staticmethod
    def backward(ctx, h):
        g, x = ctx.saved_tensors
        return h * torch.cos(x), -h * g * torch.sin(x) * 1.1


class SinTwiceGood(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return GoodCosMul.apply(g, x)


class SinDoubleBackwardOff(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return BadCosMul.apply(g, x)


class CubeDetachedBackward(torch.autograd.Function):
    """x³ whose backward detaches x: first derivative right, second derivative comes out zero."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x.detach() ** 2


class CubeDifferentiableBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x**2


class SinGoodJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return torch.cos(x) * t


class SinBadJvp(torch.autograd.Function):
    """sin with a right backward and a jvp 10% too large."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 1.1 * torch.cos(x) * t


class LinearFn(torch.autograd.Function):
    """x @ wᵀ + b with a correct backward."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x, g.sum(0)


class LinearWeightGradTransposed(torch.autograd.Function):
    """x @ wᵀ + b (square w) whose weight gradient is transposed."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, (g.T @ x).T, g.sum(0)


class CustomLinear(nn.Module):
    def __init__(self, n: int, fn_cls, dtype, gen):
        super().__init__()
        self.fn_cls = fn_cls
        self.weight = nn.Parameter(torch.randn(n, n, generator=gen, dtype=torch.float64).to(dtype) / math.sqrt(n))
        self.bias = nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64).to(dtype))

    def forward(self, x):
        return self.fn_cls.apply(x, self.weight, self.bias)


def _module_builder(kind):
    def build(dtype, gen):
        if kind == "nn":
            torch_state = torch.random.get_rng_state()
            try:
                m = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
            finally:
                torch.random.set_rng_state(torch_state)
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(8))
            m = m.to(dtype)
        else:
            m = CustomLinear(8, kind, dtype, gen)
        x = _randn(gen, dtype, 5, 8)
        return m, x

    return build


# ---------------------------------------------------------------------------------------------------
# builders for the special inputs
def _relu_zeros(dtype, gen):
    x = torch.randn(40, generator=gen, dtype=torch.float64)
    x[::4] = 0.0
    return (x.to(dtype).requires_grad_(True),)


def _ties(dtype, gen):
    # values on a coarse grid, so rows have repeated maxima
    x = torch.randint(0, 4, (6, 8), generator=gen).to(torch.float64) * 0.5
    x[:, 0] = x.amax(dim=1)  # at least one tie per row
    return (x.to(dtype).requires_grad_(True),)


def _global_tie(dtype, gen):
    x = torch.randn(30, generator=gen, dtype=torch.float64)
    m = x.max()
    x[3] = m
    x[17] = m
    return (x.to(dtype).requires_grad_(True),)


def _solve(dtype, gen):
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64) * 0.3 + 4 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    return a.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)


def _cross_entropy(dtype, gen):
    logits = _randn(gen, dtype, 8, 10)
    target = torch.randint(0, 10, (8,), generator=gen)
    return logits, target


def _mlp(dtype, gen):
    return (
        _randn(gen, dtype, 4, 8),
        _randn(gen, dtype, 16, 8, scale=1 / math.sqrt(8)),
        _randn(gen, dtype, 16, scale=0.1),
        _randn(gen, dtype, 4, 16, scale=1 / math.sqrt(16)),
        _randn(gen, dtype, 4, scale=0.1),
    )


def _conv1d(dtype, gen):
    return _randn(gen, dtype, 2, 3, 16), _randn(gen, dtype, 4, 3, 3, scale=0.5), _randn(gen, dtype, 4, scale=0.1)


def _attention(dtype, gen):
    return tuple(_randn(gen, dtype, 2, 8, 16) for _ in range(3))


def _layer_norm(dtype, gen):
    return _randn(gen, dtype, 6, 32), _uniform(gen, dtype, 0.5, 1.5, 32), _randn(gen, dtype, 32, scale=0.1)


def _std(dtype, gen):
    return (_randn(gen, dtype, 10, 5),)


def _pair(shape_a, shape_b, scale=1.0):
    def build(dtype, gen):
        return _randn(gen, dtype, *shape_a, scale=scale), _randn(gen, dtype, *shape_b, scale=scale)

    return build


def _one(*shape, scale=1.0):
    def build(dtype, gen):
        return (_randn(gen, dtype, *shape, scale=scale),)

    return build


def _mse(dtype, gen):
    return _randn(gen, dtype, 6, 7), _randn(gen, dtype, 6, 7, grad=False)


def _linear_inputs(dtype, gen):
    return _randn(gen, dtype, 5, 8), _randn(gen, dtype, 8, 8, scale=1 / math.sqrt(8)), _randn(gen, dtype, 8)


# ---------------------------------------------------------------------------------------------------
CORPUS: list[Entry] = [
    # -- correct, first order -----------------------------------------------------------------
    Entry("exp on [-10, 10]", f_exp, lambda d, g: (_uniform(g, d, -10, 10, 200),), "correct", quick=True),
    Entry("sin", f_sin, _one(50), "correct", quick=True),
    Entry("tanh", f_tanh, _one(10, 10, scale=2), "correct"),
    Entry("softmax", f_softmax, _one(8, 16, scale=2), "correct", quick=True),
    Entry("log_softmax", f_log_softmax, _one(8, 16, scale=2), "correct"),
    Entry("layer_norm (x, weight, bias)", f_layer_norm, _layer_norm, "correct"),
    Entry("matmul 64×64 (both inputs)", f_matmul, _pair((64, 64), (64, 64)), "correct"),
    Entry("conv1d (x, weight, bias)", f_conv1d, _conv1d, "correct", quick=True),
    Entry("attention softmax(QKᵀ/√d)V", f_attention, _attention, "correct"),
    Entry("cross_entropy", f_cross_entropy, _cross_entropy, "correct"),
    Entry("linalg.solve (well-conditioned)", f_solve, _solve, "correct"),
    Entry("sum(sin(x)·x), 20,000 elements", f_sin_times_x_sum, _one(20000, scale=2), "correct"),
    Entry("relu at exact zeros", f_relu, _relu_zeros, "correct", quick=True),
    Entry("abs at exact zeros", f_abs, _relu_zeros, "correct"),
    Entry("amax(dim=1) with ties", f_amax, _ties, "correct", quick=True),
    Entry("max() with a tie", f_max, _global_tie, "correct"),
    Entry("sigmoid", f_sigmoid, _one(30, scale=3), "correct"),
    Entry("gelu", f_gelu, _one(30, scale=2), "correct"),
    Entry("softplus", f_softplus, _one(30, scale=3), "correct"),
    Entry("MLP 8→16→4 tanh (x and weights)", f_mlp, _mlp, "correct"),
    Entry("logsumexp", f_logsumexp, _one(6, 9, scale=3), "correct"),
    Entry("x³/(1+y²)", f_rational, _pair((12,), (12,)), "correct"),
    Entry("prod", f_prod, lambda d, g: (_uniform(g, d, 0.5, 1.5, 10),), "correct"),
    Entry("vector_norm", f_norm, _one(25), "correct"),
    Entry("std(dim=0)", f_std, _std, "correct"),
    Entry("mse_loss", f_mse, _mse, "correct"),
    Entry("custom sin Function (right)", f_good_sin, _one(1000), "correct", quick=True),
    Entry("1/x with one x = 1e-8 (a pole closer than the step)", f_reciprocal, _next_to_pole, "correct"),
    Entry("sin computed in float32 inside (a float32 kernel)", f_sin_float32_inside, _one(30), "correct"),
    Entry("tanh(1e6·x) within 3e-6 of 0 (steeper than the step)", f_steep_tanh,
          lambda d, g: (_uniform(g, d, -3e-6, 3e-6, 8),), "correct"),
    Entry("custom matmul Function (right)", f_good_matmul, _pair((8, 8), (8, 8)), "correct"),
    Entry("custom two-output Function (right)", f_good_two_outputs, _one(20), "correct"),
    # -- wrong, first order -------------------------------------------------------------------
    Entry("gradient 1% too large (sin)", SinTooLarge.apply, _one(20), "wrong", quick=True),
    Entry("sign flip (exp)", ExpSignFlip.apply, _one(20), "wrong"),
    Entry("missing product-rule term d(x·sin x)", XSinXMissingTerm.apply, _one(20), "wrong", quick=True),
    Entry("mean instead of sum over broadcast dim", BroadcastAddMean.apply, _pair((6, 5), (5,)), "wrong"),
    Entry("matmul backward missing transpose (8×8)", MatmulNoTranspose.apply, _pair((8, 8), (8, 8)), "wrong"),
    Entry("backward rounded through float16 (tanh)", TanhHalfBackward.apply, _one(30), "wrong", quick=True),
    Entry("one wrong element (×2) of 1,000 (sin)", SinOneWrong.apply, _one(1000), "wrong", quick=True),
    Entry("second output's gradient ignored", TwoOutputsSecondIgnored.apply, _one(20), "wrong"),
    Entry("missing chain-rule factor d sin(x²)", SinSquareNoChain.apply, _one(20), "wrong"),
    Entry("linear: zero bias gradient", LinearNoBiasGrad.apply, _linear_inputs, "wrong"),
    # -- issue 3: second order ----------------------------------------------------------------
    Entry("order 2: tanh", f_tanh, _one(12), "correct", kind="order2"),
    Entry("order 2: softmax", f_softmax, _one(3, 5), "correct", kind="order2"),
    Entry("order 2: custom sin, differentiable backward", SinTwiceGood.apply, _one(12), "correct", kind="order2"),
    Entry("order 2: custom x³, differentiable backward", CubeDifferentiableBackward.apply, _one(12), "correct", kind="order2"),
    Entry("order 2: backward uses .detach() (x³)", CubeDetachedBackward.apply, _one(12), "wrong", kind="order2", quick=True),
    Entry("order 2: double backward 10% off (sin)", SinDoubleBackwardOff.apply, _one(12), "wrong", kind="order2"),
    # -- issue 3: forward mode ----------------------------------------------------------------
    Entry("forward AD: sin(x)·x", f_sin_times_x_sum, _one(20), "correct", kind="forward_ad"),
    Entry("forward AD: custom sin, right jvp", SinGoodJvp.apply, _one(20), "correct", kind="forward_ad"),
    Entry("forward AD: jvp 10% too large, backward right", SinBadJvp.apply, _one(20), "wrong", kind="forward_ad", quick=True),
    # -- issue 3: modules ---------------------------------------------------------------------
    Entry("module: nn.Sequential(Linear, Tanh, Linear)", None, _module_builder("nn"), "correct", kind="module"),
    Entry("module: custom linear (right)", None, _module_builder(LinearFn), "correct", kind="module"),
    Entry("module: weight gradient transposed (8×8)", None, _module_builder(LinearWeightGradTransposed), "wrong", kind="module", quick=True),
]


def entries(quick: bool = False) -> list[Entry]:
    return [e for e in CORPUS if e.quick] if quick else list(CORPUS)
