"""customops/attention.py: a tiny value, fully masked queries, float16 scores beyond range, no keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import customops as co


def test_attention_tiny_value():
    q = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    v = torch.tensor([[[[10.0], [20.0]]]])
    w = torch.softmax(torch.tensor([1 / math.sqrt(2), 0.0]), 0)
    torch.testing.assert_close(co.scaled_dot_product_attention(q, k, v), (w[0] * 10 + w[1] * 20).view(1, 1, 1, 1))


def test_fully_masked_query_gets_zero_output_and_no_gradient():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    out = co.scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.all(out[:, :, 1] == 0)
    out.sum().backward()
    assert torch.all(q.grad[:, :, 1] == 0) and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_attention_low_precision_stays_finite_where_torch_does(dtype):
    """q = k = 40 with E = 64: q k^T = 102400 overflows float16, the scaled scores do not."""
    q = torch.full((1, 2, 3, 64), 40.0, dtype=dtype, requires_grad=True)
    v = torch.randn(1, 2, 3, 5).to(dtype)
    out = co.scaled_dot_product_attention(q, q, v)
    ref = F.scaled_dot_product_attention(q, q, v)
    assert torch.isfinite(ref).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_attention_with_no_keys_gives_zeros_like_torch():
    q = torch.randn(2, 3, 4, 5, requires_grad=True)
    k = torch.randn(2, 3, 0, 5, requires_grad=True)
    v = torch.randn(2, 3, 0, 6, requires_grad=True)
    out = co.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    assert out.shape == (2, 3, 4, 6) and torch.all(out == 0)
    out.sum().backward()
    assert torch.all(q.grad == 0) and k.grad.shape == k.shape and v.grad.shape == v.shape
