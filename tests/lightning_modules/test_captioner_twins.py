"""captioner_twins: each torch.nn twin starts from its customops captioner's weights and, with dropout off,
computes the same loss and the same gradients (float64, label smoothing on, captions of several lengths)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.captioner_twins import RecurrentTwin, TransformerTwin, torch_twin
from lightning_modules.models import get_model

V = 23
SIZES = {
    "rnn_captioner": ({"wordvec_dim": 6, "hidden_dim": 7}, (5, 12)),
    "lstm_captioner": ({"wordvec_dim": 6, "hidden_dim": 7}, (5, 12)),
    "transformer_captioner": (
        {"positions": 4, "model_dim": 8, "num_heads": 2, "num_layers": 2, "ffn_dim": 16},
        (5, 4, 12),
    ),
}


def _captions(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(n, length) <START> w.. <END> <NULL>..; the first caption fills the row."""
    captions = torch.randint(4, V, (n, length), generator=gen)
    captions[:, 0] = 1
    for i in range(n):
        end = length - 1 if i == 0 else int(torch.randint(2, length, (), generator=gen))
        captions[i, end], captions[i, end + 1 :] = 2, 0
    return captions


@pytest.mark.parametrize("name", list(SIZES))
def test_the_twin_computes_the_same_loss_and_gradients_from_the_same_weights(name):
    sizes, feature_shape = SIZES[name]
    torch.manual_seed(0)
    custom = get_model(name, vocab_size=V, feature_dim=12, dropout=0.0, label_smoothing=0.1, **sizes).double()
    with torch.no_grad():  # features standardised by statistics other than (0, 1), as after set_feature_stats
        custom.feature_mean.uniform_(-1, 1)
        custom.feature_std.uniform_(0.5, 2)
    twin = torch_twin(custom).double()
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(feature_shape, generator=gen, dtype=torch.float64)
    captions = _captions(feature_shape[0], 9, gen)
    ours, theirs = custom(features, captions), twin(features, captions)
    torch.testing.assert_close(theirs, ours)
    ours.backward()
    theirs.backward()
    # Every parameter's gradient agrees, compared as the twin holds it (the embedding's by name).
    torch.testing.assert_close(twin.embed.weight.grad, custom.embed.weight.grad)
    torch.testing.assert_close(twin.head.weight.grad, custom.head.weight.grad.t())
    torch.testing.assert_close(twin.head.bias.grad, custom.head.bias.grad)
    if isinstance(twin, RecurrentTwin):
        torch.testing.assert_close(twin.proj.weight.grad, custom.proj_w.grad.t())
        grad_wx = custom.rnn.Wx.grad
        if name == "lstm_captioner":  # customops' gates i, f, o, g; torch's i, f, g, o
            i, f, o, g = grad_wx.chunk(4, dim=1)
            grad_wx = torch.cat([i, f, g, o], dim=1)
        torch.testing.assert_close(twin.rnn.weight_ih_l0.grad, grad_wx.t())
    else:
        torch.testing.assert_close(twin.memory_proj.weight.grad, custom.memory_proj.weight.grad.t())
        torch.testing.assert_close(twin.memory_pos.grad, custom.memory_pos.grad)
        for ours_layer, their_layer in zip(custom.layers, twin.decoder.layers, strict=True):
            torch.testing.assert_close(their_layer.linear1.weight.grad, ours_layer.ffn_in.weight.grad.t())
            torch.testing.assert_close(their_layer.norm3.weight.grad, ours_layer.norm3.weight.grad)
            q = ours_layer.cross_attn.query.weight.grad.t()
            torch.testing.assert_close(their_layer.multihead_attn.in_proj_weight.grad[: q.shape[0]], q)


def test_the_twins_are_built_from_torch_layers_and_own_their_weights():
    torch.manual_seed(0)
    rnn = get_model("lstm_captioner", vocab_size=V, feature_dim=12, wordvec_dim=6, hidden_dim=7)
    twin = torch_twin(rnn)
    assert isinstance(twin.rnn, nn.LSTM) and isinstance(twin.embed, nn.Embedding) and isinstance(twin.head, nn.Linear)
    with torch.no_grad():
        twin.embed.weight.zero_()
    assert rnn.embed.weight.abs().sum() > 0  # copied, not shared
    sizes, _ = SIZES["transformer_captioner"]
    attention = torch_twin(get_model("transformer_captioner", vocab_size=V, feature_dim=12, **sizes))
    assert isinstance(attention, TransformerTwin) and isinstance(attention.decoder, nn.TransformerDecoder)
    layer = attention.decoder.layers[0]
    assert not layer.norm_first and layer.linear1.out_features == 16 and layer.self_attn.num_heads == 2
    with pytest.raises(TypeError, match="torch_twin: expected a CaptioningRNN or TransformerCaptioner"):
        torch_twin(nn.Linear(2, 2))
