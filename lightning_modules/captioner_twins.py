"""torch.nn twins of the captioners, for the training benchmark: the same network built from torch's own
layers, starting from a customops captioner's weights.

- ``RecurrentTwin`` (of ``CaptioningRNN``): ``nn.Linear`` (features -> h0), ``nn.Embedding``,
  ``nn.RNN`` / ``nn.LSTM``, ``nn.Linear`` to the vocabulary and ``F.cross_entropy``.
- ``TransformerTwin`` (of ``TransformerCaptioner``): the same memory projection, embedding, sinusoidal
  positions and output layer around ``nn.TransformerDecoder`` (post-norm, ReLU, the same width, heads,
  layers, feed-forward width and dropout probability).

Every weight is copied from the customops network (transposed where torch.nn stores ``(out, in)``; the
LSTM's gate blocks reordered from customops' i, f, o, g to torch's i, f, g, o; the recurrent cells'
second bias zero), so with dropout off a twin computes the same loss and gradients as its original (the
tests check). Where the layouts differ, the twin does what torch's layer does: ``nn.TransformerDecoderLayer``
also drops out attention weights and the feed-forward block's hidden units, which the customops layer does
not; the loss is the same masked sum over time averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.captioners import CaptioningRNN, TransformerCaptioner


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """nn.Linear holding a customops (in, out) weight, transposed to torch's (out, in)."""
    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.t())
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _loss(scores: torch.Tensor, targets: torch.Tensor, null_id: int, label_smoothing: float) -> torch.Tensor:
    """temporal_softmax_loss's value: scores (N, T, V), targets (N, T) -> the masked sum over time / N."""
    N, T, V = scores.shape
    total = F.cross_entropy(
        # (N*T, V), in float32 at least, as the customops loss computes under autocast
        scores.reshape(N * T, V).to(torch.promote_types(scores.dtype, torch.float32)),
        targets.reshape(N * T),
        ignore_index=null_id,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return total / N


class RecurrentTwin(nn.Module):
    """CaptioningRNN in torch.nn: features (N, F), captions (N, L) -> the teacher-forced loss."""

    def __init__(self, custom: CaptioningRNN) -> None:
        super().__init__()
        c = self.config = custom.config
        self.register_buffer("feature_mean", custom.feature_mean.detach().clone())
        self.register_buffer("feature_std", custom.feature_std.detach().clone())
        self.proj = _linear_from(custom.proj_w.detach(), custom.proj_b.detach())
        self.embed = nn.Embedding(c.vocab_size, c.wordvec_dim)
        cell = nn.LSTM if c.cell == "lstm" else nn.RNN
        self.rnn = cell(c.wordvec_dim, c.hidden_dim, batch_first=True)
        self.head = _linear_from(custom.head.weight.detach(), custom.head.bias.detach())
        self.dropout = nn.Dropout(c.dropout)
        Wx, Wh, b = custom.rnn.Wx.detach(), custom.rnn.Wh.detach(), custom.rnn.b.detach()
        if c.cell == "lstm":  # gate blocks i, f, o, g -> torch's i, f, g, o
            H = c.hidden_dim
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
            Wx, Wh, b = Wx[:, order], Wh[:, order], b[order]
        with torch.no_grad():
            self.embed.weight.copy_(custom.embed.weight)
            self.rnn.weight_ih_l0.copy_(Wx.t())  # (G*H, D)
            self.rnn.weight_hh_l0.copy_(Wh.t())  # (G*H, H)
            self.rnn.bias_ih_l0.copy_(b)
            self.rnn.bias_hh_l0.zero_()

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        words_in, words_out = captions[:, :-1], captions[:, 1:]  # (N, T) each
        h0 = self.proj((features - self.feature_mean) / self.feature_std).unsqueeze(0)  # (1, N, H)
        state = (h0, torch.zeros_like(h0)) if self.config.cell == "lstm" else h0
        x = self.dropout(self.embed(words_in))  # (N, T, D)
        h, _ = self.rnn(x, state)  # (N, T, H)
        scores = self.head(self.dropout(h))  # (N, T, V)
        return _loss(scores, words_out, self.config.null_id, self.config.label_smoothing)


def _attention_from(custom, twin: nn.MultiheadAttention) -> None:
    """Copy a customops MultiHeadAttention's four projections into nn.MultiheadAttention's packed ones."""
    with torch.no_grad():
        twin.in_proj_weight.copy_(torch.cat([custom.query.weight.t(), custom.key.weight.t(), custom.value.weight.t()]))
        twin.in_proj_bias.copy_(torch.cat([custom.query.bias, custom.key.bias, custom.value.bias]))
        twin.out_proj.weight.copy_(custom.out.weight.t())
        twin.out_proj.bias.copy_(custom.out.bias)


class TransformerTwin(nn.Module):
    """TransformerCaptioner around nn.TransformerDecoder: features (N, P, F), captions (N, L) -> the loss."""

    def __init__(self, custom: TransformerCaptioner) -> None:
        super().__init__()
        c = self.config = custom.config
        self.register_buffer("feature_mean", custom.feature_mean.detach().clone())
        self.register_buffer("feature_std", custom.feature_std.detach().clone())
        self.register_buffer("pe", custom.position.pe.detach().clone(), persistent=False)  # (max_length, D)
        self.memory_proj = _linear_from(custom.memory_proj.weight.detach(), custom.memory_proj.bias.detach())
        self.memory_pos = nn.Parameter(custom.memory_pos.detach().clone())
        self.embed = nn.Embedding(c.vocab_size, c.model_dim)
        layer = nn.TransformerDecoderLayer(
            c.model_dim, c.num_heads, c.ffn_dim, c.dropout, activation="relu", batch_first=True, norm_first=False
        )
        self.decoder = nn.TransformerDecoder(layer, c.num_layers)
        self.head = _linear_from(custom.head.weight.detach(), custom.head.bias.detach())
        self.drop = nn.Dropout(c.dropout)
        with torch.no_grad():
            self.embed.weight.copy_(custom.embed.weight)
            for ours, theirs in zip(custom.layers, self.decoder.layers, strict=True):
                _attention_from(ours.self_attn, theirs.self_attn)
                _attention_from(ours.cross_attn, theirs.multihead_attn)
                for a, b in ((ours.ffn_in, theirs.linear1), (ours.ffn_out, theirs.linear2)):
                    b.weight.copy_(a.weight.t())
                    b.bias.copy_(a.bias)
                for a, b in ((ours.norm1, theirs.norm1), (ours.norm2, theirs.norm2), (ours.norm3, theirs.norm3)):
                    b.weight.copy_(a.weight)
                    b.bias.copy_(a.bias)
                    b.eps = a.eps

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        words_in, words_out = captions[:, :-1], captions[:, 1:]  # (N, T) each
        T = words_in.shape[1]
        x = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        memory = self.drop(self.memory_proj(x) + self.memory_pos)  # (N, P, D)
        tgt = self.drop(self.embed(words_in) + self.pe[:T])  # (N, T, D)
        causal = torch.ones(T, T, dtype=torch.bool, device=captions.device).triu(1)  # True = may not attend
        h = self.decoder(tgt, memory, tgt_mask=causal, tgt_is_causal=True)  # (N, T, D)
        return _loss(self.head(h), words_out, self.config.null_id, self.config.label_smoothing)


def torch_twin(custom: CaptioningRNN | TransformerCaptioner) -> nn.Module:
    """The torch.nn twin of a customops captioner, starting from its weights."""
    if isinstance(custom, TransformerCaptioner):
        return TransformerTwin(custom)
    if isinstance(custom, CaptioningRNN):
        return RecurrentTwin(custom)
    raise TypeError(f"torch_twin: expected a CaptioningRNN or TransformerCaptioner, got {type(custom).__name__}")
