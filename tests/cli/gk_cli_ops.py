"""Functions for the command-line tests, imported by ``gradcheck-kit`` through ``PYTHONPATH``.

Not a test module (no ``test_`` prefix): ``tests/cli`` is put on ``PYTHONPATH`` of the subprocess.
"""

import sys

import torch

NOT_A_FUNCTION = 3


def good_square(x):
    return x * x


class _WrongSquare(torch.autograd.Function):
    """``x**2`` whose backward is off by 5 %: ``2.1 * x`` instead of ``2 * x``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2.1 * x * grad


def wrong_square(x):
    return _WrongSquare.apply(x)


class _WrongAboveThreshold(torch.autograd.Function):
    """``x**2`` whose backward is wrong only where an element exceeds 2.5."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x > 2.5, 3 * x, 2 * x) * grad


def wrong_above_threshold(x):
    return _WrongAboveThreshold.apply(x)


def add_scaled(x, y, scale=1.0):
    return x + scale * y


def raises(x):
    raise RuntimeError("boom inside the function")


def returns_a_string(x):
    return "not a tensor"


def exits(x):
    sys.exit(5)


def raises_type_error_on_long_inputs(x):
    if x.shape[0] > 2:
        raise TypeError("inputs longer than 2 are not supported")
    return x * x


class _WrongForSecond(torch.autograd.Function):
    """``x * y`` whose gradient for ``y`` is off by 10 %; the one for ``x`` is right."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad * y, 1.1 * grad * x


def wrong_for_second(x, y):
    return _WrongForSecond.apply(x, y)


def catalogue_with_a_wrong_op():
    """The audit's catalogue plus ``wrong_square`` (for the audit's failing case)."""
    from gradcheck_kit import audit

    def inputs(dtype, generator):
        return (torch.randn(3, 4, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(True),)

    wrong = audit.AuditOp("wrong_square", "elementwise", wrong_square, inputs, "wrong_square(x)", order=1)
    return [*_ORIGINAL_CATALOGUE(), wrong]


_ORIGINAL_CATALOGUE = None


def run_audit_with_a_wrong_op(argv):
    """``gradcheck-kit audit ARGV`` with ``wrong_square`` added to the catalogue; returns the exit status."""
    global _ORIGINAL_CATALOGUE
    from gradcheck_kit import audit, cli

    _ORIGINAL_CATALOGUE = audit.catalogue
    audit.catalogue = catalogue_with_a_wrong_op
    return cli.main(["audit", *argv])
