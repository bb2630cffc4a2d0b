"""Full mode's shortcuts: the ±h screen and forward AD against the checked backward Jacobian.

Each shortcut may only ever *pass* what the full treatment would pass; anything else (a wrong entry, a
kink, a jvp that disagrees) must still get the full stencil and the entry-by-entry listing.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit._engine.limits import tuned
from tests.helpers import unary


def _randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# Tests of the screens' sensitivity pass strict=True where the error is 1e-6..1e-5 relative in float64:
# by default such an error is within the approximate tier (issue 18) and passes with a note.
class _SinWrongAt(torch.autograd.Function):
    """sin with a right jvp and a backward wrong at one element by a relative ``rel``."""

    rel = 1e-6
    where = 17

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g = (grad * torch.cos(x)).clone()
        g.view(-1)[_SinWrongAt.where] *= 1 + _SinWrongAt.rel
        return g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return t * torch.cos(x)


class _MatmulWrongJvpAt(torch.autograd.Function):
    """a @ b with a right backward and a jvp wrong at one element of the tangent of ``a``."""

    @staticmethod
    def forward(a, b):
        return a @ b

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.T, a.T @ g

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        ta = ta.clone()
        ta[2, 3] = ta[2, 3] * 1.01
        return ta @ b + a @ tb


class _MatmulRightJvp(_MatmulWrongJvpAt):
    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        return ta @ b + a @ tb


def _settled(report) -> bool:
    return "settled at ±h" in report.check("backward").detail


def test_a_smooth_correct_function_is_settled_with_two_points_per_coordinate():
    x = _randn(6, 5)
    report = gk.check_gradients(torch.tanh, x, mode="full", forward_ad=False)
    assert report.ok, str(report)
    assert _settled(report)
    # one analytic forward + 2 evaluations per coordinate, not the 4 of the whole stencil, + 1 plain call
    # that checks vmap's first batch entry + 1 call that checks fn is deterministic
    assert report.evaluations == 1 + 2 * x.numel() + 2
    assert report.groups[0].compared == x.numel() ** 2


def test_the_screen_does_not_hide_a_tiny_error_in_one_element():
    x = _randn(40)
    # strict: a 1e-6 relative error of a float64 derivative is within the approximate tier by default
    report = gk.check_gradients(_SinWrongAt.apply, x, mode="full", forward_ad=False, strict=True)
    assert not report.ok
    assert not _settled(report)
    (m,) = report.mismatches
    assert m.index == (_SinWrongAt.where,)
    # the failing coordinate's points at ±2h (the screen left it open), then the whole stencil for the
    # listing (those two points read back, not evaluated again), the failing coordinate's one level of
    # refinement (h/8), one point off float32's grid (fn returns float64 values there), 13 close points (no
    # staircase there) and the call that checks fn is deterministic
    assert report.evaluations == 1 + 2 + (4 * x.numel() - 2) + 4 + 1 + 13 + 1


@pytest.mark.parametrize("fn", [torch.relu, torch.abs], ids=["relu", "abs"])
def test_kinks_still_get_the_full_treatment_and_the_note(fn):
    x = torch.tensor([-1.0, 0.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    report = gk.check_gradients(fn, x, mode="full")
    assert report.ok, str(report)
    assert not _settled(report)
    assert {"kink", "kink_at_point", "kink_in_stencil"} & set(report.note_codes), report.notes


def test_ties_in_amax_are_reported_as_kinks():
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 0.5, 2.0]], dtype=torch.float64)
    report = gk.check_gradients(lambda t: t.amax(dim=1), x, mode="full")
    assert report.ok, str(report)
    assert {"kink", "kink_at_point", "kink_in_stencil"} & set(report.note_codes), report.notes


def test_user_rtol_skips_the_screen():
    report = gk.check_gradients(torch.tanh, _randn(5), mode="full", rtol=1e-6, forward_ad=False)
    assert report.ok and not _settled(report)
    assert report.evaluations == 1 + 4 * 5 + 2  # + 2: the plain calls that check vmap's first entry and determinism


def test_forward_ad_of_a_verified_backward_is_checked_along_random_directions():
    a, b = _randn(6, 5, seed=1), _randn(5, 4, seed=2)
    report = gk.check_gradients(_MatmulRightJvp.apply, a, b, mode="full", forward_ad=True)
    assert report.ok, str(report)
    assert "random direction against the checked backward Jacobian" in report.check("forward_ad").detail


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_forward_ad_wrong_at_one_element_is_caught_and_named(dtype):
    a, b = _randn(6, 5, seed=1, dtype=dtype), _randn(5, 4, seed=2, dtype=dtype)
    report = gk.check_gradients(_MatmulWrongJvpAt.apply, a, b, mode="full", forward_ad=True)
    assert report.check("backward").status == "passed"
    assert report.check("forward_ad").status == "failed"
    assert "every column compared with the finite differences" in report.check("forward_ad").detail
    wrong = {(m.input_index, m.index) for m in report.mismatches if m.check == "forward_ad"}
    assert wrong == {(0, (2, 3))}


def test_forward_ad_of_a_failed_backward_is_compared_entry_by_entry():
    x = _randn(30)
    report = gk.check_gradients(_SinWrongAt.apply, x, mode="full", forward_ad=True, strict=True)
    assert report.check("backward").status == "failed"
    # the jvp is right: compared with the finite differences, not with the wrong backward
    assert report.check("forward_ad").status == "passed"
    assert report.check("forward_ad").detail == "full, every column against the finite differences"


# --- several small inputs share one ±h screen -----------------------------------------------------
def _mlp(x, w1, b1, w2, b2):
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def _mlp_args(dtype=torch.float64):
    shapes = [(4, 8), (16, 8), (16,), (4, 16), (4,)]
    return [_randn(*s, seed=n, dtype=dtype) * 0.5 for n, s in enumerate(shapes)]


def _worst(report, check="backward"):
    return {(g.input_index, g.output_index): g.worst_ratio for g in report.groups if g.check == check}


def test_small_inputs_screened_together_give_the_input_by_input_verdict():
    args = _mlp_args()
    with tuned(together_elements=0):  # the same f values: one vmap per input
        together = gk.check_gradients(_mlp, *args, mode="full")
    with tuned(together_elements=0, joint_screen_entries=0):  # the input-by-input path
        apart = gk.check_gradients(_mlp, *args, mode="full")
    for report in (together, apart):
        assert report.ok, str(report)
        assert _settled(report)
        assert report.check("backward").detail.endswith(": x, w1, b1, w2, b2")
    # one analytic forward + f at ±h per coordinate (the forward-AD check counts on top)
    assert together.evaluations == apart.evaluations
    assert together.evaluations - 1 - 2 * sum(a.numel() for a in args) in range(0, 4)
    w_together, w_apart = _worst(together), _worst(apart)
    assert w_together.keys() == w_apart.keys() and len(w_together) == 5
    for key, value in w_apart.items():
        assert w_together[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert 0.0 <= value < 1.0
    assert max(w_apart.values()) > 0.0


class _ScaleWrongInSecond(torch.autograd.Function):
    """x * y with y's gradient 1e-6 too large at one element: x must still be settled at ±h."""

    @staticmethod
    def forward(x, y):
        return x * y

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gy = (g * x).clone()
        gy.view(-1)[5] *= 1 + 1e-6
        return g * y, gy


