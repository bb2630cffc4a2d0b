"""Expressions built by hand: parsing, printing, evaluation, analytic gradients, argument errors."""

import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import find

from gradcheck_kit import strategies as gst
from gradcheck_kit.errors import InvalidArgument, NoAnalyticGradient


def leaf(*values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


def autograd(expr, xs, grad_outputs=None):
    return torch.autograd.grad(expr(*xs), xs, grad_outputs=grad_outputs)


# ---- the classic examples -------------------------------------------------------------------


def test_mean_of_square_has_gradient_two_x_over_n():
    expr = gst.Expression.parse("mean(x**2)")
    x = leaf(1.0, -2.0, 3.5, 0.0)
    (grad,) = expr.gradient(x)
    torch.testing.assert_close(grad, 2 * x.detach() / 4, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, autograd(expr, (x,))[0], rtol=0, atol=1e-15)
    assert str(expr) == "mean(x**2)"
    assert expr.reduction == "mean"


def test_polynomial_without_reduction_takes_grad_outputs():
    expr = gst.Expression.parse("3*a**2 + 4*a + 2")
    assert expr.variables == ("a",) and expr.reduction == "none"
    a = leaf(0.0, 1.0, -1.5)
    v = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    (grad,) = expr.gradient(a, grad_outputs=v)
    torch.testing.assert_close(grad, (6 * a.detach() + 4) * v, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, autograd(expr, (a,), v)[0], rtol=0, atol=1e-15)
    # without grad_outputs: ones, as backward(torch.ones_like(out)) would use
    torch.testing.assert_close(expr.gradient(a)[0], 6 * a.detach() + 4, rtol=0, atol=1e-15)


def test_mean_of_shifted_square_prints_as_written():
    expr = gst.Expression.parse("mean(2*(x + 2)**2)")
    assert str(expr) == "mean(2*(x + 2)**2)"
    assert repr(expr) == "Expression.parse('mean(2*(x + 2)**2)')"
    x = leaf(1.0, 2.0, 3.0)
    torch.testing.assert_close(expr(x), torch.tensor(2 * (9 + 16 + 25) / 3, dtype=torch.float64))
    torch.testing.assert_close(expr.gradient(x)[0], 4 * (x.detach() + 2) / 3, rtol=0, atol=1e-15)


# ---- broadcasting, layouts, dtypes ----------------------------------------------------------


def test_gradient_sums_over_broadcast_dimensions():
    expr = gst.Expression.parse("sum(x*y + sin(x))")
    x = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, dtype=torch.float64, requires_grad=True)
    gx, gy = expr.gradient(x, y)
    assert gx.shape == (3, 1) and gy.shape == (4,)
    torch.testing.assert_close(gx, y.detach().sum() + 4 * torch.cos(x.detach()))
    torch.testing.assert_close(gy, x.detach().sum().expand(4))
    for mine, theirs in zip((gx, gy), autograd(expr, (x, y))):
        torch.testing.assert_close(mine, theirs)


def test_mean_divides_by_the_broadcast_size():
    expr = gst.Expression.parse("mean(x + y)")
    x, y = torch.zeros(2, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    gx, gy = expr.gradient(x, y)
    torch.testing.assert_close(gx, torch.full((2, 1), 3 / 6, dtype=torch.float64))
    torch.testing.assert_close(gy, torch.full((3,), 2 / 6, dtype=torch.float64))


def test_gradient_of_zero_dim_inputs_is_zero_dim():
    expr = gst.Expression.parse("x*y")
    x, y = torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    gx, gy = expr.gradient(x, y)
    assert gx.shape == () and gy.shape == ()
    assert float(gx) == 3.0 and float(gy) == 2.0


def test_gradient_keeps_dtype_and_is_contiguous_for_strided_inputs():
    expr = gst.Expression.parse("sum(exp(x))")
    x = torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(3, 4).t().requires_grad_()
    (grad,) = expr.gradient(x)
    assert grad.dtype == torch.float32 and grad.shape == (4, 3) and grad.is_contiguous()
    assert not grad.requires_grad
    torch.testing.assert_close(grad, torch.exp(x.detach()))


def test_grad_outputs_strategy_matches_the_reduction():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=10, deadline=None)
    @given(st.data())
    def check(data):
        for text, is_none in (("x + y", False), ("sum(x + y)", True), ("mean(x*y)", True)):
            expr = gst.Expression.parse(text)
            xs = data.draw(expr.inputs(dtype=torch.float32))
            v = data.draw(expr.grad_outputs(*xs))
            if is_none:
                assert v is None
            else:
                assert v.shape == torch.broadcast_shapes(*(x.shape for x in xs)) and v.dtype == torch.float32

    check()


