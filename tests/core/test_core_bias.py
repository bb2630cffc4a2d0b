"""A systematic error of a half-precision backward, too small for any one entry: the check ``bias``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gradcheck_kit as gk
from tests.helpers import around, randn

HALF = [torch.bfloat16, torch.float16]


def _x(dtype, seed, *shape):
    return randn(*(shape or (8, 16)), dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype, factor", [(torch.bfloat16, 1.02), (torch.float16, 1.005)], ids=["bf16-2%", "f16-0.5%"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_systematic_error_below_one_rounding_per_entry_is_caught(dtype, factor, seed):
    scaled_gelu = around(F.gelu, factor=factor)  # a systematic relative error on every entry
    report = gk.check_gradients(scaled_gelu.apply, _x(dtype, seed), seed=seed)
    assert not report.ok
    assert report.check("bias").status == "failed"


KERNELS = {
    "gelu": lambda x, w: F.gelu(x),
    "softmax": lambda x, w: F.softmax(x, dim=-1),
    "layer_norm": lambda x, w: F.layer_norm(x, (16,)),
    "matmul": lambda x, w: x @ w,
}


def _kernels_pass(dtype, name, seeds):
    for seed in seeds:
        x, w = _x(dtype, seed), _x(dtype, seed + 100, 16, 8)
        if name == "matmul":
            report = gk.check_gradients(torch.matmul, x, w, seed=seed)
        else:
            report = gk.check_gradients(lambda t, fn=KERNELS[name]: fn(t, None), x, seed=seed)
        assert report.ok, (seed, report.details())
        assert report.check("bias").status == "passed"


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_torch_half_precision_kernels_do_not_false_alarm(dtype, name):
    _kernels_pass(dtype, name, range(3))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_torch_half_precision_kernels_do_not_false_alarm_over_20_seeds(dtype, name):
    _kernels_pass(dtype, name, range(20))


def test_the_bias_check_runs_for_half_precision_inputs_only():
    assert gk.check_gradients(F.gelu, _x(torch.float32, 0)).check("bias") is None
    small = gk.check_gradients(F.gelu, _x(torch.bfloat16, 0, 4, 4)).check("bias")
    assert small.status == "skipped" and "fewer than 64" in small.detail
