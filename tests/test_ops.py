"""Every op: gradient checks (plain, second order, batched) and parity with torch, parametrized
once over the registry of all ops (customops.testing.specs); then the core ops' hand-computed
values, the convolution identities, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import customops as co
from customops.testing import check, reference
from customops.testing.registry import OpSpec
from customops.testing.specs import ALL_SPECS, SPECS

SPEC_IDS = [s.name for s in SPECS]  # the core ops
ALL_IDS = [s.name for s in ALL_SPECS]  # every op
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cases(spec, dtype=torch.float64, device="cpu", seed=0):
    return spec.make_cases(dtype, torch.device(device), torch.Generator().manual_seed(seed))


# ---- generic, over every op in the registry ------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_gradcheck(spec):
    for case in _cases(spec):
        assert check.run_gradcheck(spec, case)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_batched_gradcheck(spec):
    """gradcheck(check_batched_grad=True): the hand-written backward also runs under vmap."""
    for case in _cases(spec):
        assert check.run_batched_gradcheck(spec, case)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_gradgradcheck(spec):
    if not spec.double_backward:
        pytest.skip(f"{spec.name} is once_differentiable")
    for case in _cases(spec):
        assert check.run_gradgradcheck(spec, case)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_parity_with_torch(spec, dtype):
    for i, case in enumerate(_cases(spec, dtype, seed=1)):
        err = check.parity_error(spec, case)
        assert err <= check.TOLERANCE[dtype], f"{spec.name} case {i}: error {err:.2e}"


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_cases_include_non_contiguous_input(spec):
    assert any(not a.is_contiguous() for args, _ in _cases(spec) for a in args if isinstance(a, torch.Tensor))


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_parity_with_torch_cuda(spec, dtype):
    for i, case in enumerate(_cases(spec, dtype, device="cuda")):
        out = spec.op(*case[0], **case[1])
        assert out.device.type == "cuda"
        err = check.parity_error(spec, case)
        assert err <= check.TOLERANCE[dtype] * 10, f"{spec.name} case {i} on cuda: error {err:.2e}"


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_gradcheck_cuda(spec):
    for case in _cases(spec, device="cuda"):
        assert check.run_gradcheck(spec, case)


def test_checker_catches_a_wrong_backward():
    class Doubled(torch.autograd.Function):  # forward is relu, backward is off by a factor 2
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp_min(0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * g * (x > 0)

    bad = OpSpec("bad_relu", Doubled.apply, F.relu, SPECS[1].make_cases)
    row = check.check_op(bad, torch.device("cpu"))
    assert row["verdict"] == "FAIL" and row["gradcheck"] == "FAIL"
    assert any("parity" in p for p in row["problems"])


def test_check_command_prints_a_row_per_op_and_passes(capsys):
    # Two ops keep this quick; every op's checks run in the tests above.
    assert check.main(["--ops", "relu", "softmax_loss"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "softmax_loss" in out and "affine" not in out
    assert "2 passed, 0 failed" in out


def test_check_command_rejects_an_unknown_op():
    with pytest.raises(SystemExit):
        check.main(["--ops", "nope"])


# ---- tiny hand-computed values --------------------------------------------------------


def test_affine_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])
    b = torch.tensor([0.0, 1.0, 2.0])
    assert torch.equal(co.affine(x, w, b), torch.tensor([[2.0, 3.0, 5.0], [5.0, 5.0, 7.0]]))
    x.requires_grad_()
    w.requires_grad_()
    co.affine(x, w, b).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]]))  # X^T 1
    assert torch.equal(x.grad, torch.tensor([[0.0, 3.5], [0.0, 3.5]]))  # 1 W^T


def test_affine_flattens_trailing_dims():
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    w = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(co.affine(x, w), x.reshape(3, 8) @ w)


def test_relu_hand_computed():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = co.relu(x)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 0.0, 4.0, 5.0]))  # gradient 0 at the kink


def test_relu_at_nan_matches_torch():
    """NaN stays NaN and passes its gradient through, as torch.relu (its backward tests Y <= 0)."""
    x = torch.tensor([float("nan"), -1.0, 0.0, 2.0], requires_grad=True)
    y = co.relu(x)
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x_ref = x.detach().clone().requires_grad_()
    y_ref = torch.relu(x_ref)
    y_ref.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert torch.equal(x.grad, x_ref.grad) and x.grad[0] == 1.0


def test_max_pool_hand_computed_and_ties():
    x = torch.tensor([[[[1.0, 2.0, 5.0, 5.0], [3.0, 0.0, 5.0, 5.0], [7.0, 7.0, 9.0, 8.0]]]], requires_grad=True)
    y = co.max_pool2d(x)  # the odd last row is dropped
    assert torch.equal(y, torch.tensor([[[[3.0, 5.0]]]]))
    y.backward(torch.tensor([[[[10.0, 20.0]]]]))
    expected = torch.zeros(1, 1, 3, 4)
    expected[0, 0, 1, 0] = 10.0
    expected[0, 0, 0, 2] = 20.0  # four tied 5s: the first in row-major order takes it all
    assert torch.equal(x.grad, expected)


def test_max_pool_overlapping_windows_accumulate():
    x = torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    co.max_pool2d(x, 2, 1).sum().backward()  # the 9 wins all four windows
    assert x.grad[0, 0, 1, 1] == 4.0 and x.grad.sum() == 4.0


def test_softmax_loss_hand_computed():
    scores = torch.zeros(2, 4, requires_grad=True)
    y = torch.tensor([1, 3])
    loss = co.softmax_loss(scores, y)
    torch.testing.assert_close(loss, torch.log(torch.tensor(4.0)))  # uniform scores: log C
    loss.backward()
    expected = torch.full((2, 4), 0.25 / 2)
    expected[0, 1] -= 0.5
    expected[1, 3] -= 0.5
    torch.testing.assert_close(scores.grad, expected)


def test_softmax_loss_stable_for_large_scores():
    scores = torch.tensor([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]], requires_grad=True)
    loss = co.softmax_loss(scores, torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(scores, torch.tensor([0, 2])))
    loss.backward()
    assert torch.isfinite(scores.grad).all()


# ---- the homework's convolution identities, against the literal 1-indexed definitions --


def test_reference_operations_hand_computed():
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert torch.equal(reference.filt(a, b), torch.tensor([[-4.0, -4.0], [-4.0, -4.0]]))
    assert torch.equal(reference.conv_valid(a, b), torch.tensor([[4.0, 4.0], [4.0, 4.0]]))  # kernel flipped
    full = reference.conv_full(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [3.0]]))
    assert torch.equal(full, torch.tensor([[1.0, 2.0], [3.0, 6.0]]))


def test_conv2d_equals_sums_of_valid_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=gen, dtype=torch.float64)
    y = co.conv2d(x, w)
    for n in range(2):
        for f in range(4):
            by_filt = sum(reference.filt(x[n, c], w[f, c]) for c in range(3))
            by_valid = sum(reference.conv_valid(x[n, c], w[f, c].flip(0, 1)) for c in range(3))
            torch.testing.assert_close(y[n, f], by_filt)
            torch.testing.assert_close(y[n, f], by_valid)


def test_conv2d_gradients_equal_full_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = co.conv2d(x, w)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    for n in range(2):
        for c in range(2):
            expected = sum(reference.conv_full(w[f, c].detach(), dy[n, f]) for f in range(3))
            torch.testing.assert_close(x.grad[n, c], expected)
    for f in range(3):
        for c in range(2):
            expected = sum(reference.filt(x[n, c].detach(), dy[n, f]) for n in range(2))
            torch.testing.assert_close(w.grad[f, c], expected)


def test_conv2d_skips_unneeded_gradients():
    x = torch.randn(2, 1, 6, 6)  # data: no gradient wanted
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    co.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


# ---- bad input: clear errors naming the op ---------------------------------------------

f32 = torch.float32
BAD_INPUTS = [
    # affine
    ("affine", lambda: co.affine(torch.randn(4), torch.randn(4, 3)), ValueError, "dimensions|shape"),
    ("affine", lambda: co.affine(torch.randn(4, 5), torch.randn(6, 3)), ValueError, "5 features"),
    ("affine", lambda: co.affine(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4)), ValueError, "b has 4"),
    ("affine", lambda: co.affine(torch.ones(4, 5, dtype=torch.int64), torch.randn(5, 3)), TypeError, "floating"),
    ("affine", lambda: co.affine(torch.randn(4, 5), torch.randn(5, 3, dtype=torch.float64)), TypeError, "mixed"),
    ("affine", lambda: co.affine(torch.randn(4, 5), torch.randn(5, 3, device="meta")), ValueError, "devices"),
    ("affine", lambda: co.affine(torch.randn(4, 5), torch.randn(5)), ValueError, "dimensions"),
    # relu
    ("relu", lambda: co.relu(torch.ones(3, dtype=torch.int32)), TypeError, "floating"),
    ("relu", lambda: co.relu(torch.ones(3, dtype=torch.bool)), TypeError, "floating"),
    ("relu", lambda: co.relu([1.0, -1.0]), TypeError, "torch.Tensor"),
    ("relu", lambda: co.relu(None), TypeError, "torch.Tensor"),
    # conv2d
    ("conv2d", lambda: co.conv2d(torch.randn(1, 6, 6), torch.randn(2, 1, 3, 3)), ValueError, "4 dimensions"),
    ("conv2d", lambda: co.conv2d(torch.randn(1, 2, 6, 6), torch.randn(2, 3, 3, 3)), ValueError, "2 channels"),
    ("conv2d", lambda: co.conv2d(torch.randn(1, 1, 3, 3), torch.randn(2, 1, 4, 4)), ValueError, "larger"),
    (
        "conv2d",
        lambda: co.conv2d(torch.ones(1, 1, 5, 5, dtype=torch.uint8), torch.randn(2, 1, 3, 3)),
        TypeError,
        "floating",
    ),
    (
        "conv2d",
        lambda: co.conv2d(torch.randn(1, 1, 5, 5, dtype=torch.float64), torch.randn(2, 1, 3, 3)),
        TypeError,
        "mixed",
    ),
    (
        "conv2d",
        lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3), torch.randn(3)),
        ValueError,
        "b has 3",
    ),
    ("conv2d", lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3), stride=0), ValueError, "stride"),
    ("conv2d", lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3), padding=1.5), TypeError, "padding"),
    (
        "conv2d",
        lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3, device="meta")),
        ValueError,
        "devices",
    ),
    # max_pool2d
    ("max_pool2d", lambda: co.max_pool2d(torch.randn(4, 4)), ValueError, "4 dimensions"),
    ("max_pool2d", lambda: co.max_pool2d(torch.randn(1, 1, 1, 4)), ValueError, "larger"),
    ("max_pool2d", lambda: co.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64)), TypeError, "floating"),
    ("max_pool2d", lambda: co.max_pool2d(torch.randn(1, 1, 4, 4), 0), ValueError, "positive"),
    ("max_pool2d", lambda: co.max_pool2d(torch.randn(1, 1, 4, 4), (2, 2, 2)), TypeError, "kernel_size"),
    # softmax_loss
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(3, 4), torch.tensor([0, 4, 1])), ValueError, r"\[0, 4\)"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(3, 4), torch.tensor([0, -1, 1])), ValueError, "-1"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(3, 4), torch.tensor([0, 1])), ValueError, "3 rows"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0])), TypeError, "integer"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(4), torch.tensor([0])), ValueError, "2 dimensions"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(3, 4), torch.tensor([[0, 1, 2]])), ValueError, "1 dimensions"),
    ("softmax_loss", lambda: co.softmax_loss(torch.randn(0, 4), torch.zeros(0, dtype=torch.long)), ValueError, "empty"),
    (
        "softmax_loss",
        lambda: co.softmax_loss(torch.randn(2, 4), torch.tensor([0, 1], device="meta")),
        ValueError,
        "meta",
    ),
]


@pytest.mark.parametrize("op,call,error,match", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(op, call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert str(info.value).startswith(op + ":")


def test_every_op_has_at_least_four_bad_input_cases():
    counts = {name: sum(1 for b in BAD_INPUTS if b[0] == name) for name in SPEC_IDS}
    assert all(n >= 4 for n in counts.values()), counts


# ---- nn.Module wrappers ----------------------------------------------------------------


def test_modules_own_parameters_and_match_the_ops():
    lin, conv = co.Linear(12, 5), co.Conv2d(3, 4, 3, padding=1)
    assert lin.weight.shape == (12, 5) and lin.bias.shape == (5,)
    assert conv.weight.shape == (4, 3, 3, 3) and len(list(conv.parameters())) == 2
    assert "in_features=12" in repr(lin) and "kernel_size=(3, 3)" in repr(conv)
    assert "kernel_size=(2, 2)" in repr(co.MaxPool2d())
    bound = 1 / 12**0.5  # torch.nn's default range for fan_in = 12
    assert lin.weight.abs().max() <= bound and lin.weight.std() > bound / 4
    x = torch.randn(2, 3, 8, 8)
    h = co.MaxPool2d()(co.ReLU()(conv(x)))
    torch.testing.assert_close(h, F.max_pool2d(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)), 2))
    scores = lin(h[:, :, :2, :2].reshape(2, 4, 2, 2)[:, :3])
    loss = co.SoftmaxLoss()(scores, torch.tensor([0, 4]))
    loss.backward()
    assert lin.weight.grad is not None and conv.weight.grad is not None
    assert co.Linear(3, 2, bias=False).bias is None


def test_public_names():
    assert set(co.__all__) >= {"affine", "relu", "conv2d", "max_pool2d", "softmax_loss", "Linear", "Conv2d"}
