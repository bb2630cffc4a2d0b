"""The sympy side of expressions: trees to sympy and back, the printer, the lambdified gradients, and
reading maths written as text (a whitelist walk of Python's syntax tree: nothing is evaluated)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import sympy
from sympy.printing.str import StrPrinter

from gradcheck_kit.errors import InvalidArgument
from gradcheck_kit.strategies.symbolic.intervals import DEFAULT_BOUNDS, INF, within
from gradcheck_kit.strategies.symbolic.ops import (
    ADD,
    DIV,
    MUL,
    NUMPY_MODULES,
    POW_OPS,
    SUB,
    UNARY,
    Op,
    pow_op,
    sigmoid,
    softplus,
)
from gradcheck_kit.strategies.symbolic.tree import Apply, Const, Var, interval_of

__all__ = ["PARSE_FUNCTIONS", "gradient_function", "parse_expression", "parse_text", "to_sympy", "to_text"]


# --------------------------------------------------------------------------------------------------
# trees to sympy, and printing


class _Printer(StrPrinter):
    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Exp1(self, expr):  # e, as the text grammar writes it (a bare E would read as a variable)
        return "exp(1)"


def to_text(expr: sympy.Expr) -> str:
    return _Printer().doprint(expr)


def _sym_const(value: Fraction):
    return sympy.Rational(value.numerator, value.denominator)


def to_sympy(node, symbols, analytic: bool):
    if isinstance(node, Var):
        return symbols[node.index]
    if isinstance(node, Const):
        return _sym_const(node.value)
    args = [to_sympy(a, symbols, analytic) for a in node.args]
    return node.op.analytic(*args) if analytic else node.op.display(*args)


_lambdified: dict = {}
_LAMBDIFIED_MAX = 4096


def gradient_function(analytic: sympy.Expr, symbols: tuple):
    """A numpy function of ``symbols`` giving the derivatives of ``analytic`` by each (cached)."""
    key = (analytic, symbols)
    fn = _lambdified.get(key)
    if fn is None:
        derivatives = [sympy.diff(analytic, s) for s in symbols]
        fn = sympy.lambdify(symbols, derivatives, modules=NUMPY_MODULES)
        if len(_lambdified) >= _LAMBDIFIED_MAX:
            _lambdified.clear()
        _lambdified[key] = fn
    return fn


# --------------------------------------------------------------------------------------------------
# text to sympy


#: the functions ``Expression.parse`` reads by name (besides the user's ops)
PARSE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tanh": sympy.tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "sqrt": sympy.sqrt,
    "abs": sympy.Abs,
    "Abs": sympy.Abs,
}
_PARSE_REDUCTIONS = ("sum", "mean")
#: the largest numerator or denominator of an exponent, and of log10 of a constant power
_PARSE_MAX_EXPONENT = 10_000
_PARSE_MAX_DIGITS = 1_000
_PARSE_MAX_LENGTH = 10_000
_PARSE_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _TextReader:
    """Builds a sympy expression from the nodes of one text's syntax tree, rejecting every other node."""

    def __init__(self, text: str, functions: dict[str, Callable[..., Any]]):
        self.text = text
        self.functions = functions
        self.symbols: dict[str, sympy.Symbol] = {}

    def reject(self, why: str) -> InvalidArgument:
        return InvalidArgument(
            f"text={self.text!r} could not be parsed: {why} (allowed: numbers, variable names, "
            "+ - * / **, and calls of " + ", ".join(sorted(set(self.functions) | set(_PARSE_REDUCTIONS))) + ")"
        )

    def number(self, value, node) -> sympy.Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.reject(f"{ast.unparse(node)!r} is not a real number")
        if isinstance(value, int):
            return sympy.Integer(value)
        if not math.isfinite(value):
            raise self.reject(f"{ast.unparse(node)!r} is not finite")
        return sympy.Float(repr(value))

    def name(self, node: ast.Name) -> sympy.Expr:
        name = node.id
        if name in self.functions or name in _PARSE_REDUCTIONS:
            raise self.reject(f"the function {name!r} is used without a call")
        if name.startswith("_"):
            raise self.reject(f"the name {name!r} starts with '_'")
        if name not in self.symbols:
            self.symbols[name] = sympy.Symbol(name, real=True)
        return self.symbols[name]

    def power(self, base: sympy.Expr, exponent: sympy.Expr, node) -> sympy.Expr:
        if exponent.is_Rational:
            if max(abs(int(exponent.p)), abs(int(exponent.q))) > _PARSE_MAX_EXPONENT:
                raise self.reject(f"the exponent in {ast.unparse(node)!r} is too large")
            if base.is_Number and base != 0:
                digits = abs(float(exponent)) * abs(math.log10(abs(float(base)))) if base.is_finite else INF
                if not digits <= _PARSE_MAX_DIGITS:
                    raise self.reject(f"{ast.unparse(node)!r} is too large a number")
        elif exponent.is_Float and base.is_Number:
            if not abs(float(exponent)) <= _PARSE_MAX_EXPONENT:
                raise self.reject(f"the exponent in {ast.unparse(node)!r} is too large")
        return base**exponent

    def call(self, node: ast.Call, top: bool):
        if not isinstance(node.func, ast.Name):
            raise self.reject(f"{ast.unparse(node.func)!r} is not a function name")
        name = node.func.id
        if node.keywords:
            raise self.reject(f"{name}() takes no keyword arguments")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.reject(f"{name}() takes no starred arguments")
        if name in _PARSE_REDUCTIONS:
            if not top:
                raise self.reject(f"{name}(...) is allowed only around the whole expression")
            if len(node.args) != 1:
                raise self.reject(f"{name}() takes one argument")
            return name, self.convert(node.args[0])
        if name not in self.functions:
            raise self.reject(f"unknown function {name!r}")
        args = [self.convert(a) for a in node.args]
        try:
            return self.functions[name](*args)
        except (TypeError, ValueError) as error:
            raise self.reject(f"{name}() with {len(args)} arguments: {error}") from None

    def convert(self, node, top: bool = False):
        if isinstance(node, ast.Constant):
            return self.number(node.value, node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _PARSE_BINARY:
            return _PARSE_BINARY[type(node.op)](self.convert(node.left), self.convert(node.right))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self.power(self.convert(node.left), self.convert(node.right), node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
            raise self.reject("'^' is not a power here; write **")
        if isinstance(node, ast.Call):
            return self.call(node, top)
        raise self.reject(f"{type(node).__name__} {ast.unparse(node)!r} is not allowed")


def parse_text(text: str, functions: dict[str, Callable[..., Any]]) -> tuple[str, sympy.Expr]:
    """``(reduction, body)`` read from ``text`` by a whitelist walk of its Python syntax tree.

    Only numbers, variable names, calls of the named ``functions`` (positional arguments), a top-level
    ``sum(...)`` or ``mean(...)``, and ``+ - * / **`` and unary ``-``/``+`` are accepted; the sympy
    expression is built from those nodes, and nothing of ``text`` is evaluated as code.
    """
    reader = _TextReader(text, functions)
    if len(text) > _PARSE_MAX_LENGTH:
        raise InvalidArgument(f"text of {len(text)} characters is longer than {_PARSE_MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise reader.reject(f"invalid syntax ({error.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise reader.reject("too deeply nested or not text") from None
    try:
        result = reader.convert(tree.body, top=True)
    except RecursionError:
        raise reader.reject("too deeply nested") from None
    if isinstance(result, tuple):
        return result
    return "none", result


# --------------------------------------------------------------------------------------------------
# sympy to trees


def _from_sympy(expr, index, user, text):
    def fail(part):
        return InvalidArgument(f"text={text!r}: cannot express {part} (supported: + - * / ** with a constant "
                               "exponent, exp, log, sin, cos, tanh, sigmoid, softplus, sqrt, abs and the ops given)")

    def convert(e):
        if isinstance(e, sympy.Symbol):
            return Var(index[str(e)])
        if e.is_Rational:
            return Const(Fraction(int(e.p), int(e.q)))
        if e.is_Float:
            return Const(Fraction(str(e)))
        if isinstance(e, sympy.Add):
            terms = list(e.args)
            # put constants last so the sum reads x + 2
            terms.sort(key=lambda t: t.is_number)
            node = convert(terms[0])
            for t in terms[1:]:
                if t.could_extract_minus_sign():
                    node = Apply(SUB, (node, convert(-t)))
                else:
                    node = Apply(ADD, (node, convert(t)))
            return node
        if isinstance(e, sympy.Mul):
            numerator, denominator = sympy.fraction(e)
            if denominator != 1:
                return Apply(DIV, (convert(numerator), convert(denominator)))
            factors = list(e.args)
            node = convert(factors[0])
            for f in factors[1:]:
                node = Apply(MUL, (node, convert(f)))
            return node
        if isinstance(e, sympy.Pow):
            base, exponent = e.args
            if not exponent.is_Rational:
                if base == sympy.E:
                    return Apply(UNARY["exp"], (convert(exponent),))
                raise fail(e)
            k = Fraction(int(exponent.p), int(exponent.q))
            if k == Fraction(1, 2):
                return Apply(UNARY["sqrt"], (convert(base),))
            if k == -1:
                return Apply(DIV, (Const(Fraction(1)), convert(base)))
            op = POW_OPS.get(k) or pow_op(k)
            return Apply(op, (convert(base),))
        if isinstance(e, sympy.Abs):
            return Apply(UNARY["abs"], (convert(e.args[0]),))
        if e == sympy.E:  # exp(-1) reads as 1/E
            return Apply(UNARY["exp"], (Const(Fraction(1)),))
        name = type(e).__name__
        if isinstance(e, sympy.Function) and name in user:
            return Apply(user[name], tuple(convert(a) for a in e.args))
        if isinstance(e, sympy.Function) and name in UNARY:
            return Apply(UNARY[name], (convert(e.args[0]),))
        raise fail(e)

    return convert(expr)


def _check_domains(node, bounds, text, symbols):
    if not isinstance(node, Apply):
        return
    for arg in node.args:
        _check_domains(arg, bounds, text, symbols)
    for position, (arg, domain) in enumerate(zip(node.args, node.op.domain)):
        iv = interval_of(arg, bounds)
        intervals = node.op.intervals[position]
        if len(intervals) > 1 and any(within(iv, d) for d in intervals):
            continue
        if not within(iv, domain) or len(intervals) > 1:
            shown = to_text(to_sympy(arg, symbols, analytic=False))
            raise InvalidArgument(
                f"text={text!r}: argument {position} of {node.op.name} ({shown}) may reach {list(iv)}, outside "
                f"its domain ({domain[0]:g}, {domain[1]:g}) for inputs in bounds={list(bounds)}; narrow bounds="
            )


def _bounds_per_input(bounds, n: int) -> tuple[tuple[float, float], ...]:
    if bounds is None:
        bounds = (DEFAULT_BOUNDS,) * n
    elif len(bounds) == 2 and not isinstance(bounds[0], (tuple, list)):
        bounds = (tuple(bounds),) * n
    bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
    if len(bounds) != n or any(not lo <= hi for lo, hi in bounds):
        raise InvalidArgument(f"bounds={bounds!r} must be one (lo, hi) pair, or one per variable")
    return bounds


def parse_expression(text: str, ops: Iterable[Op], variables: Sequence[str] | None, bounds):
    """``(tree, reduction, variables, bounds)`` of an expression written as maths (see
    ``Expression.parse``), valid over the bounds."""
    if not isinstance(text, str):
        raise InvalidArgument(f"text={text!r} must be a string")
    ops = list(ops)
    for op in ops:
        if not isinstance(op, Op):
            raise InvalidArgument(f"ops={ops!r} must hold Op instances")
    user = {op.name: op for op in ops}
    functions = {**PARSE_FUNCTIONS, **{name: op.display for name, op in user.items()}}
    reduction, parsed = parse_text(text, functions)
    free = sorted(str(s) for s in parsed.free_symbols)
    if variables is None:
        variables = free
    variables = list(variables)
    if not 1 <= len(variables) <= 3 or set(variables) != set(free):
        raise InvalidArgument(f"variables={variables!r} must name the 1 to 3 variables of {text!r}, which are {free}")
    node = _from_sympy(parsed, {name: i for i, name in enumerate(variables)}, user, text)
    bounds = _bounds_per_input(bounds, len(variables))
    _check_domains(node, bounds, text, [sympy.Symbol(v) for v in variables])
    return node, reduction, variables, bounds
