"""Image captioning: CaptioningRNN (pooled features, RNN/LSTM) and TransformerCaptioner
(a grid of features, attention), plain nn.Modules built from customops layers sharing one
greedy/beam-search decoder, and the thin LightningModule that trains either.

The captioners are registered in ``models`` as ``rnn_captioner``, ``lstm_captioner`` and
``transformer_captioner``; their special token ids come from the ``Vocabulary``
(``vocab.token_ids()``), whose ids are also the configs' defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

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
from lightning_modules.data.vocabulary import Vocabulary
from lightning_modules.models import get_model, register_model

CELLS = {"rnn": RNN, "lstm": LSTM}


@dataclass
class CaptioningConfig:
    vocab_size: int
    feature_dim: int = 1280  # pooled MobileNetV2 features
    wordvec_dim: int = 256  # word embedding size
    hidden_dim: int = 512  # recurrent state size
    cell: str = "rnn"  # "rnn" (vanilla tanh) or "lstm"
    dropout: float = 0.0  # on word vectors and on hidden states before the vocabulary layer
    null_id: int = Vocabulary.null_id  # padding; never a target
    start_id: int = Vocabulary.start_id
    end_id: int = Vocabulary.end_id


class CaptionDecoder(nn.Module):
    """Greedy and beam-search decoding for a captioner that defines ``config`` (with null_id,
    start_id, end_id), ``init_state(features)`` and ``step(words, state)``.

    The decoding state is a tuple of tensors whose first dimension is the caption (N, ...).
    """

    name: str  # the key it is registered under in ``models``

    @property
    def spec(self) -> dict:
        """``{"name": key, **config}``: the plain dict ``models.build_model`` rebuilds it from."""
        sizes = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "cell"}
        return {"name": self.name, **sizes}

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise inputs with the per-channel mean and std of `features` ((M, F) or (M, P, F));
        the captioner holds them in its ``feature_mean`` and ``feature_std`` buffers."""
        flat = features.reshape(-1, features.shape[-1]).float()  # every image (and position) a row
        self.feature_mean.copy_(flat.mean(0))
        # One sample has no spread (its std is NaN): leave such features unscaled.
        self.feature_std.copy_(flat.std(0).nan_to_num(1.0).clamp_min(1e-6))

    def _teacher_forcing(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked captions (N, L) ``<START> w.. <END> <NULL>..`` -> the words in and the targets (N, T) each."""
        if captions.dim() != 2 or captions.shape[0] != features.shape[0] or captions.shape[1] < 2:
            raise ValueError(
                f"{type(self).__name__}: captions must be (N={features.shape[0]}, L>=2), got {tuple(captions.shape)}"
            )
        if not torch.compiler.is_compiling():
            # Drop the all-padding tail of the batch: those steps carry no loss, so this only
            # saves time. It reads a value, so compiled graphs (fixed shapes) keep the tail.
            length = max(int((captions != self.config.null_id).sum(1).max()), 2)
            captions = captions[:, :length]  # (N, L)
        return captions[:, :-1], captions[:, 1:]

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """words (N,) the latest ids -> vocabulary scores (N, V) of the next word, and the new state."""
        raise NotImplementedError

    def _log_probs(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]):
        scores, state = self.step(words, state)
        # Padding and <START> are never targets; keep them out of generated captions.
        scores[:, self.config.null_id] = float("-inf")
        scores[:, self.config.start_id] = float("-inf")
        return torch.log_softmax(scores, dim=1), state

    @torch.no_grad()
    def sample(
        self, features: torch.Tensor, max_length: int = 30, beam_size: int = 1, length_penalty: float = 0.0
    ) -> torch.Tensor:
        """Generate captions: features -> ids (N, max_length), <NULL>-padded after <END>.

        beam_size 1 is greedy decoding; larger beams rank finished captions by
        log-probability / length**length_penalty.
        """
        name = type(self).__name__
        if max_length < 1 or beam_size < 1:
            raise ValueError(f"{name}.sample: max_length and beam_size must be >= 1, got {max_length}, {beam_size}")
        if beam_size > 1:
            return self._beam_search(features, max_length, beam_size, length_penalty)
        cfg = self.config
        N = features.shape[0]
        state = self.init_state(features)
        words = torch.full((N,), cfg.start_id, dtype=torch.long, device=features.device)
        out = torch.full((N, max_length), cfg.null_id, dtype=torch.long, device=features.device)
        done = torch.zeros(N, dtype=torch.bool, device=features.device)
        for t in range(max_length):
            log_p, state = self._log_probs(words, state)
            words = log_p.argmax(1).masked_fill(done, cfg.null_id)  # (N,)
            out[:, t] = words
            done |= words == cfg.end_id
            if bool(done.all()):
                break
        return out

    def _beam_search(self, features, max_length, B, length_penalty):
        cfg = self.config
        N = features.shape[0]
        dev = features.device
        state = tuple(s.repeat_interleave(B, dim=0) for s in self.init_state(features))  # each (N*B, ...)
        dtype = state[0].dtype
        words = torch.full((N * B,), cfg.start_id, dtype=torch.long, device=dev)
        # Only beam 0 is live at the start, so the first expansion is not B copies of itself.
        score = torch.full((N, B), float("-inf"), device=dev, dtype=dtype)
        score[:, 0] = 0.0
        tokens = torch.empty((N, B, 0), dtype=torch.long, device=dev)
        finished = torch.zeros((N, B), dtype=torch.bool, device=dev)
        lengths = torch.zeros((N, B), device=dev, dtype=dtype)
        for _ in range(max_length):
            log_p, state = self._log_probs(words, state)  # (N*B, V)
            V = log_p.shape[1]
            # A finished caption continues only with padding, at no cost.
            log_p = log_p.masked_fill(finished.view(-1, 1), float("-inf"))
            log_p[:, cfg.null_id] = torch.where(finished.view(-1), 0.0, float("-inf")).to(log_p.dtype)
            cand = (score.unsqueeze(2) + log_p.view(N, B, V)).view(N, B * V)  # (N, B*V)
            score, idx = cand.topk(B, dim=1)  # (N, B)
            beam, word = idx // V, idx % V
            state = tuple(_reorder(s, beam) for s in state)
            was_finished = finished.gather(1, beam)
            tokens = torch.cat(
                [tokens.gather(1, beam.unsqueeze(2).expand(-1, -1, tokens.shape[2])), word.unsqueeze(2)], 2
            )
            lengths = lengths.gather(1, beam) + (~was_finished).to(lengths.dtype)
            finished = was_finished | (word == cfg.end_id)
            words = word.view(-1)
            if bool(finished.all()):
                break
        ranked = score / lengths.clamp_min(1) ** length_penalty  # (N, B)
        best = ranked.argmax(1)  # (N,)
        chosen = tokens[torch.arange(N, device=dev), best]  # (N, steps)
        out = torch.full((N, max_length), cfg.null_id, dtype=torch.long, device=dev)
        out[:, : chosen.shape[1]] = chosen
        return out


def _reorder(state: torch.Tensor, beam: torch.Tensor) -> torch.Tensor:
    """state (N*B, ...) -> the rows of the beams each caption keeps, beam (N, B) indices in 0..B-1."""
    N, B = beam.shape
    flat = state.reshape(N, B, -1)  # (N, B, rest)
    kept = flat.gather(1, beam.unsqueeze(2).expand(-1, -1, flat.shape[2]))
    return kept.view(state.shape)


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
        return temporal_softmax_loss(scores, words_out, mask)

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

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced loss: features (N, P, F), captions (N, L) ``<START> w.. <END> <NULL>..`` -> scalar."""
        words_in, words_out = self._teacher_forcing(features, captions)  # (N, T) each
        scores = self.decode(words_in, self.encode(features))
        return temporal_softmax_loss(scores, words_out, words_out != self.config.null_id)

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


class CaptioningModule(pl.LightningModule):
    """Trains a captioner (CaptioningRNN or TransformerCaptioner) on (features, captions) batches;
    logs train and validation loss.

    Args:
        cell: "rnn", "lstm" or "transformer": the captioner ``models`` registers as ``<cell>_captioner``.
        lr, weight_decay: Adam's; lr_gamma: the learning rate is multiplied by this after every epoch.
        **config: the captioner's sizes, the fields of CaptioningConfig (but ``cell``) or of
            TransformerCaptioningConfig; each default is declared once, in the config.

    The hyper-parameters are plain values (``cell``, every config field, the optimizer's), so
    ``load_from_checkpoint(path)`` rebuilds the network. The losses are torchmetrics means, exact
    across distributed ranks.
    """

    def __init__(self, cell: str = "rnn", lr: float = 2e-3, weight_decay: float = 0.0, lr_gamma: float = 1.0, **config):
        super().__init__()
        self.model = get_model(f"{cell}_captioner", **config)
        sizes = {k: v for k, v in self.model.spec.items() if k != "name"}
        self.save_hyperparameters({"cell": cell, **sizes, "lr": lr, "weight_decay": weight_decay, "lr_gamma": lr_gamma})
        self.metrics = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("train", "val")})
        for metric in self.metrics.values():
            metric.persistent(True)

    def _step(self, batch, stage: str) -> torch.Tensor:
        features, captions = batch
        loss = self.model(features, captions)
        self.metrics[f"{stage}_loss"](loss.detach(), weight=features.shape[0])
        self.log(f"{stage}_loss", self.metrics[f"{stage}_loss"], on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.hparams.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": sched}
