"""Expression.parse reads maths through a whitelist of syntax: nothing in the text runs as code, anything
outside numbers, variable names, the registered ops and + - * / ** is an InvalidArgument, and every
expression the strategies print still parses back to the same function."""

import pytest
import sympy
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradcheck_kit import strategies as gst
from gradcheck_kit.errors import InvalidArgument


def test_code_in_the_text_is_not_run(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgument, match="could not be parsed"):
        gst.Expression.parse('__import__("os").system("echo PWNED")')
    with pytest.raises(InvalidArgument, match="could not be parsed"):
        gst.Expression.parse('open("p.txt","w").write("x") + x')
    out, err = capfd.readouterr()
    assert "PWNED" not in out + err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, why",
    [
        ("x.real", "Attribute"),
        ("x.__class__", "Attribute"),
        ("sin(x).func(y)", "is not a function name"),
        ("x[0]", "Subscript"),
        ("(lambda: x)()", "is not a function name"),
        ("lambda: x", "Lambda"),
        ("__import__", "starts with '_'"),
        ("__builtins__ + x", "starts with '_'"),
        ("_x + 1", "starts with '_'"),
        ("[x for x in y]", "ListComp"),
        ("sum(x for x in y)", "GeneratorExp"),
        ("sin(x=1)", "no keyword arguments"),
        ("sin(*x)", "no starred arguments"),
        ("'x'", "not a real number"),
        ("x + 'a'", "not a real number"),
        ("True*x", "not a real number"),
        ("1j*x", "not a real number"),
        ("1e999*x", "not finite"),
        ("eval('x')", "unknown function 'eval'"),
        ("getattr(x, 'real')", "unknown function 'getattr'"),
        ("erf(x)", "unknown function 'erf'"),
        ("sin + x", "used without a call"),
        ("x if y else z", "IfExp"),
        ("x < y", "Compare"),
        ("(x, y)", "Tuple"),
        ("x^2", r"write \*\*"),
        ("x @ y", "BinOp"),
        ("x // 2", "BinOp"),
        ("x := 1", "invalid syntax"),
        ("x; y", "invalid syntax"),
        ("sum(sum(x))", "only around the whole expression"),
        ("x + mean(x)", "only around the whole expression"),
        ("sin(x, y)", "sin"),
        ("9**9**9*x", "too large"),
        ("x**100000", "too large"),
        ("(10**600)**5*x", "too large a number"),
        ("(" * 500 + "x" + ")" * 500, "could not be parsed"),
    ],
)
def test_anything_outside_the_whitelist_is_an_invalid_argument(text, why):
    with pytest.raises(InvalidArgument, match=why):
        gst.Expression.parse(text)


def test_what_the_whitelist_allows():
    op = gst.Op("my_mul", torch.mul, sympy=lambda a, b: a * b, arity=2)
    expr = gst.Expression.parse("sum(-my_mul(x, 2.5) + +y**(-1/2) - abs(x)/3)", ops=[op], bounds=(0.5, 2))
    assert expr.variables == ("x", "y") and expr.reduction == "sum"
    x = torch.tensor([0.5, 1.0], dtype=torch.float64)
    y = torch.tensor([4.0, 1.0], dtype=torch.float64) / 2
    expected = (-2.5 * x + y**-0.5 - x.abs() / 3).sum()
    torch.testing.assert_close(expr(x, y), expected)
    with pytest.raises(InvalidArgument, match="my_mul"):  # an op only when it is given
        gst.Expression.parse("my_mul(x, 2)")


_OP = gst.Op("my_op", torch.sin, sympy=sympy.sin)
_BINARY = gst.Op("my_bin", torch.mul, sympy=lambda a, b: a * b, arity=2)
_NO_SYMPY = gst.Op("my_tanh", torch.tanh)
_POINTS = torch.tensor([-1.9, -1.1, -0.3, 0.4, 1.2, 1.95], dtype=torch.float64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(gst.expressions(max_depth=4), gst.expressions(extra_ops=[_OP, _BINARY, _NO_SYMPY])))
def test_every_printed_expression_parses_back_to_the_same_function(expr):
    text = str(expr)
    assume(expr.sympy.free_symbols)  # sympy may cancel every variable (x - x): nothing left to parse
    again = gst.Expression.parse(text, ops=expr.ops)
    assert again.reduction == expr.reduction
    assert str(gst.Expression.parse(str(again), ops=expr.ops)) == str(again)
    values = {name: _POINTS.roll(i) for i, name in enumerate("xyz")}
    with torch.no_grad():
        mine = expr(*(values[v] for v in expr.variables))
        theirs = again(*(values[v] for v in again.variables))
    torch.testing.assert_close(theirs, mine, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("text", ["sum((x**6/2 + 1)*exp(-1))", "sum(x*exp(1))", "sum(x/exp(2))"])
def test_a_constant_power_of_e_prints_and_parses_back(text):
    # sympy turns exp(-1) into 1/E and exp(1)*x into E*x: E must print as exp(1) and parse as a constant
    expr = gst.Expression.parse(text)
    again = gst.Expression.parse(str(expr))
    assert str(again) == str(expr) and again.variables == expr.variables == ("x",)
    x = torch.tensor([0.3, 1.2], dtype=torch.float64)
    torch.testing.assert_close(again(x), expr(x), rtol=1e-12, atol=0)
