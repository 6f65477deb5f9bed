"""Greedy and beam-search decoding, shared by every captioner (``captioners``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


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
