"""A float64 run that computes another function than the inputs' dtype (issue 18, item 1), and the round-off
of torch's own float32 ops whose intermediates cancel (item 3)."""

import pytest
import torch
import torch.nn.functional as F

import gradcheck_kit as gk
from tests.helpers import note_codes, unary


_OnePercentOff = unary(lambda y: y.clone(), lambda y: 1, factor=1.01)  # a 1% wrong backward of what it wraps


def finfo_clamp(x):
    return torch.sqrt((x * x).sum(-1) + torch.finfo(x.dtype).eps)


def dtype_parameters(x):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 4, generator=gen, dtype=x.dtype)  # 16 or more: other numbers in float64
    return torch.tanh(x @ w.T)


def dtype_tolerance(x):
    # a fixed-point solve y = tanh(y)/2 + x, iterated as long as the dtype's tolerance asks
    tol = 1e-2 if x.dtype == torch.float32 else 1e-12
    y = torch.zeros_like(x)
    for _ in range(200):
        y_next = 0.5 * torch.tanh(y) + x
        done = bool(((y_next - y).abs() < tol).all())
        y = y_next
        if done:
            break
    return y


CASES = {
    "finfo_eps": (finfo_clamp, lambda: torch.randn(3, 4) * 1e-3),
    "dtype_parameters": (dtype_parameters, lambda: torch.randn(3, 4)),
    "dtype_tolerance": (dtype_tolerance, lambda: torch.randn(3, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_run_of_another_function_is_set_aside(name):
    fn, make = CASES[name]
    torch.manual_seed(0)
    x = make()
    report = gk.check_gradients(fn, x)
    assert report.ok, report
    notes = [n for n in report.notes if getattr(n, "code", None) == "reference_differs"]
    assert len(notes) == 1
    assert "float32" in report.method and "at the float32 point" not in report.method
    # the same function in float64 keeps its float64 numerics
    report64 = gk.check_gradients(fn, x.double())
    assert report64.ok and not any(getattr(n, "code", None) == "reference_differs" for n in report64.notes)


def finfo_clamp_unit_x(x):
    # the same clamp where x is of unit size (float32 numerics then step at the scale of x)
    return torch.sqrt(1e-6 * (x * x).sum(-1) + torch.finfo(x.dtype).eps)


WRONG_CASES = {
    "finfo_eps": (finfo_clamp_unit_x, lambda: torch.randn(3, 4)),
    "dtype_parameters": CASES["dtype_parameters"],
    "dtype_tolerance": CASES["dtype_tolerance"],
}


@pytest.mark.parametrize("name", sorted(WRONG_CASES))
def test_one_percent_wrong_backward_still_fails_there(name):
    fn, make = WRONG_CASES[name]
    torch.manual_seed(0)
    assert gk.check_gradients(fn, make()).ok
    torch.manual_seed(0)
    report = gk.check_gradients(lambda x: _OnePercentOff.apply(fn(x)), make())
    assert not report.ok
    assert any(getattr(n, "code", None) == "reference_differs" for n in report.notes)


def elementwise_finfo_clamp(t):
    return (t * t + torch.finfo(t.dtype).eps).sqrt()


def test_an_elementwise_clamp_that_changes_one_small_element_is_checked_in_the_inputs_dtype():
    # the whole outputs agree within float32 rounding; t[0]'s element differs by 1.3% in float64
    t = torch.tensor([-0.0021, 0.3, 0.5, -0.7])
    report = gk.check_gradients(elementwise_finfo_clamp, t)
    assert report.ok, report
    assert "reference_differs" in note_codes(report)
    assert "evaluated in float32" in report.method
    # without the small element the float64 numerics stay
    assert "reference_differs" not in note_codes(gk.check_gradients(elementwise_finfo_clamp, t[1:]))


# seeds of randn(3, 4) that put an element within 0.01 of the clamp's bend (curvature scale sqrt(eps) ~ 3e-4),
# well inside the float32 stencil's reach (4h = 0.125): the central estimates at h and h/8 straddle the bend
NEAR_BEND_SEEDS = (17, 37, 46, 64, 66)


def _near_bend(seed):
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", NEAR_BEND_SEEDS)
def test_an_elementwise_clamp_next_to_its_bend_passes_on_its_one_sided_slopes(seed):
    report = gk.check_gradients(elementwise_finfo_clamp, _near_bend(seed))
    assert report.ok, report
    codes = note_codes(report)
    assert "reference_differs" in codes and "kink" in codes


def test_a_summed_elementwise_clamp_next_to_its_bend_passes():
    report = gk.check_gradients(lambda t: elementwise_finfo_clamp(t).sum(), torch.tensor([-0.0021, 0.3, 0.5]))
    assert report.ok, report
    assert "reference_differs" in note_codes(report)


def _clamp_derivative(t):
    return t / elementwise_finfo_clamp(t)


@pytest.mark.parametrize("factor", [0.9, 1.1])
@pytest.mark.parametrize("seed", NEAR_BEND_SEEDS[:2])
def test_a_wrong_derivative_next_to_the_bend_stays_caught(seed, factor):
    t = _near_bend(seed)
    at = int(t.abs().reshape(-1).argmin())  # the element next to the bend
    wrong = unary(elementwise_finfo_clamp, _clamp_derivative, factor=factor, at=at)
    report = gk.check_gradients(wrong.apply, t)
    assert not report.ok
    assert [m.index for m in report.mismatches if m.check == "backward"] == [
        tuple(int(v) for v in divmod(at, 4))
    ]


@pytest.mark.slow
def test_an_elementwise_clamp_passes_for_every_seed():
    failed = [s for s in range(80) if not gk.check_gradients(elementwise_finfo_clamp, _near_bend(s)).ok]
    assert failed == []


def test_a_float32_only_wrong_backward_stays_caught_where_the_forwards_agree_per_element():
    wrong32 = unary(  # a backward 1% off in float32 only
        lambda t: (t * t + 1e-30).sqrt(), lambda t: t / (t * t + 1e-30).sqrt() * (1.01 if t.dtype == torch.float32 else 1)
    )
    report = gk.check_gradients(wrong32.apply, torch.tensor([-0.0021, 0.3, 0.5, -0.7]))
    assert not report.ok
    assert "reference_differs" not in note_codes(report)


def test_same_function_in_float64_keeps_the_float64_reference():
    torch.manual_seed(0)
    report = gk.check_gradients(lambda x: torch.sin(x) * x.exp(), torch.randn(5))
    assert report.ok and "at the float32 point" in report.method
    assert not any(getattr(n, "code", None) == "reference_differs" for n in report.notes)


OPS = {
    "gelu": (F.gelu, (-10.0, 10.0)),
    "erf": (torch.erf, (-10.0, 10.0)),
    "log1p": (torch.log1p, (-0.99, 1e4)),
    "expm1": (torch.expm1, (-10.0, 10.0)),
    "sigmoid": (torch.sigmoid, (-10.0, 10.0)),
    "tanh": (torch.tanh, (-10.0, 10.0)),
    "softplus": (F.softplus, (-10.0, 10.0)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_torch_float32_ops_pass_over_a_wide_range(name):
    op, (lo, hi) = OPS[name]
    x = torch.linspace(lo, hi, 200)
    assert gk.check_gradients(op, x).ok
    # the tail in groups of four, as a fuzzer draws them (gelu's backward at -5 is 2.4e-8 off, eps against
    # intermediates of size 1 while its derivative is 1e-6)
    for v in (-5.0, -4.5, -4.0, -3.0):
        if v > lo:
            report = gk.check_gradients(op, torch.full((4,), v))
            assert report.ok, report


def test_gelu_tail_with_a_one_percent_wrong_backward_fails():
    report = gk.check_gradients(lambda x: _OnePercentOff.apply(F.gelu(x)), torch.full((4,), -4.0))
    assert not report.ok


class _Float32Inside(torch.autograd.Function):
    """i0e computed in float32 inside a float64 function (a library's ``torch.Tensor(out)``), its backward
    exact in float64; ``factor`` scales the backward (1.01: a 1% wrong backward)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.save_for_backward(x)
        ctx.factor = factor
        return torch.special.i0e(x.float()).double()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.factor * (torch.special.i1e(x) - torch.sign(x) * torch.special.i0e(x)), None


def _float32_inside(factor):
    return lambda x: _Float32Inside.apply(x, factor) + torch.log(x)


@pytest.mark.parametrize("seed", range(5))
def test_float32_staircase_inside_a_float64_function_is_seen(seed):
    x = torch.rand(3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3 + 0.5
    report = gk.check_gradients(_float32_inside(1.0), x, seed=seed)
    assert report.ok, report
    codes = note_codes(report)
    assert codes == ["staircase"], report.notes
    assert report.notes[0].fields == ("float32",)
    assert not gk.check_gradients(_float32_inside(1.01), x, seed=seed).ok


def test_smooth_float64_function_with_second_opinions_is_no_staircase():
    # 1/x near a small x needs smaller steps: its notes stay, no staircase is reported
    report = gk.check_gradients(lambda x: 1.0 / x, torch.tensor([1e-6, 2.0, 3.0], dtype=torch.float64))
    assert report.ok
    assert "staircase" not in note_codes(report)