class _LeaksToUnused(torch.autograd.Function):
    """x * 2 whose backward also sends a gradient to ``y``, which the output does not depend on."""

    @staticmethod
    def forward(x, y):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * 2, g.clone()


def test_one_wrong_input_among_small_ones_is_named_and_the_others_stay_settled():
    x, y = _randn(12, seed=3), _randn(12, seed=4)
    report = gk.check_gradients(_ScaleWrongInSecond.apply, x, y, mode="full", forward_ad=False, strict=True)
    assert not report.ok
    assert {(m.input_index, m.index) for m in report.mismatches} == {(1, (5,))}
    detail = report.check("backward").detail
    assert "settled at ±h" in detail and detail.rstrip().endswith("input0")
    # x: 2 evaluations per coordinate; y: the failing coordinate at ±2h (the screen left it open), then the
    # whole stencil (4), less those two points (read back, not evaluated again)
    # + 4: the failing coordinate's second opinion at h/8 reproduced the estimate at h, and stopped there;
    # + 1: one point off float32's grid (fn returns float64 values there: no lower-precision recheck)
    # + 13: close points (no staircase of a lower precision there); + 1: the call that checks fn is deterministic
    assert report.evaluations == 1 + 2 * 12 + 2 + (4 * 12 - 2) + 4 + 1 + 13 + 1


