"""customops/norm.py: layer norm on a tiny value, on a vector, and on float16/bfloat16 rows
beyond float16's range; group norm against layer and instance norm and torch over layouts, mixed
precision, the module's state_dict."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import customops as co


def test_layer_norm_tiny_value():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3, biased variance 3.5
    out = co.layer_norm(x, torch.tensor([1.0, 2.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 0.0]), eps=0.0 + 1e-12)
    z = (x - 3.0) / math.sqrt(3.5)
    torch.testing.assert_close(out, torch.tensor([[z[0, 0], 2 * z[0, 1], z[0, 2] + 1, z[0, 3]]]))


def test_layer_norm_of_a_vector_has_parameter_gradients():
    """A 1-D x (one row, no leading dimensions) with weight and bias that need gradients."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(5, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad(co.layer_norm(x, w, b), (x, w, b), grad)
    want = torch.autograd.grad(F.layer_norm(x, (5,), w, b), (x, w, b), grad)
    for got, ref in zip(ours, want):
        torch.testing.assert_close(got, ref)
    assert torch.autograd.gradcheck(co.layer_norm, (x, w, b))  # double-backward-safe path
    x2 = x.detach().clone().requires_grad_()  # weight only, through the eager in-place backward
    w2 = w.detach().clone().requires_grad_()
    co.layer_norm(x2, w2).backward(grad)
    torch.testing.assert_close(w2.grad, torch.autograd.grad(F.layer_norm(x, (5,), w), w, grad)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_layer_norm_low_precision_rows_beyond_float16_range(dtype):
    """Rows whose sum of squared deviations passes 65504 (20 * randn over 256 entries): the
    statistics are float32, as torch's, so the output is normalised rather than the bias."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 256, generator=gen) * 20).to(dtype).requires_grad_()
    w = torch.ones(256, dtype=dtype, requires_grad=True)
    b = torch.zeros(256, dtype=dtype, requires_grad=True)
    grad = torch.randn(4, 256, generator=gen).to(dtype)
    out = co.layer_norm(x, w, b)
    ref = F.layer_norm(x, (256,), w, b)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref)  # float16 / bfloat16 default tolerances
    for got, want in zip(torch.autograd.grad(out, (x, w, b), grad), torch.autograd.grad(ref, (x, w, b), grad)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2 * want.abs().max().item())


f64 = torch.float64


def test_one_group_is_layer_norm_and_c_groups_instance_norm():
    x = torch.randn(2, 6, 3, 4, dtype=f64)
    torch.testing.assert_close(co.group_norm(x, 1), F.layer_norm(x, x.shape[1:]))
    torch.testing.assert_close(co.group_norm(x, 6), F.instance_norm(x))


def test_hand_computed():
    x = torch.tensor([[[1.0], [3.0], [4.0], [8.0]]])  # (N=1, C=4, L=1), 2 groups of 2 channels
    y = co.group_norm(x, 2, torch.tensor([1.0, 2.0, 1.0, 3.0]), torch.tensor([0.0, 0.0, 5.0, 0.0]), eps=0.0)
    # group 1: mean 2, variance 1; group 2: mean 6, variance 4 -> xhat = -1, 1 in both; then weight and bias
    assert torch.equal(y[0, :, 0], torch.tensor([-1.0, 2.0, 4.0, 3.0]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_equals_torch(channels_last):
    gen = torch.Generator().manual_seed(0)
    for groups, affine, shape in itertools.product([1, 2, 3, 6], [True, False], [(3, 6), (2, 6, 5), (2, 6, 4, 3)]):
        x = torch.randn(shape, generator=gen, dtype=f64) * 2 + 1
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(6, generator=gen, dtype=f64) if affine else None
        b = torch.randn(6, generator=gen, dtype=f64) if affine else None
        results = []
        for fn in (co.group_norm, F.group_norm):
            leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
            y = fn(leaves[0], groups, leaves[1], leaves[2], 1e-3)
            y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=f64))
            results.append([y.detach()] + [t.grad for t in leaves if t is not None])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        if channels_last and x.dim() == 4:
            assert results[0][0].is_contiguous(memory_format=torch.channels_last)


def test_half_precision_input_with_float32_parameters():
    x = torch.randn(2, 4, 3, 3).bfloat16().requires_grad_()
    w, b = torch.ones(4), torch.zeros(4)
    y = co.group_norm(x, 2, w, b)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.group_norm(x.float(), 2, w, b), rtol=0, atol=3e-2)
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_module_state_dict_loads_both_ways():
    ours, theirs = co.GroupNorm(2, 4), nn.GroupNorm(2, 4)
    with torch.no_grad():
        ours.weight.uniform_(), ours.bias.uniform_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(ours(x), theirs(x))
    ours.load_state_dict(nn.GroupNorm(2, 4).state_dict())
    assert torch.equal(ours.weight, torch.ones(4))
    assert co.GroupNorm(2, 4, affine=False).weight is None
    with pytest.raises(ValueError, match="GroupNorm: num_groups=3"):
        co.GroupNorm(3, 4)


def test_group_norm_chunked_sums_equal_torch(monkeypatch):
    """With the chunked sums (customops/_reduce.py) a sample at a time, group norm is torch's."""
    from customops import _reduce

    monkeypatch.setattr(_reduce, "_CHUNK_ENTRIES", 1)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 6, 3, 3, generator=gen, dtype=f64) * 2 + 1).contiguous(memory_format=torch.channels_last)
    w, b, g = (torch.randn(6, generator=gen, dtype=f64), torch.randn(6, generator=gen, dtype=f64), torch.randn_like(x))
    results = []
    for fn in (co.group_norm, F.group_norm):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(leaves[0], 3, leaves[1], leaves[2])
        results.append([y, *torch.autograd.grad(y, leaves, g)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
