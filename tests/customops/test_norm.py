"""customops/norm.py: layer norm on a tiny value, on a vector, and on float16/bfloat16 rows
beyond float16's range."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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