def test_a_gradient_where_the_output_does_not_move_is_a_mismatch_with_shared_screening():
    x, y = _randn(6, seed=5), _randn(6, seed=6)
    report = gk.check_gradients(_LeaksToUnused.apply, x, y, mode="full", forward_ad=False)
    assert not report.ok
    assert {m.input_index for m in report.mismatches} == {1}
    assert len(report.mismatches) == 6


# --- autograd's rows through vmap over torch.func.vjp ------------------------------------------------
def _conv(x, w):
    return torch.nn.functional.conv1d(x, w)


def test_many_rows_come_from_functorch_with_the_is_grads_batched_verdict():
    x, w = _randn(2, 3, 16, seed=7), _randn(4, 3, 3, seed=8)
    via_functorch = gk.check_gradients(_conv, x, w, mode="full")
    with tuned(functorch_rows=1 << 40):
        via_grad = gk.check_gradients(_conv, x, w, mode="full")
    assert via_functorch.ok and via_grad.ok
    assert "autograd batched (vmap over torch.func.vjp)" in via_functorch.check("backward").detail
    assert "autograd batched;" in via_grad.check("backward").detail
    w1, w2 = _worst(via_functorch), _worst(via_grad)
    assert w1.keys() == w2.keys()
    for key, value in w2.items():
        assert w1[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_a_wrong_element_is_named_through_the_functorch_rows():
    x = _randn(80, seed=9)  # functorch batches a custom Function's backward without a vmap rule
    report = gk.check_gradients(_SinWrongAt.apply, x, mode="full", forward_ad=False, strict=True)
    assert "vmap over torch.func.vjp" in report.check("backward").detail
    assert [m.index for m in report.mismatches] == [(_SinWrongAt.where,)]


class _OldStyleSin(torch.autograd.Function):
    """forward(ctx, x) without setup_context: functorch refuses to transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g = grad * torch.cos(x)
        return g * (1 + 1e-5) if x.numel() > 60 else g  # wrong on inputs above 60 elements


def test_a_function_functorch_cannot_run_falls_back_to_one_backward_per_row():
    # never is_grads_batched through a custom Function: a backward reading grad_output.data crashes there
    x = _randn(80, seed=9)
    report = gk.check_gradients(_OldStyleSin.apply, x, mode="full", forward_ad=False, strict=True)
    detail = report.check("backward").detail
    assert "vmap over torch.func.vjp" not in detail
    assert "autograd loop (custom autograd.Function in the graph: _OldStyleSin)" in detail
    assert len(report.mismatches) == 80


def test_a_function_drawing_random_numbers_gets_rows_of_the_same_draw():
    x = _randn(70, seed=10)
    report = gk.check_gradients(lambda t: torch.nn.functional.dropout(t, 0.3) * t, x, mode="full")
    assert report.ok, str(report)


def test_forward_ad_is_checked_when_autograd_is_nonzero_where_f_does_not_move():
    # 1e-20·x vanishes in the rounding of 1.0: f does not move at ±h while autograd is 1e-20, so the
    # screen leaves the input to the full stencil, which passes it; forward AD must still be checked
    x = _randn(5, seed=11)
    report = gk.check_gradients(lambda t: t * 1e-20 + 1.0, x, mode="full", forward_ad=True)
    assert report.ok, str(report)
    assert not _settled(report)
    assert report.check("forward_ad").status == "passed", report.check("forward_ad").detail


# --- forward AD against the screen's nonzero entries, and the zero grad_output in the batched rows -----
class _MlpWrongJvpInB1(torch.autograd.Function):
    """The MLP with a right backward and a jvp that drops 1% of b1's tangent at one element."""

    @staticmethod
    def forward(x, w1, b1, w2, b2):
        return _mlp(x, w1, b1, w2, b2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w1, b1, w2, b2 = ctx.saved_tensors
        h = torch.tanh(x @ w1.T + b1)
        gz = (g @ w2) * (1 - h * h)
        return gz @ w1, gz.T @ x, gz.sum(0), g.T @ h, g.sum(0)

    @staticmethod
    def jvp(ctx, tx, tw1, tb1, tw2, tb2):
        x, w1, b1, w2, b2 = ctx.saved_tensors
        tb1 = tb1.clone()
        tb1[5] = tb1[5] * 0.99
        z = x @ w1.T + b1
        h = torch.tanh(z)
        tz = tx @ w1.T + x @ tw1.T + tb1
        return ((1 - h * h) * tz) @ w2.T + h @ tw2.T + tb2


class _MlpRightJvp(_MlpWrongJvpInB1):
    @staticmethod
    def jvp(ctx, tx, tw1, tb1, tw2, tb2):
        x, w1, b1, w2, b2 = ctx.saved_tensors
        h = torch.tanh(x @ w1.T + b1)
        tz = tx @ w1.T + x @ tw1.T + tb1
        return ((1 - h * h) * tz) @ w2.T + h @ tw2.T + tb2


@pytest.mark.parametrize("screens", ["shared", "input by input", "dense"])
def test_forward_ad_against_the_backward_gives_one_verdict_whatever_the_screen(screens):
    changes = {}
    if screens != "shared":
        changes["joint_screen_entries"] = 0
    if screens == "dense":  # no list of nonzero entries: the products over the dense matrices
        changes["sparse_forward"] = False
    args = _mlp_args()
    with tuned(**changes) as tuning:
        right = gk.check_gradients(_MlpRightJvp.apply, *args, mode="full", forward_ad=True)
        wrong = gk.check_gradients(_MlpWrongJvpInB1.apply, *args, mode="full", forward_ad=True)
    assert len(tuning.paths("sparse_forward")) == (0 if screens == "dense" else 2)
    assert right.ok, str(right)
    assert "random direction against the checked backward Jacobian" in right.check("forward_ad").detail
    assert wrong.check("backward").status == "passed"
    assert wrong.check("forward_ad").status == "failed"
    named = {(m.input_index, m.index) for m in wrong.mismatches if m.check == "forward_ad"}
    assert named == {(2, (5,))}


def test_forward_ad_sums_over_the_screens_nonzero_entries_shared_or_input_by_input():
    # the sums over the screen's list of nonzero entries give the dense products' verdicts and ratios
    reports = {}
    for name, changes in {"shared": {}, "apart": {"joint_screen_entries": 0}, "dense": {"sparse_forward": False}}.items():
        with tuned(**changes) as tuning:
            reports[name] = gk.check_gradients(_mlp, *_mlp_args(), mode="full", forward_ad=True)
        assert tuning.paths("sparse_forward") == ([] if name == "dense" else [[0, 1, 2, 3, 4]])
    for report in reports.values():
        assert report.ok and report.check("forward_ad").status == "passed", str(report)
    assert _worst(reports["shared"], "forward_ad") == _worst(reports["dense"], "forward_ad")


class _TwoOutputsNonzeroForZeroGradOfSecond(torch.autograd.Function):
    """(2x, x²): the backward adds 1e-3 whenever the second output's gradient is all zeros."""

    @staticmethod
    def forward(x):
        return 2 * x, x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        g = 2 * g1 + 2 * x * g2
        return g + 1e-3 if not bool(g2.any()) and not bool(g1.any()) else g


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_nonzero_gradient_of_a_zero_grad_output_is_caught_in_either_mode(mode):
    x = _randn(6, seed=12)
    report = gk.check_gradients(_TwoOutputsNonzeroForZeroGradOfSecond.apply, x, mode=mode, forward_ad=False)
    check = report.check("zero_grad_output")
    assert check.status == "failed", str(report)
    assert "zero grad_output gave a nonzero gradient for x (6 nonzero element(s), largest 0.001)" in check.detail
    right = gk.check_gradients(lambda t: (2 * t, t * t), x, mode=mode, forward_ad=False)
    assert right.check("zero_grad_output").status == "passed"
    folded = "went with the Jacobian's batched rows" in right.check("zero_grad_output").detail
    assert folded == (mode == "full")


def test_the_zero_grad_output_of_a_complex_input_counts_elements():
    class NonzeroForZero(torch.autograd.Function):
        @staticmethod
        def forward(z):
            return z * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):  # 1e-3 on the real part of each element
            return g * 2 + (1e-3 if not bool(g.any()) else 0.0)

    z = torch.complex(_randn(4, seed=13), _randn(4, seed=14))
    report = gk.check_gradients(NonzeroForZero.apply, z, mode="full", forward_ad=False)
    check = report.check("zero_grad_output")
    assert check.status == "failed"
    assert "(4 nonzero element(s)" in check.detail


# --- vectors and matrices evaluated through one vmap ------------------------------------------------
def test_inputs_evaluated_through_one_vmap_give_the_verdict_of_one_vmap_per_input():
    args = _mlp_args()
    with tuned() as tuning:
        together = gk.check_gradients(_mlp, *args, mode="full")
    assert tuning.paths("together") == [[0, 1, 2, 3, 4]]
    with tuned(together_elements=0) as tuning:
        apart = gk.check_gradients(_mlp, *args, mode="full")
    assert tuning.paths("together") == []
    for report in (together, apart):
        assert report.ok and _settled(report), str(report)
    assert together.evaluations == apart.evaluations
    # f agrees to round-off (batched and unbatched matmuls), so the worst ratios are close, not equal
    for key, value in _worst(apart).items():
        assert abs(_worst(together)[key] - value) < 0.2, key


def test_a_convolution_is_evaluated_one_input_at_a_time():
    x, w = _randn(2, 3, 10, seed=3), _randn(4, 3, 3, seed=4)
    b = _randn(4, seed=5)
    with tuned() as tuning:
        report = gk.check_gradients(lambda x, w, b: torch.nn.functional.conv1d(x, w, b), x, w, b, mode="full")
    assert report.ok, str(report)
    assert tuning.paths("together") == []  # a batched weight beside a batched image would make a grouped convolution


class _ScaleWrongInSecondVmap(_ScaleWrongInSecond):
    generate_vmap_rule = True


def test_a_wrong_element_is_named_when_inputs_are_evaluated_together():
    x, y = _randn(12, seed=6), _randn(12, seed=7)
    with tuned() as tuning:
        report = gk.check_gradients(_ScaleWrongInSecondVmap.apply, x, y, mode="full", forward_ad=False, strict=True)
    assert tuning.paths("together") == [[0, 1]]
    assert {(m.input_index, m.index) for m in report.mismatches} == {(1, (5,))}
    assert report.check("backward").detail.endswith("settled at ±h (every entry within the plain central "
                                                    "difference's tolerance): input0")


def _picky(a, b):
    """a * b that refuses to run with both inputs batched by vmap (one at a time is fine)."""
    from torch._C._functorch import is_batchedtensor

    if is_batchedtensor(a) and is_batchedtensor(b):
        raise RuntimeError("not with both inputs batched")
    return a * b


def test_a_function_vmap_cannot_run_on_all_inputs_at_once_is_evaluated_input_by_input():
    x, y = _randn(6, seed=8), _randn(6, seed=9)
    report = gk.check_gradients(_picky, x, y, mode="full")
    assert report.ok, str(report)
    assert "numerical vmap" in report.check("backward").detail  # one input at a time, not the loop
    with tuned(together_elements=0):
        assert report.evaluations == gk.check_gradients(_picky, x, y, mode="full").evaluations


@pytest.mark.parametrize("connected", [True, False], ids=["zero gradient", "no path"])
def test_functorch_rows_tell_a_zero_gradient_from_no_gradient(connected):
    x, w = _randn(80, seed=15), _randn(3, seed=16)
    if connected:
        def fn(x, w):
            return torch.sin(x) + 0.0 * w.sum()
    else:
        def fn(x, w):  # w unused: autograd has no path to it
            return torch.sin(x)
    report = gk.check_gradients(fn, x, w, mode="full")
    assert report.ok, str(report)
    assert "vmap over torch.func.vjp" in report.check("backward").detail
    flows_note = any(n.code == "no_gradient_flow" and n.fields[0] == 1 for n in report.notes)
    assert flows_note == (not connected)


@pytest.mark.parametrize("mode, n", [("full", 6), ("directional", 6), ("directional", 100_000)])
def test_forward_mode_passes_record_no_graph(mode, n):
    # a forward-mode pass with grad enabled on inputs that require grad also records the backward graph of
    # every tangent (twice the cost of the pass on large inputs): fn never sees a dual input that requires
    # grad while grad is enabled (100_000 elements: one direction, one plain forward-mode pass)
    seen = []

    def sin_times_x(x):
        dual = torch.autograd.forward_ad.unpack_dual(x).tangent is not None
        seen.append((dual, torch.is_grad_enabled(), x.requires_grad))
        return torch.sin(x) * x

    report = gk.check_gradients(sin_times_x, _randn(n), mode=mode, forward_ad=True)
    assert report.ok and report.check("forward_ad").status == "passed", str(report)
    duals = [s for s in seen if s[0]]
    assert duals, seen
    assert not any(grad and requires for _, grad, requires in duals), duals


#: x³ with its context set in ``forward`` (no ``setup_context``): torch refuses it under vmap
_OldStyleCube = unary(lambda x: x**3, lambda x: 3 * x**2, name="OldStyleCube")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_function_without_setup_context_is_never_called_under_vmap(dtype):
    under_vmap = []

    def fn(x):
        under_vmap.append(torch._C._are_functorch_transforms_active())
        return _OldStyleCube.apply(x)

    report = gk.check_gradients(fn, _randn(10, dtype=dtype).requires_grad_(), mode="full")
    assert report.ok
    assert report.path == "loop (fn has a custom autograd.Function without a vmap rule: evaluated point by point)"
    assert not any(under_vmap) and len(under_vmap) >= 20


def _points_seen(fn):
    """``fn`` recording the point of each of its calls (the bytes of its input); and the record."""
    seen: list = []

    def recorded(x):
        seen.append(x.detach().numpy().tobytes())
        return fn(x)

    return recorded, seen


@pytest.mark.parametrize("factor", [1.0, 1.03], ids=["right", "wrong"])
def test_a_full_check_point_by_point_evaluates_each_point_once(factor):
    # no vmap rule: each point a call of fn; x[0] = 0 is a kink the open entries' own judging cannot settle
    # (and x[3]'s derivative 3% off, where wrong), so the input's whole stencil follows: the points at ±2h of
    # the open coordinates are read back from that judging, not evaluated again
    x = torch.cat([torch.zeros(1, dtype=torch.float64), _randn(11, seed=7)]).requires_grad_()
    wrapped = unary(lambda t: t.abs() + torch.sin(t), lambda t: t.sign() + torch.cos(t), factor=factor, at=3)
    fn, seen = _points_seen(wrapped.apply)
    report = gk.check_gradients(fn, x, mode="full", forward_ad=False)
    assert report.ok == (factor == 1.0)
    at_x = x.detach().numpy().tobytes()
    moved = [p for p in seen if p != at_x]
    assert len(moved) > 4 * x.numel()  # the whole stencil ran, and a second opinion after it
    assert "but for a few entries" not in report.check("backward").detail
    stencil = moved[: 4 * x.numel()]  # the screen's ±h, the open coordinate's ±2h, the rest of the stencil
    assert len(set(stencil)) == len(stencil)
