"""check_module_gradients / assert_module_gradients: parameters and inputs of an nn.Module."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit.errors import InvalidArgument


class _RightLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, grad.T @ x, grad.sum(0)


class _TransposedWeightGrad(_RightLinear):
    """y = x @ W.T + b whose backward returns the weight gradient transposed."""

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, x.T @ grad, grad.sum(0)  # right: grad.T @ x


class CustomLinear(nn.Module):
    def __init__(self, n: int, function=_RightLinear, dtype=torch.float64):
        super().__init__()
        self.function = function
        self.weight = nn.Parameter(torch.randn(n, n, dtype=dtype))  # square, so a transpose still fits
        self.bias = nn.Parameter(torch.randn(n, dtype=dtype))

    def forward(self, x):
        return self.function.apply(x, self.weight, self.bias)


def _mlp(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)


@pytest.fixture
def one_thread():
    """Tiny CPU batch_norm calls can take ~0.1 s each with 2 intra-op threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _differentiated(report) -> list[str]:
    return [info.name for info in report.inputs if info.differentiated]


# --------------------------------------------------------------------------- correct modules pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequential_passes_and_names_parameters(dtype):
    net = _mlp(dtype)
    x = torch.randn(5, 3, dtype=dtype)
    report = gk.assert_module_gradients(net, x)
    assert report.ok
    assert _differentiated(report) == ["input", "0.weight", "0.bias", "2.weight", "2.bias"]


def test_name_prefix_and_nested_modules():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.encoder(x))

    torch.manual_seed(0)
    report = gk.check_module_gradients(Block().double(), torch.randn(4, 3, dtype=torch.float64), name="net")
    assert report.ok
    assert _differentiated(report) == [
        "x", "net.encoder.0.weight", "net.encoder.0.bias", "net.head.weight", "net.head.bias",
    ]


def test_several_inputs_and_pass_through_arguments():
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor([0.5, 2.0], dtype=torch.float64))

        def forward(self, x, y, index, power=2):
            return (x[index] * self.scale) ** power + y.sin()

    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.randn(2, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2])
    report = gk.assert_module_gradients(Mix(), x, y, index, forward_kwargs={"power": 3})
    # y requires grad and x does not: only y among the inputs, as check_gradients does.
    assert _differentiated(report) == ["y", "scale"]
    report = gk.assert_module_gradients(Mix(), x, y.detach(), index, 3)
    assert _differentiated(report) == ["x", "y", "scale"]


def test_tied_weights():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    report = gk.assert_module_gradients(Tied().double(), torch.randn(2, 3, dtype=torch.float64))
    assert _differentiated(report) == ["x", "a.weight", "a.bias", "b.bias"]


def test_frozen_parameters_are_skipped_unless_named():
    net = _mlp()
    net[0].requires_grad_(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert _differentiated(gk.check_module_gradients(net, x)) == ["input", "2.weight", "2.bias"]
    assert _differentiated(gk.check_module_gradients(net, x, wrt=["0.weight"])) == ["0.weight"]


# --------------------------------------------------------------------------- wrong gradients fail


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", [None, "full"])
def test_transposed_weight_gradient_is_caught_and_named(dtype, mode):
    torch.manual_seed(0)
    module = CustomLinear(4, _TransposedWeightGrad, dtype=dtype)
    x = torch.randn(3, 4, dtype=dtype)
    keywords = {} if mode is None else {"mode": mode}
    report = gk.check_module_gradients(module, x, **keywords)
    assert not report.ok
    assert {m.input_name for m in report.mismatches} == {"weight"}
    # Only the off-diagonal entries of a transposed gradient are wrong.
    assert all(m.index[0] != m.index[1] for m in report.mismatches if len(m.index) == 2)
    assert re.search(r"/ d weight\[\d, \d\]", str(report))

    with pytest.raises(gk.GradientMismatch) as info:
        gk.assert_module_gradients(module, x, name="net", **keywords)
    assert isinstance(info.value, AssertionError)
    assert str(info.value) == str(info.value.report)
    assert re.search(r"/ d net\.weight\[\d, \d\]", str(info.value))
    expected = "gk.assert_module_gradients(net, x, name='net', " + ("" if mode is None else "mode='full', ") + "seed=0)"
    reproduce = info.value.report.reproduce
    assert reproduce.startswith("import torch, gradcheck_kit as gk; x = torch.tensor([[")
    assert f"; {expected}  # net: the CustomLinear object you checked (not importable: pass it yourself)" in reproduce
    assert str(info.value).splitlines()[-1] == f"Reproduce: {reproduce}"


def test_right_custom_linear_passes():
    torch.manual_seed(0)
    gk.assert_module_gradients(CustomLinear(4), torch.randn(3, 4, dtype=torch.float64))


def test_wrong_input_gradient_of_a_module_is_caught():
    class WrongInputGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return grad * w * 2, grad * x  # input gradient doubled

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64))

        def forward(self, x):
            return WrongInputGrad.apply(x, self.w)

    report = gk.check_module_gradients(Scale(), torch.randn(3, dtype=torch.float64))
    assert {m.input_name for m in report.mismatches} == {"x"}
    # Restricted to the parameter, the same module passes.
    assert gk.check_module_gradients(Scale(), torch.randn(3, dtype=torch.float64), wrt="w").ok


