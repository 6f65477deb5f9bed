"""customops/modules.py: the nn.Module layers own their parameters, match the ops and torch's
own layers, and take device and dtype."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import customops as co


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


def test_layer_norm_module_matches_torch():
    torch.manual_seed(0)
    ours, native = co.LayerNorm(6), torch.nn.LayerNorm(6)
    with torch.no_grad():
        native.weight.copy_(torch.randn(6))
        native.bias.copy_(torch.randn(6))
        ours.weight.copy_(native.weight)
        ours.bias.copy_(native.bias)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(ours(x), native(x))


def test_multi_head_attention_matches_torch():
    torch.manual_seed(0)
    D, heads = 8, 2
    ours, native = co.MultiHeadAttention(D, heads), torch.nn.MultiheadAttention(D, heads, batch_first=True)
    with torch.no_grad():  # torch keeps (out, in) weights, the query/key/value ones stacked
        wq, wk, wv = native.in_proj_weight.chunk(3)
        bq, bk, bv = native.in_proj_bias.chunk(3)
        for layer, w, b in (
            (ours.query, wq, bq),
            (ours.key, wk, bk),
            (ours.value, wv, bv),
            (ours.out, native.out_proj.weight, native.out_proj.bias),
        ):
            layer.weight.copy_(w.t())
            layer.bias.copy_(b)
    x, memory = torch.randn(3, 5, D), torch.randn(3, 7, D)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    torch.testing.assert_close(ours(x, memory, memory), native(x, memory, memory, need_weights=False)[0])
    # torch's attn_mask marks the *forbidden* pairs; ours the allowed ones
    torch.testing.assert_close(ours(x, x, x, causal), native(x, x, x, attn_mask=~causal, need_weights=False)[0])


def test_positional_encoding_values():
    pe = co.PositionalEncoding(4, max_len=10)
    out = pe(torch.zeros(1, 3, 4))
    t = 2.0
    expected = torch.tensor([math.sin(t), math.cos(t), math.sin(t / 100), math.cos(t / 100)])
    torch.testing.assert_close(out[0, 2], expected)
    with pytest.raises(ValueError, match="exceeds max_len"):
        pe(torch.zeros(1, 11, 4))


def test_modules_take_device_and_dtype():
    layers = [
        co.Linear(3, 2, device="cpu", dtype=torch.float64),
        co.Conv2d(1, 2, 3, device="cpu", dtype=torch.float64),
        co.WordEmbedding(5, 3, device="cpu", dtype=torch.float64),
        co.RNN(3, 4, device="cpu", dtype=torch.float64),
        co.LSTM(3, 4, device="cpu", dtype=torch.float64),
        co.TemporalAffine(3, 4, device="cpu", dtype=torch.float64),
    ]
    for layer in layers:
        assert all(p.dtype == torch.float64 for p in layer.parameters()), layer
