"""Beyond first order: second derivatives, forward-mode AD, re-entrancy, structural checks, complex inputs."""

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import CubeDetached, DoubleScalesGradOutputInPlace, SquareRight, randn, unary

DTYPES = [torch.float32, torch.float64]


# --- custom Functions ---------------------------------------------------------------------------


class ThreeSquare(torch.autograd.Function):
    """3x^2 whose own backward is 10% off: the double backward of WrongDoubleCube."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 3 * x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 6.6 * x


class WrongDoubleCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ThreeSquare.apply(x)


ExpWrongJvp = unary(torch.exp, torch.exp, jvp=1.1, name="ExpWrongJvp")  # backward right, jvp 10% off


ExpRightJvp = unary(torch.exp, torch.exp, jvp=1.0, name="ExpRightJvp")


class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x


class MutatesSaved(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        out = g * y
        y.mul_(1.5)
        return out


class Nondeterministic(Twice):
    @staticmethod
    def backward(ctx, g):
        return 2 * g + 1e-9 * torch.rand_like(g)


class NonzeroForZeroGrad(Twice):
    @staticmethod
    def backward(ctx, g):
        return 2 * g + 1e-3 * (g == 0)


ComplexSquareNoConj = SquareRight  # d(z^2) as g·2z: right for real z; complex z wants g·conj(2z)


def _x(dtype, n=5, seed=0):
    return randn(n, dtype=dtype, seed=seed)


# --- order=2 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [torch.tanh, torch.sin, lambda x: torch.softmax(x, 0), lambda x: (x**3).sum()])
def test_second_order_passes_on_torch(fn, dtype):
    report = gk.check_gradients(fn, _x(dtype), order=2)
    assert report.ok, str(report)
    assert report.check("second_order").status == "passed"
    assert "reverse-over-reverse" in report.check("second_order").detail


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_catches_a_non_differentiable_backward(dtype):
    first = gk.check_gradients(CubeDetached.apply, _x(dtype))
    assert first.ok  # the first derivative is right
    report = gk.check_gradients(CubeDetached.apply, _x(dtype), order=2)
    assert not report.ok
    assert report.check("second_order").status == "failed"
    bad = [m for m in report.mismatches if m.check == "second_order"]
    assert bad and all(m.analytic == 0.0 for m in bad)
    assert "backward_not_differentiable" in report.note_codes, report.notes


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_catches_a_double_backward_wrong_by_a_factor(dtype):
    assert gk.check_gradients(WrongDoubleCube.apply, _x(dtype)).ok
    report = gk.check_gradients(WrongDoubleCube.apply, _x(dtype), order=2)
    assert report.check("second_order").status == "failed"
    m = max((m for m in report.mismatches if m.check == "second_order"), key=lambda m: m.ratio)
    assert m.analytic == pytest.approx(1.1 * m.numerical, rel=1e-3)


def test_a_wrong_derivative_computed_inside_fn_is_caught():
    # fn is the derivative of x³ (3·x²), computed inside fn with autograd: its own derivative runs through
    # ThreeSquare's backward (6.6·x instead of 6·x), which the numerical derivatives of fn catch
    def cube_derivative(x):
        (grad,) = torch.autograd.grad(WrongDoubleCube.apply(x).sum(), x, create_graph=True)
        return grad

    report = gk.check_gradients(cube_derivative, _x(torch.float64), forward_ad=False)
    assert not report.ok
    assert report.errors == []
    assert report.check("backward").status == "failed"
    assert report.mismatches  # auto mode's cost plan names one element; the full check lists every one
    assert len(gk.check_gradients(cube_derivative, _x(torch.float64), forward_ad=False, mode="full").mismatches) == 5
    assert "grad_inside" in report.note_codes, report.notes


# --- forward mode --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_forward_ad_catches_a_wrong_jvp_with_a_right_backward(dtype, mode):
    report = gk.check_gradients(ExpWrongJvp.apply, _x(dtype), forward_ad=True, mode=mode)
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status == "failed"
    assert report.mismatches and {m.check for m in report.mismatches} == {"forward_ad"}
    assert gk.check_gradients(ExpRightJvp.apply, _x(dtype), forward_ad=True, mode=mode).ok


def test_forward_ad_auto_skips_with_the_reason_when_unsupported():
    report = gk.check_gradients(CubeDetached.apply, _x(torch.float64))
    check = report.check("forward_ad")
    assert check.status == "skipped"
    assert "does not support forward-mode AD" in check.detail
    assert report.ok
    strict = gk.check_gradients(CubeDetached.apply, _x(torch.float64), forward_ad=True)
    assert strict.check("forward_ad").status == "error" and not strict.ok
    off = gk.check_gradients(torch.sin, _x(torch.float64), forward_ad=False)
    assert off.check("forward_ad").status == "skipped" and off.check("forward_ad").detail == "forward_ad=False"


def test_forward_ad_passes_on_torch_ops():
    report = gk.check_gradients(torch.nn.functional.gelu, _x(torch.float32, 12), forward_ad=True)
    assert report.ok and report.check("forward_ad").status == "passed"


def test_forward_ad_is_checked_by_default_where_fn_defines_its_own_jvp():
    report = gk.check_gradients(unary(torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, jvp=1.0).apply, _x(torch.float64))
    assert report.check("forward_ad").status == "passed"
    wrong_jvp = unary(torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, jvp=1.01)
    for fn in (wrong_jvp.apply, lambda t: _tanh_layers(wrong_jvp.apply(t))):  # also among many torch operations
        wrong = gk.check_gradients(fn, _x(torch.float64))
        assert wrong.check("forward_ad").status == "failed" and wrong.check("backward").status == "passed"


def _tanh_layers(t):  # 15 of torch's built-in operations
    for _ in range(5):
        t = torch.tanh(t) * 1.1 + 0.1
    return t


def test_forward_ad_of_a_few_torch_operations_is_checked_by_default():
    assert gk.check_gradients(torch.tanh, _x(torch.float64)).check("forward_ad").status == "passed"


def test_forward_ad_of_many_torch_operations_alone_is_checked_on_request():
    report = gk.check_gradients(_tanh_layers, _x(torch.float64))
    skipped = report.check("forward_ad")
    assert report.ok and skipped.status == "skipped"
    assert "15 of torch's built-in operations" in skipped.detail and "forward_ad=True" in skipped.detail
    assert gk.check_gradients(_tanh_layers, _x(torch.float64), forward_ad=True).check("forward_ad").status == "passed"


# --- re-entrancy and structure -------------------------------------------------------------------
def test_backward_that_mutates_grad_output_is_caught():
    report = gk.check_gradients(DoubleScalesGradOutputInPlace.apply, _x(torch.float64))
    assert report.check("reentrant").status == "failed"
    assert "modified grad_output in place" in report.check("reentrant").detail


def test_backward_that_mutates_a_saved_tensor_is_caught():
    report = gk.check_gradients(MutatesSaved.apply, _x(torch.float64))
    assert not report.ok
    # a custom Function's Jacobian rows come one backward each (never is_grads_batched through it): the
    # second row's backward already meets the modified tensor, before the reentrant check runs
    assert report.check("reentrant") is None
    assert len(report.errors) == 1 and "modified by an inplace operation" in report.errors[0]


def test_nondeterministic_backward_needs_nondet_tol():
    report = gk.check_gradients(Nondeterministic.apply, _x(torch.float64))
    assert report.check("reentrant").status == "failed"
    assert "nondet_tol" in report.check("reentrant").detail
    assert gk.check_gradients(Nondeterministic.apply, _x(torch.float64), nondet_tol=1e-6).ok


def test_zero_grad_output_must_give_zero_gradient():
    report = gk.check_gradients(NonzeroForZeroGrad.apply, _x(torch.float64))
    assert report.check("zero_grad_output").status == "failed"
    assert "zero grad_output gave a nonzero gradient for x" in report.check("zero_grad_output").detail


def test_correct_functions_pass_the_structural_checks():
    report = gk.check_gradients(torch.sin, _x(torch.float64))
    assert report.check("reentrant").status == "passed"
    assert report.check("zero_grad_output").status == "passed"


def test_integer_inputs_are_passed_through_and_never_differentiated():
    index = torch.tensor([2, 0, 1])
    report = gk.check_gradients(lambda x, i: x[i] * 2, _x(torch.float64, 3), index)
    assert report.ok
    assert [info.differentiated for info in report.inputs] == [True, False]
    with pytest.raises(gk.InvalidArgument, match=r"wrt=\[1\]: input 1 is a torch.int64 tensor"):
        gk.check_gradients(lambda x, i: x[i] * 2, _x(torch.float64, 3), index, wrt=[1])


def test_undefined_grad_of_one_output_is_handled():
    def two(x):
        return x.sin(), x.cos() * 3

    report = gk.check_gradients(two, _x(torch.float64))
    assert report.ok and {g.output_index for g in report.groups} == {0, 1}


# --- complex -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize(
    "fn",
    [
        lambda z: z * z,
        torch.exp,
        lambda z: (z * z.conj()).real.sum(),  # a real loss of a complex input
        lambda z: z.abs(),
        lambda z: torch.view_as_real(z * z.sin()),
    ],
)
def test_complex_functions_pass(fn, dtype):
    z = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    report = gk.check_gradients(fn, z)
    assert report.ok, str(report)


def test_complex_backward_without_the_conjugate_is_caught():
    z = torch.randn(3, generator=torch.Generator().manual_seed(2), dtype=torch.complex128)
    report = gk.check_gradients(ComplexSquareNoConj.apply, z)
    assert not report.ok
    notes = {m.note for m in report.mismatches}
    assert any("imaginary part" in n for n in notes)
    assert "complex128" in str(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_forward_over_reverse_keeps_its_tangent(dtype):
    # forward-mode passes run without grad, so the first derivative G got a dual input that did not require
    # grad, and detached it to make it so, dropping the tangent: forward-over-reverse was 0. In full mode
    # that disagreed with the checked Jacobian and every column was recomputed; in directional mode it
    # was a false alarm (second_order_forward: autograd 0, numerical 79, on sin(x)·x)
    def f(t):
        return torch.sin(t) * t

    g = torch.Generator().manual_seed(0)
    # mode="full": auto mode checks G, which cannot run under vmap, along directions (the cost plan)
    small = gk.check_gradients(f, randn(6, dtype=dtype, generator=g), order=2, mode="full", forward_ad=True)
    assert small.ok, str(small)
    assert "against the checked backward Jacobian" in small.check("second_order_forward").detail
    large = gk.check_gradients(f, randn(70_000, dtype=dtype, generator=g), order=2, forward_ad=True)
    assert large.mode == "directional" and large.ok, str(large)
    assert large.check("second_order_forward").status == "passed"
