"""Image captioning: CaptioningRNN (a plain nn.Module built from customops layers)
and the thin LightningModule that trains it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from customops import LSTM, RNN, TemporalAffine, WordEmbedding, affine, temporal_softmax_loss

CELLS = {"rnn": RNN, "lstm": LSTM}


@dataclass
class CaptioningConfig:
    vocab_size: int
    feature_dim: int = 1280  # pooled MobileNetV2 features
    wordvec_dim: int = 256  # word embedding size
    hidden_dim: int = 512  # recurrent state size
    cell: str = "rnn"  # "rnn" (vanilla tanh) or "lstm"
    dropout: float = 0.0  # on word vectors and on hidden states before the vocabulary layer
    null_id: int = 0  # padding; never a target
    start_id: int = 1
    end_id: int = 2


class CaptioningRNN(nn.Module):
    """features (N, F) -> h0 (N, H) by an affine layer; caption words -> embeddings;
    RNN/LSTM over the words; temporal affine to vocabulary scores (N, T, V)."""

    def __init__(self, config: CaptioningConfig):
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(f"CaptioningRNN: cell must be one of {sorted(CELLS)}, got {config.cell!r}")
        if config.vocab_size <= max(config.null_id, config.start_id, config.end_id):
            raise ValueError(f"CaptioningRNN: vocab_size {config.vocab_size} is too small for the special ids")
        self.config = config
        # Standardisation of the image features (set from the training split by set_feature_stats).
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        # h0 = standardised features @ proj_w + proj_b (the homework's W_proj, b_proj).
        self.proj_w = nn.Parameter(torch.randn(config.feature_dim, config.hidden_dim) / math.sqrt(config.feature_dim))
        self.proj_b = nn.Parameter(torch.zeros(config.hidden_dim))
        self.embed = WordEmbedding(config.vocab_size, config.wordvec_dim)
        self.rnn = CELLS[config.cell](config.wordvec_dim, config.hidden_dim)
        self.head = TemporalAffine(config.hidden_dim, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of `features` (M, F)."""
        self.feature_mean.copy_(features.mean(0))
        # One sample has no spread (its std is NaN): leave such features unscaled.
        self.feature_std.copy_(features.std(0).nan_to_num(1.0).clamp_min(1e-6))

    def initial_hidden(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, F) -> h0 (N, H)."""
        if features.dim() != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"CaptioningRNN: features must be (N, {self.config.feature_dim}), got {tuple(features.shape)}"
            )
        return affine((features - self.feature_mean) / self.feature_std, self.proj_w, self.proj_b)

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced loss: features (N, F), captions (N, L) ``<START> w.. <END> <NULL>..`` -> scalar."""
        if captions.dim() != 2 or captions.shape[0] != features.shape[0] or captions.shape[1] < 2:
            raise ValueError(
                f"CaptioningRNN: captions must be (N={features.shape[0]}, L>=2), got {tuple(captions.shape)}"
            )
        if not torch.compiler.is_compiling():
            # Drop the all-padding tail of the batch: those steps carry no loss, so this only
            # saves time. It reads a value, so compiled graphs (fixed shapes) keep the tail.
            length = max(int((captions != self.config.null_id).sum(1).max()), 2)
            captions = captions[:, :length]  # (N, L)
        words_in, words_out = captions[:, :-1], captions[:, 1:]  # (N, T) each
        mask = words_out != self.config.null_id
        h0 = self.initial_hidden(features)
        x = self.dropout(self.embed(words_in))  # (N, T, D)
        h = self.rnn(x, h0)  # (N, T, H)
        scores = self.head(self.dropout(h))  # (N, T, V)
        return temporal_softmax_loss(scores, words_out, mask)

    def _step_scores(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """words (N,) -> log-probabilities (N, V) of the next word, and the new state."""
        x = self.embed(words.unsqueeze(1))  # (N, 1, D)
        h, state = self.rnn.step(x[:, 0], state)  # (N, H)
        scores = self.head(h.unsqueeze(1))[:, 0]  # (N, 1, V) -> (N, V)
        # Padding and <START> are never targets; keep them out of generated captions.
        scores[:, self.config.null_id] = float("-inf")
        scores[:, self.config.start_id] = float("-inf")
        return torch.log_softmax(scores, dim=1), state

    @torch.no_grad()
    def sample(
        self, features: torch.Tensor, max_length: int = 30, beam_size: int = 1, length_penalty: float = 0.0
    ) -> torch.Tensor:
        """Generate captions: features (N, F) -> ids (N, max_length), <NULL>-padded after <END>.

        beam_size 1 is greedy decoding; larger beams rank finished captions by
        log-probability / length**length_penalty.
        """
        if max_length < 1 or beam_size < 1:
            raise ValueError(f"CaptioningRNN.sample: max_length and beam_size must be >= 1, got {max_length}, {beam_size}")
        if beam_size > 1:
            return self._beam_search(features, max_length, beam_size, length_penalty)
        cfg = self.config
        N = features.shape[0]
        state = self.rnn.init_state(self.initial_hidden(features))
        words = torch.full((N,), cfg.start_id, dtype=torch.long, device=features.device)
        out = torch.full((N, max_length), cfg.null_id, dtype=torch.long, device=features.device)
        done = torch.zeros(N, dtype=torch.bool, device=features.device)
        for t in range(max_length):
            log_p, state = self._step_scores(words, state)
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
        h0 = self.initial_hidden(features).repeat_interleave(B, dim=0)  # (N*B, H)
        state = self.rnn.init_state(h0)
        words = torch.full((N * B,), cfg.start_id, dtype=torch.long, device=dev)
        # Only beam 0 is live at the start, so the first expansion is not B copies of itself.
        score = torch.full((N, B), float("-inf"), device=dev, dtype=h0.dtype)
        score[:, 0] = 0.0
        tokens = torch.empty((N, B, 0), dtype=torch.long, device=dev)
        finished = torch.zeros((N, B), dtype=torch.bool, device=dev)
        lengths = torch.zeros((N, B), device=dev, dtype=h0.dtype)
        for _ in range(max_length):
            log_p, state = self._step_scores(words, state)  # (N*B, V)
            V = log_p.shape[1]
            # A finished caption continues only with padding, at no cost.
            log_p = log_p.masked_fill(finished.view(-1, 1), float("-inf"))
            log_p[:, cfg.null_id] = torch.where(finished.view(-1), 0.0, float("-inf")).to(log_p.dtype)
            cand = (score.unsqueeze(2) + log_p.view(N, B, V)).view(N, B * V)  # (N, B*V)
            score, idx = cand.topk(B, dim=1)  # (N, B)
            beam, word = idx // V, idx % V
            state = tuple(
                s.view(N, B, -1).gather(1, beam.unsqueeze(2).expand(-1, -1, s.shape[1])).view(N * B, -1)
                for s in state
            )
            was_finished = finished.gather(1, beam)
            tokens = torch.cat([tokens.gather(1, beam.unsqueeze(2).expand(-1, -1, tokens.shape[2])), word.unsqueeze(2)], 2)
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


class CaptioningModule(pl.LightningModule):
    """Trains CaptioningRNN on (features, captions) batches; logs train and validation loss.

    ``model`` holds the CaptioningConfig fields as a plain dict (``dataclasses.asdict(config)``),
    so the sizes are declared once, in CaptioningConfig, and ``load_from_checkpoint(path)``
    rebuilds the network. The losses are torchmetrics means, exact across distributed ranks.
    """

    def __init__(
        self,
        model: dict | None = None,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_gamma: float = 1.0,  # learning rate multiplied by this after every epoch
        **sizes,
    ):
        """model: the CaptioningConfig fields as a dict; or pass them as keywords (vocab_size=..., cell=...)."""
        super().__init__()
        if model is None:
            model = dataclasses.asdict(CaptioningConfig(**sizes))
        elif sizes:
            raise TypeError(f"CaptioningModule: pass the sizes in `model` or as keywords, not both ({sorted(sizes)})")
        self.save_hyperparameters({"model": dict(model), "lr": lr, "weight_decay": weight_decay, "lr_gamma": lr_gamma})
        self.model = CaptioningRNN(CaptioningConfig(**model))
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
