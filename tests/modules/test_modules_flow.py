"""assert_gradient_flow: every parameter and input that requires grad gets a usable gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit.modules import GradientFlowReport, check_gradient_flow
from gradcheck_kit.errors import InvalidArgument


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _flow_failure(*args, **kwargs) -> str:
    with pytest.raises(gk.GradientMismatch) as info:
        gk.assert_gradient_flow(*args, **kwargs)
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value.report, GradientFlowReport)
    return str(info.value)


def _failing_lines(message: str) -> dict[str, str]:
    """{name: reason} from the indented lines of a flow message."""
    lines = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    return {name: reason.strip() for name, reason in (line.split(": ", 1) for line in lines)}


# --------------------------------------------------------------------------- passing cases


def test_healthy_sequential_returns_norms_by_name():
    net = _mlp()
    x = torch.randn(5, 3, requires_grad=True)
    norms = gk.assert_gradient_flow(net, x)
    assert list(norms) == ["input", "0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(value > 0 for value in norms.values())


def test_name_prefixes_parameters():
    norms = gk.assert_gradient_flow(_mlp(), torch.randn(5, 3), name="net")
    assert list(norms) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_function_and_dtypes(dtype):
    x = torch.randn(4, dtype=dtype, requires_grad=True)
    w = torch.randn(4, dtype=dtype, requires_grad=True)
    assert list(gk.assert_gradient_flow(lambda a, b: (a * b).sin(), x, w)) == ["a", "b"]


def test_softmax_and_normalization_are_not_false_alarms():
    # .sum() of these outputs is constant, so a plain .sum() backward would give all-zero gradients.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4, elementwise_affine=False), nn.Softmax(dim=-1))
    gk.assert_gradient_flow(net, torch.randn(5, 3, requires_grad=True))


def test_loss_is_used_and_tuple_outputs_are_reduced():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    torch.manual_seed(0)
    net = TwoHeads()
    gk.assert_gradient_flow(net, torch.randn(4, 3))
    # With a loss that ignores the second head, its parameters get no gradient.
    lines = _failing_lines(_flow_failure(net, torch.randn(4, 3), loss=lambda out: out[0].pow(2).mean()))
    assert set(lines) == {"b.weight", "b.bias"}


def test_frozen_parameters_and_inputs_without_grad_are_not_checked():
    net = _mlp()
    net[0].requires_grad_(False)  # frozen layer: not watched
    norms = gk.assert_gradient_flow(net, torch.randn(5, 3))
    assert list(norms) == ["2.weight", "2.bias"]


# --------------------------------------------------------------------------- failing cases


class _Broken(nn.Module):
    """One healthy layer plus one parameter for each way gradient flow breaks."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
        self.spare = nn.Linear(3, 3)  # never called
        self.frozen_path = nn.Parameter(torch.ones(3))  # used through .detach()
        self.offset = nn.Parameter(-torch.ones(3))  # sqrt of a negative: NaN
        self.gate = nn.Linear(3, 3)  # relu of very negative pre-activations: all zero
        with torch.no_grad():
            self.gate.bias.fill_(-100.0)

    def forward(self, x, unused_input):
        h = self.net(x) + self.frozen_path.detach()
        h = h + torch.sqrt(self.offset).sum() * 0
        return h + torch.relu(self.gate(x))


def test_each_failure_is_named_with_its_reason():
    torch.manual_seed(0)
    module = _Broken()
    x = torch.randn(4, 3, requires_grad=True)
    unused = torch.randn(4, 3, requires_grad=True)
    message = _flow_failure(module, x, unused)
    assert message.splitlines()[0] == (
        "Gradient flow is broken: 7 of 12 tensors that require grad get no usable gradient"
    )
    assert _failing_lines(message) == {
        "unused_input": "no gradient (not used in the forward pass)",
        "spare.weight": "no gradient (not used in the forward pass)",
        "spare.bias": "no gradient (not used in the forward pass)",
        "frozen_path": "no gradient (used in the forward pass but detached from the output: "
        ".detach(), .data, torch.no_grad() or a non-differentiable op)",
        "offset": "non-finite gradient (3 NaN of 3 elements)",
        "gate.weight": "gradient is all zero (9 elements)",
        "gate.bias": "gradient is all zero (3 elements)",
    }
    assert message.splitlines()[-1].startswith("Backward of: sum(w * output)")


