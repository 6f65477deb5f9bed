"""co.hardtanh and co.relu6 (customops/activation.py): values, the gradient at the kinks as torch
gives it, the in-place form, the modules, and clear errors. Gradient checks, parity, torch.func,
autocast, compile and the error inputs run over the registry (tests/customops/testing/test_specs.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import customops as co


def test_hardtanh_hand_computed_and_kinks():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 3.0], requires_grad=True)
    y = co.hardtanh(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, -0.5, 0.0, 1.0, 1.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 3.0, 4.0, 0.0, 0.0]))  # 0 at both kinks, as torch


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 6.0), (-float("inf"), 2.0), (-2.0, float("inf"))])
def test_hardtanh_equals_torch_at_and_near_the_kinks(bounds):
    lo, hi = bounds
    near = [v for b in bounds if abs(b) != float("inf") for v in (b, b + 1e-7, b - 1e-7, b + 1e-30, b - 1e-30)]
    x = torch.tensor(near + [0.5, -5.0, 7.0, float("inf"), -float("inf")] * 4, requires_grad=True)
    (ours,) = torch.autograd.grad(co.hardtanh(x, lo, hi).sum(), x)
    (theirs,) = torch.autograd.grad(F.hardtanh(x, lo, hi).sum(), x)
    assert torch.equal(co.hardtanh(x, lo, hi), F.hardtanh(x, lo, hi))
    assert torch.equal(ours, theirs)  # exact comparisons: an entry 1e-30 above a kink is inside


def test_relu6_equals_torch_with_tiny_activations():
    # A rounding-based indicator would drop the gradient of 1e-9 next to 6: this one must not.
    x = torch.tensor([1e-9, 1e-30, 0.0, 6.0, 6.0 - 1e-6, 3.0, -1.0, 8.0] * 3, requires_grad=True)
    (ours,) = torch.autograd.grad(co.relu6(x).sum(), x)
    (theirs,) = torch.autograd.grad(F.relu6(x).sum(), x)
    assert torch.equal(ours, theirs)
    assert ours[0] == 1 and ours[1] == 1 and ours[2] == 0 and ours[3] == 0


def test_inplace_overwrites_x_and_differentiates_like_torch():
    gen = torch.Generator().manual_seed(0)
    leaf = torch.randn(4, 5, generator=gen, requires_grad=True)
    h = leaf * 4
    y = co.relu6(h, inplace=True)
    assert y is h and h.min() >= 0 and h.max() <= 6
    y.square().sum().backward()
    ours = leaf.grad.clone()
    leaf.grad = None
    F.relu6(leaf * 4, inplace=True).square().sum().backward()
    assert torch.equal(ours, leaf.grad)


def test_inplace_without_autograd_and_on_a_leaf():
    with torch.no_grad():
        x = torch.tensor([-3.0, 0.5, 9.0])
        assert co.hardtanh(x, inplace=True) is x and torch.equal(x, torch.tensor([-1.0, 0.5, 1.0]))
    with torch.inference_mode():
        x = torch.tensor([-3.0, 7.0])
        assert torch.equal(co.relu6(x, inplace=True), torch.tensor([0.0, 6.0]))
    leaf = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):  # autograd's own rule, as for torch's in-place ops
        co.relu6(leaf, inplace=True)


def test_inplace_under_compile_computes_out_of_place():
    torch._dynamo.reset()
    x = torch.randn(3, 4, requires_grad=True)
    fn = torch.compile(lambda t: co.relu6(t * 4, inplace=True).sum(), fullgraph=True, backend="aot_eager")
    fn(x).backward()
    (want,) = torch.autograd.grad(F.relu6(x * 4).sum(), x)
    assert torch.equal(x.grad, want)


def test_modules():
    assert isinstance(co.ReLU6(), co.Hardtanh)
    assert "inplace=True" in repr(co.ReLU6(inplace=True))
    assert "min_val=-2.0, max_val=3.0" in repr(co.Hardtanh(-2, 3))
    x = torch.linspace(-8, 8, 17)
    assert torch.equal(co.ReLU6()(x), F.relu6(x)) and torch.equal(co.Hardtanh(-2, 3)(x), F.hardtanh(x, -2, 3))
    with pytest.raises(ValueError, match="Hardtanh: min_val must be less than max_val"):
        co.Hardtanh(1.0, 1.0)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "nhwc"])
def test_chunked_backward_equals_torch(monkeypatch, channels_last):
    """The eager backward runs a chunk at a time through one temporary: small chunks give torch's gradient."""
    from customops import _reduce

    monkeypatch.setattr(_reduce, "_CHUNK_ENTRIES", 7)
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0)) * 4
    x[0, 0, 0, :2] = torch.tensor([0.0, 6.0])  # both kinks
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for ours, theirs in (
        (co.relu6, F.relu6),
        (lambda t: co.hardtanh(t, -1.5, 2.0), lambda t: F.hardtanh(t, -1.5, 2.0)),
    ):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours(a).backward(g)
        theirs(b).backward(g)
        assert torch.equal(a.grad, b.grad)
