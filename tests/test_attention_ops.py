"""Layer norm, dropout and scaled dot-product attention: hand-computed properties, agreement with
torch's own layers, and clear errors on bad input. (Their gradient checks, parity, torch.func,
autocast and compile run with every other op's in tests/test_ops.py and tests/test_citizens.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import customops as co

# ---- dropout ------------------------------------------------------------------------------


def test_dropout_rate_expectation_and_scale():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(200_000)
    out = co.dropout(x, 0.3, generator=gen)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.3) < 0.005, dropped  # binomial std is about 0.001
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.7)))
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_identity_cases():
    x = torch.randn(4, 5, requires_grad=True)
    assert co.dropout(x, 0.0) is x
    assert co.dropout(x, 0.9, training=False) is x
    assert co.Dropout(0.5).eval()(x) is x
    out = co.dropout(x, 1.0)
    out.sum().backward()
    assert torch.all(out == 0) and torch.all(x.grad == 0)


def test_dropout_gradient_is_the_mask_over_keep_exactly():
    x = (torch.rand(64, 33, dtype=torch.float64) + 0.5).requires_grad_()
    out = co.dropout(x, 0.25, generator=torch.Generator().manual_seed(3))
    out.backward(torch.ones_like(out))
    mask = (out != 0).double()
    assert torch.equal(x.grad, mask / 0.75)
    assert torch.equal(out.detach(), x.detach() * (mask / 0.75))


def test_dropout_seed_reproduces_and_differs_per_sample_under_vmap():
    x = torch.randn(3, 1000)
    a = co.dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    b = co.dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    ones = torch.ones(3, 1000)
    per_sample = torch.func.vmap(lambda r: co.dropout(r, 0.5), randomness="different")(ones)
    assert not torch.equal(per_sample[0], per_sample[1])


# ---- layer norm ---------------------------------------------------------------------------


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


# ---- attention ----------------------------------------------------------------------------


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


# ---- bad input ----------------------------------------------------------------------------

q4 = lambda *s: torch.randn(*s)  # noqa: E731
BAD = [
    (
        "layer_norm",
        lambda: co.layer_norm(torch.randn(3, 4), torch.randn(5)),
        ValueError,
        r"weight must have shape \(4,\)",
    ),
    (
        "layer_norm",
        lambda: co.layer_norm(torch.randn(3, 4), torch.randn(4), torch.randn(4, 1)),
        ValueError,
        "bias must have 1",
    ),
    ("layer_norm", lambda: co.layer_norm(torch.ones(3, 4, dtype=torch.long)), TypeError, "floating"),
    ("layer_norm", lambda: co.layer_norm(torch.randn(3, 4), eps=0), ValueError, "eps must be a positive"),
    ("layer_norm", lambda: co.layer_norm(torch.randn(3, 4), torch.randn(4, dtype=torch.float64)), TypeError, "mixed"),
    ("layer_norm", lambda: co.layer_norm(torch.randn(3, 0)), ValueError, "D >= 1"),
    ("dropout", lambda: co.dropout(torch.randn(3), 1.5), ValueError, r"p must be a probability in \[0, 1\]"),
    ("dropout", lambda: co.dropout(torch.randn(3), -0.1), ValueError, "probability"),
    ("dropout", lambda: co.dropout(torch.ones(3, dtype=torch.long), 0.1), TypeError, "floating"),
    ("dropout", lambda: co.dropout(torch.randn(3), 0.1, training=1), TypeError, "training must be a bool"),
    ("dropout", lambda: co.dropout(torch.randn(3), 0.1, generator=0), TypeError, "generator"),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(q4(2, 3, 4), q4(2, 3, 4), q4(2, 3, 4)),
        ValueError,
        "4 dimensions",
    ),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(q4(1, 2, 3, 4), q4(1, 2, 5, 3), q4(1, 2, 5, 4)),
        ValueError,
        "k must be",
    ),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(q4(1, 2, 3, 4), q4(1, 2, 5, 4), q4(1, 2, 6, 4)),
        ValueError,
        "v must be",
    ),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(q4(1, 2, 3, 4), q4(1, 2, 5, 4), q4(1, 2, 5, 4), torch.ones(3, 5)),
        TypeError,
        "bool",
    ),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(
            q4(1, 2, 3, 4), q4(1, 2, 5, 4), q4(1, 2, 5, 4), torch.ones(3, 4, dtype=torch.bool)
        ),
        ValueError,
        "does not broadcast",
    ),
    (  # broadcastable with (N, H, S, T), but larger: N = 2 for a batch of 1
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(
            q4(1, 2, 3, 4), q4(1, 2, 5, 4), q4(1, 2, 5, 4), torch.ones(2, 1, 3, 5, dtype=torch.bool)
        ),
        ValueError,
        r"mask of shape \(2, 1, 3, 5\) does not broadcast",
    ),
    (
        "scaled_dot_product_attention",
        lambda: co.scaled_dot_product_attention(
            q4(1, 2, 3, 4), q4(1, 2, 5, 4), q4(1, 2, 5, 4), torch.ones(1, 1, 1, 3, 5, dtype=torch.bool)
        ),
        ValueError,
        "at most 4 dimensions",
    ),
]


@pytest.mark.parametrize("op,call,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_clear_error(op, call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert str(info.value).startswith(op + ":"), info.value


def test_every_new_op_has_at_least_four_bad_input_cases():
    counts = {
        name: sum(b[0] == name for b in BAD) for name in ("layer_norm", "dropout", "scaled_dot_product_attention")
    }
    assert all(n >= 4 for n in counts.values()), counts