# ---- user ops -------------------------------------------------------------------------------


def _softplus_sympy(s):
    return sympy.log(1 + sympy.exp(s))


def test_user_op_with_sympy_prints_by_name_and_differentiates_its_body():
    op = gst.Op("my_softplus", torch.nn.functional.softplus, sympy=_softplus_sympy)
    expr = gst.Expression.parse("sum(my_softplus(x)*x)", ops=[op])
    assert str(expr) == "sum(x*my_softplus(x))"
    assert repr(expr) == "Expression.parse('sum(x*my_softplus(x))', ops=[my_softplus])"
    assert expr.ops == (op,) and expr.has_analytic_gradient
    x = leaf(-1.0, 0.0, 2.0)
    expected = torch.sigmoid(x.detach()) * x.detach() + torch.nn.functional.softplus(x.detach())
    torch.testing.assert_close(expr.gradient(x)[0], expected)


def test_user_op_without_sympy_has_no_analytic_gradient():
    op = gst.Op("my_gelu", torch.nn.functional.gelu)
    expr = gst.Expression.parse("mean(my_gelu(x) + x)", ops=[op])
    assert not expr.has_analytic_gradient
    x = leaf(0.5, -0.5)
    with pytest.raises(NoAnalyticGradient, match=r"uses my_gelu, registered without sympy=.*gk.check_gradients"):
        expr.gradient(x)
    expr(x).backward()  # still a working torch function
    assert x.grad is not None


def test_binary_user_op_gets_tensors_for_constants():
    seen = []

    def my_mul(a, b):
        seen.append((type(a), type(b)))
        return a * b

    op = gst.Op("my_mul", my_mul, sympy=lambda a, b: a * b, arity=2)
    expr = gst.Expression.parse("sum(my_mul(x, 2))", ops=[op])
    x = leaf(1.0, 2.0)
    assert float(expr(x).detach()) == 6.0
    assert seen[-1] == (torch.Tensor, torch.Tensor)
    torch.testing.assert_close(expr.gradient(x)[0], torch.full((2,), 2.0, dtype=torch.float64))


