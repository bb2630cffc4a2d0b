"""A directional check of more than 2^16 float32 coordinates defers its float64 probe (the first point x + h·u
is the probe); once f(x) in float64 is evaluated, it is compared with the float32 outputs as an undeferred
probe is: a float64 run that computes another function is set aside there too (issue 18)."""

import torch

import gradcheck_kit as gk

N = 1 << 17


def finfo_scaled(x):
    # 1% larger in float32 than in float64: another function in float64
    return torch.sin(x) * (1 + 1e5 * torch.finfo(x.dtype).eps)


class _TenPercentOff(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 1.1


def _codes(report):
    return [getattr(n, "code", None) for n in report.notes]


def test_deferred_probe_sets_aside_a_float64_run_of_another_function():
    x = torch.randn(N, generator=torch.Generator().manual_seed(0))
    report = gk.check_gradients(finfo_scaled, x, mode="directional")
    assert report.ok, report
    assert "reference_differs" in _codes(report)
    assert "at the float32 point" not in report.method


def test_deferred_probe_keeps_catching_a_wrong_backward():
    x = torch.randn(N, generator=torch.Generator().manual_seed(0))
    # float32 numerics resolve about 1% of a projection's scale, which one projection may fall far below:
    # a 10% error, 4 directions
    wrong = lambda t: _TenPercentOff.apply(finfo_scaled(t))  # noqa: E731
    report = gk.check_gradients(wrong, x, mode="directional", directions=4, forward_ad=False)
    assert not report.ok
    assert "reference_differs" in _codes(report)


def test_deferred_probe_of_the_same_function_keeps_float64_numerics():
    x = torch.randn(N, generator=torch.Generator().manual_seed(0))
    report = gk.check_gradients(torch.sin, x, mode="directional")
    assert report.ok and "reference_differs" not in _codes(report)
    wrong = gk.check_gradients(lambda t: _TenPercentOff.apply(torch.sin(t)), x, mode="directional")
    assert not wrong.ok and "at the float32 point" in wrong.method
