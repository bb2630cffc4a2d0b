"""The ±h screens: a screened pass implies a full pass (a property over random functions, inputs and
gradient errors, the screens switched on and off), and the directional screen's decision table."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit._engine import screen
from gradcheck_kit._engine.limits import tuned
from gradcheck_kit._engine.tolerances import stencil_for

OPS = {
    "sin": torch.sin,
    "tanh": torch.tanh,
    "exp": lambda x: torch.exp(0.5 * x),
    "square": lambda x: x * x,
    "log1p_sq": lambda x: torch.log1p(x * x),
    "cube": lambda x: x * x * x,
    "softplus": torch.nn.functional.softplus,
    "abs": torch.abs,  # a kink wherever an element is 0
}


class _Off(torch.autograd.Function):
    """``op(x)`` whose backward is off by the relative error ``rel`` (0: right)."""

    @staticmethod
    def forward(ctx, x, name, rel):
        ctx.save_for_backward(x)
        ctx.name, ctx.rel = name, rel
        return OPS[name](x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(OPS[ctx.name](x), x, g)
        return grad * (1 + ctx.rel), None, None


def _function(names, rel, mixing):
    def fn(x, w):
        h = sum(_Off.apply(x, name, rel if k == 0 else 0.0) for k, name in enumerate(names))
        return h @ w if mixing else h * w.sum()
    return fn


@st.composite
def _cases(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=2))
    rel = draw(st.sampled_from([0.0, 0.0, 1e-13, 1e-10, 1e-8, 1e-6, 1e-3]))
    n = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    w = torch.randn(n, 2, generator=gen, dtype=torch.float64).requires_grad_(True)
    return _function(names, rel, draw(st.booleans())), x, w


def _both(fn, *inputs, **kw):
    with tuned() as tuning:
        screened = gk.check_gradients(fn, *inputs, forward_ad=False, **kw)
    with tuned(full_screen=False, directional_screen=False):
        unscreened = gk.check_gradients(fn, *inputs, forward_ad=False, **kw)
    return screened, unscreened, tuning


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_a_screened_full_pass_implies_a_full_pass(case):
    fn, x, w = case
    screened, unscreened, _ = _both(fn, x, w, mode="full")
    if screened.check("backward").status == "passed":
        assert unscreened.check("backward").status == "passed", (str(screened), str(unscreened))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(), st.integers(1, 3))
def test_a_screened_directional_pass_implies_a_directional_pass(case, directions):
    fn, x, w = case
    screened, unscreened, _ = _both(fn, x, w, mode="directional", directions=directions)
    if screened.check("backward").status == "passed":
        assert unscreened.check("backward").status == "passed", (str(screened), str(unscreened))


def test_the_screens_decide_a_smooth_check_and_switch_off():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, dtype=torch.float64, generator=gen).requires_grad_(True)
    w = torch.randn(5, 2, dtype=torch.float64, generator=gen).requires_grad_(True)
    fn = _function(["sin"], 0.0, True)
    screened, unscreened, _ = _both(fn, x, w, mode="full")
    assert "settled at ±h" in screened.check("backward").detail
    assert "settled at ±h" not in unscreened.check("backward").detail
    assert screened.evaluations < unscreened.evaluations
    screened, unscreened, _ = _both(fn, x, w, mode="directional")
    assert "stopped after ±h" in screened.check("backward").detail
    assert "stopped after ±h" not in unscreened.check("backward").detail


# --- the directional screen's decision table --------------------------------------------------------------
F64 = stencil_for(torch.float64)
H = 1e-4


def _phi(slope, curvature=0.0, kink=0.0):
    """phi(0), phi(+h), phi(-h) of slope·t + curvature·t² + kink·|t| at t = 0, ±H."""
    at = lambda t: slope * t + curvature * t * t + kink * abs(t)  # noqa: E731
    return torch.tensor([[at(0.0)], [at(H)], [at(-H)]], dtype=torch.float64)


@pytest.mark.parametrize(
    "a, values, allowance, decides",
    [
        (2.0, _phi(2.0), 1e-12, True),  # exact agreement
        (2.0, _phi(2.0, curvature=3.0), 1e-12, True),  # curvature cancels in the central difference
        (2.0 + 1e-3, _phi(2.0), 1e-12, False),  # autograd off: the full stencil decides
        (2.0 + 1e-3, _phi(2.0), 1e-2, True),  # ... unless within the allowance
        (2.0, _phi(2.0, kink=1.0), 1e-12, False),  # one-sided slopes differ: maybe a kink
        (math.nan, _phi(2.0), 1e-12, False),  # not finite: never decided here
        (2.0, _phi(math.inf), 1e-12, False),
    ],
)
def test_the_directional_screen_decides_only_passes(a, values, allowance, decides):
    verdict = screen.screen(
        torch.tensor([a], dtype=torch.float64), values, H, torch.tensor([1.0], dtype=torch.float64), F64,
        torch.tensor([allowance], dtype=torch.float64), 4.0,
    )
    assert (verdict is not None) == decides
    if verdict is not None:
        assert not bool(verdict.failed.any()) and bool((verdict.ratio <= 1).all())


def test_without_phi_at_zero_the_central_test_alone_decides():
    values = _phi(2.0, kink=1.0)
    args = (torch.tensor([2.0], dtype=torch.float64), values, H, torch.tensor([1.0], dtype=torch.float64), F64,
            torch.tensor([1e-12], dtype=torch.float64), 4.0)
    assert screen.screen(*args, center=True) is None
    assert screen.screen(*args, center=False) is not None


def test_the_screen_applies_to_the_two_level_stencil_only():
    assert screen.applies(stencil_for(torch.float64))
    assert not screen.applies(stencil_for(torch.float32))
    assert screen.screen(torch.zeros(1), _phi(0.0), H, torch.ones(1), stencil_for(torch.float32), torch.ones(1), 4.0) is None


# --- entries the full-mode screen leaves open ---------------------------------------------------------------
def _open_on_and_off(fn, *inputs, **kw):
    with tuned() as tuning:
        on = gk.check_gradients(fn, *inputs, forward_ad=False, **kw)
    with tuned(open_entries=False):
        off = gk.check_gradients(fn, *inputs, forward_ad=False, **kw)
    return on, off, tuning


def _counts(report):
    return [(g.input_index, g.output_index, g.compared, g.failed, g.unchecked) for g in report.groups]


class _MlpOffAt(torch.autograd.Function):
    """``tanh(x @ a) @ b`` whose gradient of input ``which`` is off by the relative error ``rel`` at its
    flat element ``at``."""

    @staticmethod
    def forward(ctx, x, a, b, which, at, rel):
        ctx.save_for_backward(x, a, b)
        ctx.which, ctx.at, ctx.rel = which, at, rel
        return torch.tanh(x @ a) @ b

    @staticmethod
    def backward(ctx, g):
        with torch.enable_grad():
            xs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
            grads = list(torch.autograd.grad(torch.tanh(xs[0] @ xs[1]) @ xs[2], xs, g))
        wrong = grads[ctx.which].clone()
        wrong.view(-1)[ctx.at % wrong.numel()] *= 1 + ctx.rel
        grads[ctx.which] = wrong
        return (*grads, None, None, None)


@st.composite
def _mlp_cases(draw):
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.3, 1.0, 3.0, 10.0]))
    which, at = draw(st.integers(0, 2)), draw(st.integers(0, 63))
    rel = draw(st.sampled_from([0.0, 0.0, 1e-10, 1e-8, 1e-6, 1e-3]))
    gen = torch.Generator().manual_seed(seed)
    inputs = [(torch.randn(*s, generator=gen, dtype=torch.float64) * scale).requires_grad_() for s in [(4, 8), (8, 8), (8, 2)]]
    return (lambda x, a, b: _MlpOffAt.apply(x, a, b, which, at, rel)), inputs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mlp_cases())
def test_entries_left_open_get_the_verdict_of_the_whole_stencil(case):
    fn, inputs = case
    on, off, _ = _open_on_and_off(fn, *inputs, mode="full", strict=True)
    assert on.check("backward").status == off.check("backward").status, (str(on), str(off))
    assert _counts(on) == _counts(off)
    assert {(m.input_index, m.index) for m in on.mismatches} == {(m.input_index, m.index) for m in off.mismatches}


def _saturated_mlp():
    gen = torch.Generator().manual_seed(0)
    x, w1, w2 = (torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_() for s in [(8, 16), (16, 16), (16, 4)])
    return (lambda x, a, b: torch.tanh(x @ a) @ b), (x, w1, w2)


def test_a_saturated_mlp_settles_its_few_open_entries_on_their_coordinates():
    fn, inputs = _saturated_mlp()
    on, off, _ = _open_on_and_off(fn, *inputs, mode="full")
    assert on.ok and off.ok
    assert "but for a few entries" in on.check("backward").detail
    assert _counts(on) == _counts(off)
    # flat entries (tanh rounds to ±1) are unchecked either way, with the same note
    assert "unchecked_flat" in on.note_codes and sorted(on.note_codes) == sorted(off.note_codes)
    assert on.evaluations < off.evaluations - 500


class _WrongAtOne(torch.autograd.Function):
    """``tanh(x @ a) @ b`` whose gradient of ``x`` is 1e-5 too large (relative) at one element."""

    @staticmethod
    def forward(ctx, x, a, b):
        ctx.save_for_backward(x, a, b)
        return torch.tanh(x @ a) @ b

    @staticmethod
    def backward(ctx, g):
        x, a, b = ctx.saved_tensors
        with torch.enable_grad():
            xs = [t.detach().requires_grad_() for t in (x, a, b)]
            grads = torch.autograd.grad(torch.tanh(xs[0] @ xs[1]) @ xs[2], xs, g)
        gx = grads[0].clone()
        gx[3, 7] *= 1 + 1e-5
        return gx, grads[1], grads[2]


def test_a_wrong_element_among_open_entries_is_found():
    _, inputs = _saturated_mlp()
    on, off, _ = _open_on_and_off(_WrongAtOne.apply, *inputs, mode="full", strict=True)
    assert not on.ok and not off.ok
    assert {(m.input_index, m.index) for m in on.mismatches} == {(0, (3, 7))}
    assert _counts(on) == _counts(off)
