"""Modes, grad_outputs, several outputs, non-tensor arguments, wrt, and argument validation."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from tests.helpers import randn, unary


WRONG = 613


_OneWrong = unary(torch.sin, torch.cos, at=WRONG, factor=1.2, offset=0.1)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_mode_is_recorded(mode):
    report = gk.check_gradients(torch.tanh, randn(4), mode=mode)
    assert report.ok, str(report)
    assert report.mode == mode
    assert report.check("backward").detail.startswith(mode)


def test_auto_picks_full_for_small_and_directional_for_large():
    assert gk.check_gradients(torch.tanh, randn(5)).mode == "full"
    assert gk.check_gradients(torch.tanh, randn(100_000)).mode == "directional"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_directional_catches_one_wrong_element_and_auto_narrows_it_down(dtype):
    x = randn(40, 50, dtype=dtype, seed=3)  # 2,000 elements
    directional = gk.check_gradients(_OneWrong.apply, x, mode="directional")
    assert not directional.ok
    assert directional.mode == "directional"
    assert all(m.kind == "directional" and m.index in {(0,), (1,)} for m in directional.mismatches)

    # 2,000 x 2,000 Jacobian entries: auto goes directional, then narrows down
    auto = gk.check_gradients(_OneWrong.apply, x)
    assert auto.mode == "directional"
    assert not auto.ok
    narrowed = [m for m in auto.mismatches if m.kind != "directional"]
    assert [m.index for m in narrowed] == [divmod(WRONG, 50)]
    assert auto.check("backward").status == "failed"


def test_auto_on_a_huge_input_says_it_did_not_narrow_down():
    report = gk.check_gradients(_OneWrong.apply, randn(100_000, seed=3), forward_ad=False)
    assert report.mode == "directional"
    assert not report.ok
    assert any(n.code == "not_narrowed" and n.fields[0] == "size" for n in report.notes), report.notes


def test_directional_evaluations_do_not_grow_with_size():
    small = gk.check_gradients(torch.tanh, randn(1_000), mode="directional")
    large = gk.check_gradients(torch.tanh, randn(100_000), mode="directional")
    assert small.ok and large.ok
    assert large.evaluations <= small.evaluations
    assert large.evaluations < 20


def test_directional_evaluations_are_fewer_than_full():
    x = randn(200)
    assert gk.check_gradients(torch.tanh, x, mode="directional").evaluations < gk.check_gradients(
        torch.tanh, x, mode="full"
    ).evaluations


# ---- grad_outputs ---------------------------------------------------------------------------


class _ScaledByFirst(torch.autograd.Function):
    """Backward right only when the output vector is constant: uses grad[0] everywhere."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, 1.0) * grad.reshape(-1)[0] * 2


def test_grad_outputs_given_are_used():
    x = randn(3, 4)
    # with grad_outputs all ones the broken backward happens to be right in projection
    ones = gk.check_gradients(_ScaledByFirst.apply, x, grad_outputs=torch.ones(3, 4, dtype=torch.float64),
                              mode="directional", forward_ad=False)
    assert ones.ok, str(ones)
    random = gk.check_gradients(_ScaledByFirst.apply, x, mode="directional", forward_ad=False)
    assert not random.ok


def test_grad_outputs_wrong_shape_is_invalid():
    with pytest.raises(gk.InvalidArgument, match=r"grad_outputs\[0\] has shape \(4,\); output 0 has shape \(3, 4\)"):
        gk.check_gradients(torch.tanh, randn(3, 4), grad_outputs=torch.ones(4, dtype=torch.float64))


def test_grad_outputs_wrong_count_is_invalid():
    with pytest.raises(gk.InvalidArgument, match="grad_outputs has 2 tensor"):
        gk.check_gradients(torch.tanh, randn(3), grad_outputs=(torch.ones(3), torch.ones(3)))


# ---- several outputs, non-tensor arguments, wrt ----------------------------------------------


def test_several_outputs_all_checked():
    x = randn(4)
    report = gk.check_gradients(lambda x: (torch.sin(x), x.sum() * 3, torch.exp(x)), x)
    assert report.ok, str(report)
    assert len(report.outputs) == 3
    assert {g.output_index for g in report.groups if g.check == "backward"} == {0, 1, 2}


def test_non_tensor_arguments_are_passed_through():
    seen = []

    def fn(x, power, flag, label):
        seen.append((power, flag, label))
        y = x**power
        return -y if flag else y

    report = gk.check_gradients(fn, randn(4), 3, True, "tag")
    assert report.ok, str(report)
    assert seen and all(s == (3, True, "tag") for s in seen)
    assert [i.differentiated for i in report.inputs] == [True, False, False, False]


def test_integer_tensor_input_is_not_differentiated():
    idx = torch.tensor([2, 0, 1])
    report = gk.check_gradients(lambda x, i: x[i] * 2, randn(3), idx)
    assert report.ok, str(report)
    assert {g.input_index for g in report.groups} == {0}


