"""Complex tensors from gst.tensors, and complex gradients through the checker (torch's convention:
for a real loss L, z.grad is 2·dL/d(conj z), the conjugate Wirtinger derivative)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit import strategies as gst


@settings(max_examples=50, deadline=None)
@given(gst.tensors(dtype=gst.complex_dtypes(), min_value=0.5, max_value=3.0))
def test_complex_values_lie_within_the_modulus_bounds(z):
    assert z.dtype in (torch.complex64, torch.complex128)
    modulus = z.detach().abs().double()
    assert (modulus >= 0.5 * (1 - 1e-6)).all() and (modulus <= 3.0 * (1 + 1e-6)).all()
    assert z.requires_grad and z.is_leaf


@settings(max_examples=50, deadline=None)
@given(gst.tensors(shape=(3, 4), dtype=torch.complex64, layout="noncontiguous"))
def test_complex_layouts_are_real_strided_views(z):
    assert not z.is_contiguous()
    assert torch.isfinite(z.detach()).all()


def test_complex_values_shrink_to_zero_and_special_values_are_drawn():
    assert find(gst.tensors(shape=(2,), dtype=torch.complex128), lambda t: True).tolist() == [0j, 0j]
    find(gst.tensors(shape=(3,), dtype=torch.complex64), lambda t: bool((t.detach().imag == 1).any()))
    z = find(gst.tensors(shape=(3,), dtype=torch.complex128, allow_infinity=True), lambda t: bool(t.detach().isinf().any()))
    assert z.detach().isinf().any()
    w = find(gst.tensors(shape=(3,), dtype=torch.complex128, allow_nan=True), lambda t: bool(t.detach().isnan().any()))
    assert w.detach().isnan().any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_value": -1.0}, r"min_value=-1.0: for torch.complex64 the bounds are on the modulus"),
        ({"unique": True}, r"do not apply to torch.complex64"),
        ({"min_value": 2.0, "max_value": 1.0}, r"min_value=2.0 must be <= max_value=1.0"),
        ({"allow_nan": 1}, r"allow_nan=1 must be a bool"),
    ],
)
def test_bad_complex_arguments(kwargs, message):
    with pytest.raises(gk.InvalidArgument, match=message):
        gst.tensors(shape=(2,), dtype=torch.complex64, **kwargs)


HOLOMORPHIC = {
    "z*z": lambda z: z * z,
    "exp": torch.exp,
    "sin": torch.sin,
    "z**3 + 2z": lambda z: z**3 + 2 * z,
}
NON_HOLOMORPHIC = {
    "z*conj(z)": lambda z: z * z.conj(),
    "abs": torch.abs,
    "real*imag": lambda z: z.real * z.imag,
    "conj": torch.conj_physical,
}


@settings(max_examples=25, deadline=None)
@given(
    z=gst.tensors(shape=gst.shapes(max_dims=2, max_side=4), dtype=gst.complex_dtypes(), min_value=0.1, max_value=3),
    name=st.sampled_from(sorted(HOLOMORPHIC) + sorted(NON_HOLOMORPHIC)),
)
def test_holomorphic_and_non_holomorphic_functions_pass(z, name):
    fn = HOLOMORPHIC.get(name) or NON_HOLOMORPHIC[name]
    gk.assert_gradients_close(fn, z)


@settings(max_examples=25, deadline=None)
@given(gst.tensors(shape=(4,), dtype=torch.complex128, min_value=0.1, max_value=3))
def test_angle_passes_off_its_branch_cut(z):
    # angle jumps by 2*pi across the negative real axis: keep the points off it
    z = z.detach()
    z = torch.where((z.real < 0) & (z.imag.abs() < 0.05), z + 0.1j, z).requires_grad_(True)
    gk.assert_gradients_close(torch.angle, z)


@settings(max_examples=25, deadline=None)
@given(gst.tensors(shape=(5,), dtype=torch.complex128, min_value=0.1, max_value=3))
def test_the_convention_is_the_conjugate_wirtinger_derivative(z):
    # for a real loss L, z.grad = 2 dL/d(conj z): |z|^2 -> 2z, |z| -> z/|z|
    gk.assert_grad_equals(lambda z: (z * z.conj()).real.sum(), z, lambda z: 2 * z)
    gk.assert_grad_equals(lambda z: z.abs().sum(), z, lambda z: z / z.abs())


class _WrongConj(torch.autograd.Function):
    """|z|^2 with the backward of z^2 (the holomorphic mistake): grad 2·conj(z) instead of 2z."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z * z.conj()

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * 2 * z.conj()


@settings(max_examples=10, deadline=None)
@given(gst.tensors(shape=(3,), dtype=gst.complex_dtypes(), min_value=0.5, max_value=2))
def test_a_wrong_complex_backward_fails(z):
    if bool((z.detach().imag.abs() < 0.1).all()):
        return  # conj(z) = z on the real axis: the mistake does not show there
    report = gk.check_gradients(_WrongConj.apply, z)
    assert not report.ok


@settings(max_examples=30, deadline=None)
@given(gst.tensors(shape=(3,), dtype=torch.complex128, min_value=0.1, max_value=3, elements=None))
def test_tiny_points_are_moved_onto_the_minimum_modulus_without_overflow(z):
    assert torch.isfinite(z.detach()).all()

