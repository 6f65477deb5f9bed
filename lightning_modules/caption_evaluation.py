"""Decoding captions and scoring them: greedy or beam search, and corpus BLEU against the references."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torchmetrics.text import BLEUScore

from lightning_modules.caption_decoder import CaptionDecoder
from lightning_modules.data.captions import CaptionSplit, tokenize
from lightning_modules.data.vocabulary import Vocabulary
from lightning_modules.runs.record import Stopwatch


def generate(
    model: CaptionDecoder,
    features: torch.Tensor,
    vocab: Vocabulary,
    max_length: int,
    beam_size: int,
    length_penalty: float,
    batch_size: int = 256,
) -> list[str]:
    """Captions for features (M, F), decoded to strings."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in features.split(batch_size):
        ids = model.sample(chunk.to(device), max_length, beam_size, length_penalty)  # (B, max_length)
        out.extend(vocab.decode(row) for row in ids.tolist())
    return out


def corpus_bleu(hypotheses: list[str], split: CaptionSplit) -> dict[str, float]:
    """Corpus BLEU-1..4 against all reference captions, both sides tokenized alike."""
    refs = [[" ".join(tokenize(c)) for c in caps] for caps in split.captions]
    # Computed by one process over the whole split: no syncing with other ranks.
    return {f"bleu{n}": float(BLEUScore(n_gram=n, sync_on_compute=False)(hypotheses, refs)) for n in range(1, 5)}


def parse_decoding(name: str) -> tuple[int, float]:
    """ "greedy" -> (1, 0.0); "beam5" -> (5, 0.0); "beam5-lp0.7" -> (5, 0.7)."""
    if name == "greedy":
        return 1, 0.0
    try:
        beam, _, lp = name.removeprefix("beam").partition("-lp")
        if not name.startswith("beam") or int(beam) < 1 or not math.isfinite(float(lp or 0.0)):
            raise ValueError
        return int(beam), float(lp or 0.0)
    except ValueError:
        raise ValueError(
            f"--decodings: cannot read {name!r}; use greedy, beamK (K >= 1) or beamK-lpA (A a finite number)"
        ) from None


def evaluate(
    model: CaptionDecoder,
    features: torch.Tensor,
    split: CaptionSplit,
    vocab: Vocabulary,
    decodings: list[str],
    max_length: int,
) -> dict[str, dict]:
    """BLEU of each decoding on one split, with its mean caption length, time and the captions."""
    result = {}
    for name in decodings:
        beam, penalty = parse_decoding(name)
        clock = Stopwatch()
        hyps = generate(model, features, vocab, max_length, beam, penalty)
        result[name] = {
            **corpus_bleu(hyps, split),
            "mean_words": sum(len(h.split()) for h in hyps) / len(hyps),
            "seconds": clock(),
        }
        result[name]["captions"] = hyps
    return result


def choose_decoding(model: CaptionDecoder, dm, decodings: list[str], max_length: int) -> tuple[dict, str]:
    """Every decoding scored on the data module's dev split; the best BLEU-4 is then run once on test.
    Returns the evaluations per split ({"dev": ..., "test": ...}) and the chosen decoding."""
    evals = {}
    if "dev" in dm.splits:
        evals["dev"] = evaluate(model, dm.features["dev"], dm.splits["dev"], dm.vocab, decodings, max_length)
    chosen = max(evals["dev"], key=lambda k: evals["dev"][k]["bleu4"]) if "dev" in evals else "greedy"
    if "test" in dm.splits:
        evals["test"] = evaluate(model, dm.features["test"], dm.splits["test"], dm.vocab, [chosen], max_length)
    return evals, chosen


class DevBLEU(Callback):
    """Logs ``val_bleu4`` after each validation epoch: the corpus BLEU-4 of greedy captions of the dev
    split, so that the checkpoint can be chosen by the captions it writes rather than by its loss.

    Rank zero decodes the whole split (one process, like the final scoring) and sends the value to
    the other ranks, so every rank's checkpoint callback sees the same number.
    """

    def __init__(self, features: torch.Tensor, split: CaptionSplit, vocab: Vocabulary, max_length: int) -> None:
        self.features, self.split, self.vocab, self.max_length = features, split, vocab, max_length

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = torch.zeros((), dtype=torch.float64)
        if trainer.is_global_zero:
            model = pl_module.model
            was_training = model.training
            hypotheses = generate(model, self.features, self.vocab, self.max_length, 1, 0.0)
            model.train(was_training)
            value = torch.tensor(corpus_bleu(hypotheses, self.split)["bleu4"], dtype=torch.float64)
        value = trainer.strategy.broadcast(value, src=0)
        pl_module.log("val_bleu4", value.float(), on_epoch=True, prog_bar=True, sync_dist=False)