# ---- what the printer and parser accept -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sum(abs(x - 3))",
        "mean(sigmoid(x) + softplus(y))",
        "x/(y**2 + 1)",
        "sum(sqrt(x + 3)*log(y + 3))",
        "sum((x + 3)**(3/2) + cos(x)*tanh(y))",
        "mean(1/sqrt(x + 3))",
        "sum(exp(x)*z - y)",
    ],
)
def test_text_round_trips_and_matches_autograd(text):
    expr = gst.Expression.parse(text)
    again = gst.Expression.parse(str(expr))
    assert str(again) == str(expr)
    gen = torch.Generator().manual_seed(0)
    xs = tuple(
        (torch.rand((2, 3), generator=gen, dtype=torch.float64) * 4 - 2).requires_grad_() for _ in expr.variables
    )
    v = torch.randn(2, 3, generator=gen, dtype=torch.float64) if expr.reduction == "none" else None
    for mine, theirs in zip(expr.gradient(*xs, grad_outputs=v), autograd(expr, xs, v)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_parse_rejects_expressions_invalid_over_the_bounds():
    with pytest.raises(InvalidArgument, match=r"argument 0 of log \(x\) may reach \[-2.0, 2.0\]"):
        gst.Expression.parse("sum(log(x))")
    expr = gst.Expression.parse("sum(log(x))", bounds=(0.5, 2))
    assert expr.bounds == ((0.5, 2.0),)
    with pytest.raises(InvalidArgument, match="argument 1 of div"):
        gst.Expression.parse("x/y")


def test_parse_orders_variables_and_rejects_unknown_functions():
    expr = gst.Expression.parse("a*b + b", variables=["b", "a"])
    assert expr.variables == ("b", "a")
    assert "variables=['b', 'a']" in repr(expr)
    with pytest.raises(InvalidArgument, match=r"variables=\['a'\] must name the 1 to 3 variables"):
        gst.Expression.parse("a*b", variables=["a"])
    with pytest.raises(InvalidArgument, match="unknown function 'erf'"):
        gst.Expression.parse("sum(erf(x))")
    with pytest.raises(InvalidArgument, match="cannot express"):
        gst.Expression.parse("x**y")
    with pytest.raises(InvalidArgument, match="could not be parsed"):
        gst.Expression.parse("sum(x +)")


def test_wrong_number_of_inputs_is_an_invalid_argument():
    expr = gst.Expression.parse("x*y")
    with pytest.raises(InvalidArgument, match=r"1 inputs given to x\*y, which takes 2"):
        expr(torch.ones(2))
    with pytest.raises(InvalidArgument, match="does not match the output shape"):
        expr.gradient(torch.ones(2), torch.ones(2), grad_outputs=torch.ones(3))


# ---- argument errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_inputs": 0}, "n_inputs=0 must be between 1 and 3"),
        ({"n_inputs": 4}, "n_inputs=4 must be between 1 and 3"),
        ({"max_depth": 0}, "max_depth=0 must be between 1 and 8"),
        ({"max_depth": 2.5}, "max_depth=2.5 must be between 1 and 8"),
        ({"reduction": "max"}, "reduction='max' must be one of"),
        ({"extra_ops": [torch.sin]}, "extra_ops=.* must hold Op instances"),
        ({"extra_ops": 3}, "extra_ops=3 must be a list of Op"),
    ],
)
def test_expressions_validates_its_arguments(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        gst.expressions(**kwargs)


def test_expressions_rejects_two_ops_with_one_name():
    a, b = gst.Op("twin", torch.sin), gst.Op("twin", torch.cos)
    with pytest.raises(InvalidArgument, match="two ops with the same name"):
        gst.expressions(extra_ops=[a, b])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("exp", torch.exp), {}, "name='exp' is reserved"),
        (("x", torch.exp), {}, "name='x' is reserved"),
        (("my op", torch.exp), {}, "name='my op' must be a Python identifier"),
        (("f", 3), {}, "fn=3 for op 'f' must be callable"),
        (("f", torch.exp), {"sympy": "exp"}, "sympy='exp' for op 'f' must be callable or None"),
        (("f", torch.exp), {"arity": 3}, "arity=3 for op 'f' must be 1 or 2"),
        (("f", torch.exp), {"domain": (1, 0)}, r"domain=\(1, 0\) for op 'f' needs lo < hi"),
        (("f", torch.exp), {"domain": "positive"}, "domain='positive' for op 'f' must be"),
        (("f", torch.exp), {"image": (0, math.inf)}, "image=.* must be finite"),
    ],
)
def test_op_validates_its_arguments(args, kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        gst.Op(*args, **kwargs)


def test_op_domain_forms():
    assert gst.Op("f", torch.log, domain=(0, None)).domain == ((0.0, math.inf),)
    two = gst.Op("g", torch.atan2, arity=2, domain=[(None, None), (0, None)])
    assert two.domain == ((-math.inf, math.inf), (0.0, math.inf))
    assert gst.Op("h", torch.mul, arity=2, domain=(-1, 1)).domain == ((-1.0, 1.0), (-1.0, 1.0))
    assert repr(two) == "Op('g', arity=2)"


def test_op_returning_non_finite_values_asks_for_a_domain():
    op = gst.Op("my_log", torch.log)  # no domain declared
    with pytest.raises(InvalidArgument, match="my_log.*non-finite values.*domain="):
        gst.Expression.parse("my_log(x) + 1", ops=[op])
    with pytest.raises(InvalidArgument, match="my_log.*non-finite values.*domain="):
        find(gst.expressions(extra_ops=[op]), lambda expr: True)


def test_numpy_helpers_are_stable():
    from gradcheck_kit.strategies.symbolic.ops import np_sigmoid, np_softplus

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np_softplus(np.array(1000.0)) == 1000.0
        assert np_sigmoid(np.array(-1000.0)) == 0.0
        assert np_sigmoid(np.array(0.0)) == 0.5