def test_wrt_selects_inputs():
    x, y = randn(3), randn(3, seed=1)
    report = gk.check_gradients(lambda x, y: x * y, x, y, wrt=[1])
    assert report.ok
    assert {g.input_index for g in report.groups} == {1}
    report = gk.check_gradients(lambda x, y: x * y, x, y, wrt=(0, 1))
    assert {g.input_index for g in report.groups if g.check == "backward"} == {0, 1}


def test_default_wrt_is_inputs_requiring_grad():
    x, y = randn(3), randn(3, seed=1).requires_grad_(True)
    report = gk.check_gradients(lambda x, y: x * y, x, y)
    assert {g.input_index for g in report.groups} == {1}
    assert [i.differentiated for i in report.inputs] == [False, True]


class _WrongInY(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad * y, grad * y  # second should be grad * x


def test_wrt_finds_the_wrong_input_only():
    x, y = randn(3), randn(3, seed=1)
    assert gk.check_gradients(_WrongInY.apply, x, y, wrt=[0]).ok
    report = gk.check_gradients(_WrongInY.apply, x, y)
    assert not report.ok
    assert {m.input_index for m in report.mismatches if m.check == "backward"} == {1}


def test_wrt_integer_tensor_is_invalid():
    with pytest.raises(gk.InvalidArgument, match=r"wrt="):
        gk.check_gradients(lambda x, i: x[i], randn(3), torch.tensor([0, 1]), wrt=[1])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"mode": "fast"}, r"mode='fast'"),
        ({"order": 5}, r"order=5"),
        ({"order": True}, r"order=True"),
        ({"seed": "1"}, r"seed='1'"),
        ({"seed": 1.5}, r"seed=1.5"),
        ({"atol": -1.0}, r"atol=-1.0"),
        ({"atol": "x"}, r"atol='x'"),
        ({"rtol": -0.1}, r"rtol=-0.1"),
        ({"forward_ad": "yes"}, r"forward_ad='yes'"),
        ({"wrt": [5]}, r"wrt=\[5\]"),
        ({"wrt": "a"}, r"wrt='a'"),
    ],
)
def test_invalid_arguments_name_arg_value(kwargs, pattern):
    with pytest.raises(gk.InvalidArgument, match=pattern) as info:
        gk.check_gradients(torch.tanh, randn(3), **kwargs)
    assert isinstance(info.value, ValueError)


def test_non_callable_fn_is_invalid():
    with pytest.raises(gk.InvalidArgument, match=r"fn="):
        gk.check_gradients("tanh", randn(3))


def test_a_meta_tensor_is_invalid():
    with pytest.raises(gk.InvalidArgument, match=r"inputs\[0\] \(x\) is a meta tensor of shape \(3,\)"):
        gk.check_gradients(torch.sin, torch.randn(3, device="meta"))


def test_explicit_tolerances_are_used():
    x = randn(4)

    _Off = unary(lambda x: x * 2, lambda x: 2, factor=1.0005)

    assert not gk.check_gradients(_Off.apply, x).ok
    assert gk.check_gradients(_Off.apply, x, atol=0.01, forward_ad=False).ok


def test_seed_makes_reports_reproducible():
    x = randn(50)
    a = gk.check_gradients(_OneWrong.apply, randn(1000), mode="directional", seed=7)
    b = gk.check_gradients(_OneWrong.apply, randn(1000), mode="directional", seed=7)
    assert [(m.analytic, m.numerical) for m in a.mismatches] == [(m.analytic, m.numerical) for m in b.mismatches]
    assert a.seed == 7 and "seed=7" in a.reproduce
    assert gk.check_gradients(torch.tanh, x, seed=3).ok


def test_out_of_range_seed_is_invalid_argument():
    with pytest.raises(gk.InvalidArgument, match=r"seed=1180591620717411303424"):
        gk.check_gradients(torch.tanh, randn(3), seed=2**70)


def test_auto_does_not_narrow_a_large_input_down_through_the_loop():
    """A custom Function without a vmap rule would narrow down one call of fn per point and coordinate:
    above NARROW_LOOP_COORDS it does not (2^15 coordinates took 131,209 calls and 99 s). Where the
    directions failed by far, bisecting one names the wrong element in a few dozen calls; where not (a 1%
    error of one element in 2^14), the report says the elements were not narrowed down."""
    from gradcheck_kit._engine.limits import NARROW_LOOP_COORDS

    x = randn(2 * NARROW_LOOP_COORDS, seed=3)
    report = gk.check_gradients(_OneWrong.apply, x, forward_ad=False)
    assert report.mode == "directional" and not report.ok
    assert report.evaluations < 60, report.evaluations
    assert report.mismatches[0].index == (WRONG,) and report.mismatches[0].kind == "projected"
    assert any(n.code == "pinpointed" for n in report.notes), report.notes
    slightly = unary(torch.sin, torch.cos, at=WRONG, factor=1.01)
    report = gk.check_gradients(slightly.apply, x, forward_ad=False)
    assert report.mode == "directional" and not report.ok
    assert report.evaluations < 20, report.evaluations
    assert any(n.code == "not_narrowed" and n.fields[0] == "no_vmap" for n in report.notes), report.notes
    assert all(m.kind == "directional" for m in report.mismatches)
