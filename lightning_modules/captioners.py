"""The captioners, plain nn.Modules built from customops layers: CaptioningRNN (pooled image features,
vanilla RNN or LSTM) and TransformerCaptioner (a grid of features, attention), both decoding with
``caption_decoder.CaptionDecoder``.

They are registered in ``models`` as ``rnn_captioner``, ``lstm_captioner`` and
``transformer_captioner``; their special token ids come from the ``Vocabulary``
(``vocab.token_ids()``), whose ids are also the configs' defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from customops import (
    LSTM,
    RNN,
    Dropout,
    LayerNorm,
    MultiHeadAttention,
    PositionalEncoding,
    TemporalAffine,
    WordEmbedding,
    affine,
    relu,
    temporal_softmax_loss,
)
from lightning_modules.caption_decoder import CaptionDecoder
from lightning_modules.data.vocabulary import Vocabulary
from lightning_modules.models import register_model

CELLS = {"rnn": RNN, "lstm": LSTM}


@dataclass
class CaptioningConfig:
    vocab_size: int
    feature_dim: int = 1280  # pooled MobileNetV2 features
    wordvec_dim: int = 256  # word embedding size
    hidden_dim: int = 512  # recurrent state size
    cell: str = "rnn"  # "rnn" (vanilla tanh) or "lstm"
    dropout: float = 0.0  # on word vectors and on hidden states before the vocabulary layer
    label_smoothing: float = 0.0  # of the training loss's targets (temporal_softmax_loss)
    null_id: int = Vocabulary.null_id  # padding; never a target
    start_id: int = Vocabulary.start_id
    end_id: int = Vocabulary.end_id


class CaptioningRNN(CaptionDecoder):
    """features (N, F) -> h0 (N, H) by an affine layer; caption words -> embeddings;
    RNN/LSTM over the words; temporal affine to vocabulary scores (N, T, V)."""

    def __init__(self, config: CaptioningConfig):
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(f"CaptioningRNN: cell must be one of {sorted(CELLS)}, got {config.cell!r}")
        if config.vocab_size <= max(config.null_id, config.start_id, config.end_id):
            raise ValueError(f"CaptioningRNN: vocab_size {config.vocab_size} is too small for the special ids")
        self.config = config
        self.name = f"{config.cell}_captioner"
        # Standardisation of the image features (set from the training split by set_feature_stats).
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        # h0 = standardised features @ proj_w + proj_b (the homework's W_proj, b_proj).
        self.proj_w = nn.Parameter(torch.randn(config.feature_dim, config.hidden_dim) / math.sqrt(config.feature_dim))
        self.proj_b = nn.Parameter(torch.zeros(config.hidden_dim))
        self.embed = WordEmbedding(config.vocab_size, config.wordvec_dim)
        self.rnn = CELLS[config.cell](config.wordvec_dim, config.hidden_dim)
        self.head = TemporalAffine(config.hidden_dim, config.vocab_size)
        self.dropout = Dropout(config.dropout)

    def initial_hidden(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, F) -> h0 (N, H)."""
        if features.dim() != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"CaptioningRNN: features must be (N, {self.config.feature_dim}), got {tuple(features.shape)}"
            )
        return affine((features - self.feature_mean) / self.feature_std, self.proj_w, self.proj_b)

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced loss: features (N, F), captions (N, L) ``<START> w.. <END> <NULL>..`` -> scalar."""
        words_in, words_out = self._teacher_forcing(features, captions)  # (N, T) each
        mask = words_out != self.config.null_id
        h0 = self.initial_hidden(features)
        x = self.dropout(self.embed(words_in))  # (N, T, D)
        h = self.rnn(x, h0)  # (N, T, H)
        scores = self.head(self.dropout(h))  # (N, T, V)
        return temporal_softmax_loss(scores, words_out, mask, self.config.label_smoothing)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """features (N, F) -> the recurrent state: (h0,), or (h0, c0) for the LSTM."""
        return self.rnn.init_state(self.initial_hidden(features))

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """words (N,) -> vocabulary scores (N, V) of the next word, and the new state."""
        x = self.embed(words.unsqueeze(1))  # (N, 1, D)
        h, state = self.rnn.step(x[:, 0], state)  # (N, H)
        return self.head(h.unsqueeze(1))[:, 0], state  # (N, 1, V) -> (N, V)


@dataclass
class TransformerCaptioningConfig:
    vocab_size: int
    feature_dim: int = 1280  # channels of MobileNetV2's last feature map
    positions: int = 49  # image positions (a 7x7 grid)
    model_dim: int = 256  # width of the decoder
    num_heads: int = 4  # attention heads; model_dim / num_heads features each
    num_layers: int = 2  # decoder layers
    ffn_dim: int = 1024  # hidden width of each feed-forward block
    dropout: float = 0.1  # residual, embedding and attention-output dropout
    max_length: int = 40  # longest caption (positional codes)
    label_smoothing: float = 0.0  # of the training loss's targets (temporal_softmax_loss)
    null_id: int = Vocabulary.null_id  # padding; never a target
    start_id: int = Vocabulary.start_id
    end_id: int = Vocabulary.end_id


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the image, feed-forward; each a residual branch
    followed by layer norm (the original Transformer's post-norm order)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm2 = LayerNorm(dim)
        self.ffn_in = TemporalAffine(dim, ffn_dim)
        self.ffn_out = TemporalAffine(ffn_dim, dim)
        self.drop = Dropout(dropout)
        self.norm3 = LayerNorm(dim)
        for layer in (self.ffn_in, self.ffn_out):  # Xavier-uniform, as torch's Transformer layers
            nn.init.xavier_uniform_(layer.weight)

    @torch.no_grad()
    def cross_attention(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """Where each word looks in the image: the cross-attention's weights, averaged over the heads,
        x (N, T, D), memory (N, P, D) -> (N, T, P), each row summing to 1 (for pictures, not training)."""
        x = self.norm1(x + self.self_attn(x, x, x, causal))
        attn = self.cross_attn
        N, T, D = x.shape
        P, H = memory.shape[1], attn.num_heads
        q = affine(x.reshape(N * T, D), attn.query.weight, attn.query.bias).view(N, T, H, D // H)
        k = affine(memory.reshape(N * P, D), attn.key.weight, attn.key.bias).view(N, P, H, D // H)
        scores = torch.einsum("nthe,nphe->nhtp", q, k) / math.sqrt(D // H)  # (N, H, T, P)
        return scores.softmax(-1).mean(1)  # (N, T, P)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """x (N, T, D) words so far, memory (N, P, D) image positions, causal (T, T) bool -> (N, T, D)."""
        x = self.norm1(x + self.self_attn(x, x, x, causal))
        x = self.norm2(x + self.cross_attn(x, memory, memory))
        return self.norm3(x + self.drop(self.ffn_out(relu(self.ffn_in(x)))))


class TransformerCaptioner(CaptionDecoder):
    """features (N, P, F) image grid -> memory (N, P, D) by an affine layer (+ a learned position
    code); caption words -> embeddings + sinusoidal positions; decoder layers; temporal affine to
    vocabulary scores; masked temporal softmax loss."""

    def __init__(self, config: TransformerCaptioningConfig):
        super().__init__()
        c = config
        if c.vocab_size <= max(c.null_id, c.start_id, c.end_id):
            raise ValueError(f"TransformerCaptioner: vocab_size {c.vocab_size} is too small for the special ids")
        if c.model_dim % c.num_heads:
            raise ValueError(
                f"TransformerCaptioner: model_dim {c.model_dim} is not divisible by num_heads {c.num_heads}"
            )
        for name in ("feature_dim", "positions", "model_dim", "num_heads", "num_layers", "ffn_dim", "max_length"):
            if getattr(c, name) < 1:
                raise ValueError(f"TransformerCaptioner: {name} must be >= 1, got {getattr(c, name)}")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"TransformerCaptioner: dropout must be in [0, 1), got {c.dropout}")
        self.config = c
        self.name = "transformer_captioner"
        # Standardisation of the image features (set from the training split by set_feature_stats).
        self.register_buffer("feature_mean", torch.zeros(c.feature_dim))
        self.register_buffer("feature_std", torch.ones(c.feature_dim))
        self.memory_proj = TemporalAffine(c.feature_dim, c.model_dim)
        nn.init.xavier_uniform_(self.memory_proj.weight)
        self.memory_pos = nn.Parameter(torch.zeros(c.positions, c.model_dim))  # where on the grid
        self.embed = WordEmbedding(c.vocab_size, c.model_dim)
        self.position = PositionalEncoding(c.model_dim, c.max_length)
        self.drop = Dropout(c.dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(c.model_dim, c.num_heads, c.ffn_dim, c.dropout) for _ in range(c.num_layers)
        )
        self.head = TemporalAffine(c.model_dim, c.vocab_size)
        nn.init.xavier_uniform_(self.head.weight)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, P, F) (any float dtype, e.g. a float16 cache) -> memory (N, P, D)."""
        c = self.config
        if features.dim() != 3 or tuple(features.shape[1:]) != (c.positions, c.feature_dim):
            raise ValueError(
                f"TransformerCaptioner: features must be (N, {c.positions}, {c.feature_dim}), "
                f"got {tuple(features.shape)}"
            )
        x = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.drop(self.memory_proj(x) + self.memory_pos)

    def decode(self, words: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """words (N, T) ids, memory (N, P, D) -> vocabulary scores (N, T, V); position t sees words <= t."""
        T = words.shape[1]
        if T > self.config.max_length:
            raise ValueError(f"TransformerCaptioner: {T} words exceed max_length {self.config.max_length}")
        causal = torch.ones(T, T, dtype=torch.bool, device=words.device).tril()  # (T, T), True = may attend
        x = self.drop(self.position(self.embed(words)))  # (N, T, D)
        for layer in self.layers:
            x = layer(x, memory, causal)
        return self.head(x)  # (N, T, V)

    @torch.no_grad()
    def attention_maps(self, features: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """The last decoder layer's cross-attention while it predicts each word: features (N, P, F) and
        the caption so far, words (N, T) starting with <START> -> (N, T, P), row t the attention that
        chose word t + 1."""
        memory = self.encode(features)
        T = words.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=words.device).tril()
        x = self.drop(self.position(self.embed(words)))  # (N, T, D)
        for layer in self.layers[:-1]:
            x = layer(x, memory, causal)
        return self.layers[-1].cross_attention(x, memory, causal)

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced loss: features (N, P, F), captions (N, L) ``<START> w.. <END> <NULL>..`` -> scalar."""
        words_in, words_out = self._teacher_forcing(features, captions)  # (N, T) each
        scores = self.decode(words_in, self.encode(features))
        return temporal_softmax_loss(scores, words_out, words_out != self.config.null_id, self.config.label_smoothing)

    # ---- decoding (CaptionDecoder) -------------------------------------------------------

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Decoding state of each caption: its image memory, flattened (N, P*D), and its words so far (N, 0)."""
        memory = self.encode(features)
        empty = torch.empty(features.shape[0], 0, dtype=torch.long, device=features.device)
        return memory.flatten(1), empty

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """words (N,) the latest ids -> scores (N, V) of the next word, and the new state.

        The decoder reruns over the whole prefix (captions are short); causal attention makes
        its last position exactly the next-word prediction.
        """
        memory_flat, prefix = state
        prefix = torch.cat([prefix, words.unsqueeze(1)], dim=1)  # (N, t)
        memory = memory_flat.view(memory_flat.shape[0], self.config.positions, self.config.model_dim)
        scores = self.decode(prefix, memory)[:, -1]  # (N, V)
        return scores, (memory_flat, prefix)


@register_model("rnn_captioner")
def rnn_captioner(**config) -> CaptioningRNN:
    """The vanilla-RNN captioner; `config`: CaptioningConfig's fields but ``cell``."""
    return CaptioningRNN(CaptioningConfig(cell="rnn", **config))


@register_model("lstm_captioner")
def lstm_captioner(**config) -> CaptioningRNN:
    """The LSTM captioner; `config`: CaptioningConfig's fields but ``cell``."""
    return CaptioningRNN(CaptioningConfig(cell="lstm", **config))


@register_model("transformer_captioner")
def transformer_captioner(**config) -> TransformerCaptioner:
    """The attention captioner; `config`: TransformerCaptioningConfig's fields."""
    return TransformerCaptioner(TransformerCaptioningConfig(**config))