def test_report_entries_carry_status_and_norm():
    torch.manual_seed(0)
    report = check_gradient_flow(_Broken(), torch.randn(4, 3), torch.randn(4, 3))
    statuses = {entry.name: entry.status for entry in report.entries}
    assert statuses["net.0.weight"] == "ok"
    assert statuses["spare.weight"] == "unused"
    assert statuses["frozen_path"] == "detached"
    assert statuses["offset"] == "non-finite"
    assert statuses["gate.bias"] == "zero"
    assert not report and report.norms["spare.bias"] is None and report.norms["gate.bias"] == 0.0


def test_no_grad_and_data_count_as_detached():
    w = torch.randn(3, requires_grad=True)
    v = torch.randn(3, requires_grad=True)
    x = torch.randn(3, requires_grad=True)

    def fn(x, w, v):
        with torch.no_grad():
            scale = w * 2
        return x * scale + v.data

    lines = _failing_lines(_flow_failure(fn, x, w, v))
    assert set(lines) == {"w", "v"}
    assert all(reason.startswith("no gradient (used in the forward pass but detached") for reason in lines.values())


def test_inf_gradient_is_counted():
    x = torch.tensor([0.0, 1.0, 4.0], requires_grad=True)
    message = _flow_failure(lambda x: torch.sqrt(x).sum(), x)
    assert _failing_lines(message) == {"x": "non-finite gradient (1 inf of 3 elements)"}


def test_backward_returning_none_is_distinguished():
    class DropsGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            return x * w

        @staticmethod
        def backward(ctx, grad):
            return grad, None  # forgets w

    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    lines = _failing_lines(_flow_failure(lambda x, w: DropsGrad.apply(x, w), x, w))
    assert lines == {"w": "no gradient (reached by the graph, but a backward returned None for it)"}


def test_metadata_reads_are_not_uses():
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(3, requires_grad=True)
    lines = _failing_lines(_flow_failure(lambda x, w: x.to(w.dtype) * w.shape[0], x, w))
    assert lines == {"w": "no gradient (not used in the forward pass)"}


# --------------------------------------------------------------------------- leaves nothing behind


def test_leaves_no_grad_buffers_or_rng_changes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    net.train()
    x = torch.randn(8, 3, requires_grad=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    buffers = list(net.buffers())
    net[3].weight.grad = torch.full_like(net[3].weight, 7.0)
    rng = torch.get_rng_state()

    gk.assert_gradient_flow(net, x)

    assert x.grad is None
    assert net[0].weight.grad is None and net[0].bias.grad is None
    assert torch.equal(net[3].weight.grad, torch.full_like(net[3].weight, 7.0))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(a is b for a, b in zip(buffers, net.buffers()))
    assert torch.equal(rng, torch.get_rng_state())
    assert net.training


def test_buffers_restored_when_the_check_fails():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[2].bias.requires_grad_(True)
    before = {k: v.clone() for k, v in net.named_buffers()}
    _flow_failure(net, torch.randn(8, 3), loss=lambda out: out[:, 0].sum() * 0)
    assert all(torch.equal(before[k], v) for k, v in net.named_buffers())


# --------------------------------------------------------------------------- bad arguments


def test_invalid_arguments_name_the_argument():
    with pytest.raises(InvalidArgument, match=r"^module_or_fn=3 is not a torch.nn.Module or a callable$"):
        gk.assert_gradient_flow(3, torch.randn(2))
    with pytest.raises(InvalidArgument, match=r"^loss='sum' is not callable$"):
        gk.assert_gradient_flow(_mlp(), torch.randn(2, 3), loss="sum")
    with pytest.raises(InvalidArgument, match=r"^loss=.* returned <tensor of shape \(2, 2\), torch.float32>, not a real"):
        gk.assert_gradient_flow(_mlp(), torch.randn(2, 3), loss=lambda out: out)
    with pytest.raises(InvalidArgument, match=r"no parameter and no input requires grad"):
        gk.assert_gradient_flow(lambda x: x * 2, torch.randn(3))
    with pytest.raises(InvalidArgument, match=r"returned 'text', which holds no floating tensor; pass loss="):
        gk.assert_gradient_flow(lambda x: "text", torch.randn(3, requires_grad=True))
    with pytest.raises(InvalidArgument, match=r"^name=3 is not a non-empty string"):
        gk.assert_gradient_flow(_mlp(), torch.randn(2, 3), name=3)