# --------------------------------------------------------------------------- the module is left alone


def _batchnorm_first(dtype):
    return nn.Sequential(nn.BatchNorm1d(2), nn.Tanh(), nn.Linear(2, 1)).to(dtype)


def _batchnorm_after_linear(dtype):
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 1)).to(dtype)


@pytest.mark.parametrize(
    "make, dtype",
    [
        (_batchnorm_first, torch.float32),
        (_batchnorm_first, torch.float64),
        (_batchnorm_after_linear, torch.float64),
        (_batchnorm_after_linear, torch.float32),
    ],
)
def test_batchnorm_train_mode_buffers_untouched(one_thread, make, dtype):
    torch.manual_seed(0)
    net = make(dtype).train()
    x = torch.randn(4, 2, dtype=dtype)
    buffers = dict(net.named_buffers())
    before = {k: v.clone() for k, v in buffers.items()}
    report = gk.assert_module_gradients(net, x)
    assert report.ok and net.training
    for key, buffer in net.named_buffers():
        assert buffer is buffers[key]
        assert torch.equal(buffer, before[key]), key
    batchnorm = next(m for m in net if isinstance(m, nn.BatchNorm1d))
    assert int(batchnorm.num_batches_tracked) == 0
    assert torch.equal(batchnorm.running_mean, torch.zeros_like(batchnorm.running_mean))


def test_batchnorm_eval_mode_uses_running_stats(one_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    gk.assert_module_gradients(net, torch.randn(6, 3, dtype=torch.float64))
    assert not net.training


def test_parameters_and_grads_unchanged():
    net = _mlp()
    net[0].weight.grad = torch.full_like(net[0].weight, 3.0)
    params = {k: (p, p.detach().clone()) for k, p in net.named_parameters()}
    gk.check_module_gradients(net, torch.randn(5, 3, dtype=torch.float64, requires_grad=True))
    for key, p in net.named_parameters():
        assert p is params[key][0] and torch.equal(p, params[key][1]), key
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 3.0))
    assert all(p.grad is None for k, p in net.named_parameters() if k != "0.weight")


def test_dropout_in_train_mode_sees_one_mask_and_rng_is_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.5), nn.Linear(6, 2)).double().train()
    x = torch.randn(4, 3, dtype=torch.float64)
    state = torch.get_rng_state()
    assert gk.check_module_gradients(net, x).ok
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- wrt and bad arguments


def test_wrt_selects_inputs_and_parameters():
    net = _mlp()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert _differentiated(gk.check_module_gradients(net, x, wrt=0)) == ["input"]
    assert _differentiated(gk.check_module_gradients(net, x, wrt="*.bias")) == ["0.bias", "2.bias"]
    assert _differentiated(gk.check_module_gradients(net, x, wrt=["2.weight", 0])) == ["input", "2.weight"]
    assert _differentiated(gk.check_module_gradients(net, x, wrt=[-1, "input"])) == ["input"]  # as check_gradients
    assert _differentiated(gk.check_module_gradients(net, x, wrt=["net.0.*"], name="net")) == [
        "net.0.weight", "net.0.bias",
    ]


def test_invalid_arguments_name_the_argument():
    net = _mlp()
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(InvalidArgument, match=r"^module=3 is not a torch.nn.Module$"):
        gk.check_module_gradients(3, x)
    with pytest.raises(InvalidArgument, match=r"^wrt=\['1.weight'\]: '1.weight' matches no input name and no parameter of Sequential \(parameters: 0.weight, 0.bias, 2.weight, 2.bias\)$"):
        gk.check_module_gradients(net, x, wrt=["1.weight"])
    with pytest.raises(InvalidArgument, match=r"^wrt=\[3\]: index 3 is out of range for 1 input\(s\)$"):
        gk.check_module_gradients(net, x, wrt=[3])
    with pytest.raises(InvalidArgument, match=r"^wrt=1.5 is not an input index, a parameter name, or a list of them$"):
        gk.check_module_gradients(net, x, wrt=1.5)
    with pytest.raises(InvalidArgument, match=r"^wrt=\[1\]: input 1 is a int, not a tensor$"):
        gk.check_module_gradients(nn.Identity(), x, 2, wrt=[1])
    with pytest.raises(InvalidArgument, match=r"^wrt=\['k'\]: input 1 is a torch.int64 tensor; only floating-point"):
        gk.check_module_gradients(nn.Identity(), x, torch.arange(3), input_names=["x", "k"], wrt=["k"])
    with pytest.raises(InvalidArgument, match=r"^name='' is not a non-empty string"):
        gk.check_module_gradients(net, x, name="")
    with pytest.raises(InvalidArgument, match=r"^input_names=\['a', 'b'\] has 2 names for 1 module inputs"):
        gk.check_module_gradients(net, x, input_names=["a", "b"])
    with pytest.raises(InvalidArgument, match=r"^wrt=None selects nothing to differentiate"):
        gk.check_module_gradients(nn.Flatten(), torch.arange(4).reshape(2, 2))
