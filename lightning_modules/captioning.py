"""The thin LightningModule that trains a captioner (``captioners``) on (features, captions) batches."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_modules.captioners import (
    CaptioningConfig,
    CaptioningRNN,
    TransformerCaptioner,
    TransformerCaptioningConfig,
)
from lightning_modules.models import get_model

# The captioners are importable from here too, beside the module that trains them.
__all__ = [
    "CaptioningConfig",
    "CaptioningModule",
    "CaptioningRNN",
    "TransformerCaptioner",
    "TransformerCaptioningConfig",
]


class CaptioningModule(pl.LightningModule):
    """Trains a captioner (CaptioningRNN or TransformerCaptioner) on (features, captions) batches;
    logs train and validation loss.

    Args:
        cell: "rnn", "lstm" or "transformer": the captioner ``models`` registers as ``<cell>_captioner``.
        lr, weight_decay: Adam's; lr_gamma: the learning rate is multiplied by this after every epoch.
        vocabulary: the vocabulary's words in id order (kept in the checkpoint, with the token ids).
        image_encoder: what turns a photo into the features: {"backbone", "trunk", "weights", "pooling",
            "preprocessing"}; its weights travel in the checkpoint too (``image_encoder_state``), so
            a checkpoint captions a photo alone.
        **config: the captioner's sizes, the fields of CaptioningConfig (but ``cell``) or of
            TransformerCaptioningConfig; each default is declared once, in the config.

    The hyper-parameters are plain values (``cell``, every config field, the optimizer's), so
    ``load_from_checkpoint(path)`` rebuilds the network. The losses are torchmetrics means, exact
    across distributed ranks.
    """

    def __init__(
        self,
        cell: str = "rnn",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_gamma: float = 1.0,
        vocabulary: list[str] | None = None,
        image_encoder: dict | None = None,
        **config,
    ):
        super().__init__()
        self.model = get_model(f"{cell}_captioner", **config)
        sizes = {k: v for k, v in self.model.spec.items() if k != "name"}
        if vocabulary is not None and len(vocabulary) != sizes["vocab_size"]:
            raise ValueError(f"CaptioningModule: {len(vocabulary)} words for vocab_size {sizes['vocab_size']}")
        hparams = {"cell": cell, **sizes, "lr": lr, "weight_decay": weight_decay, "lr_gamma": lr_gamma}
        self.save_hyperparameters({**hparams, "vocabulary": vocabulary, "image_encoder": image_encoder})
        # The image encoder's weights (a state_dict), kept in checkpoints beside the captioner's own.
        self.image_encoder_state: dict[str, torch.Tensor] | None = None
        self.metrics = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("train", "val")})
        for metric in self.metrics.values():
            metric.persistent(True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.image_encoder_state is not None:
            checkpoint["image_encoder_state_dict"] = self.image_encoder_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.image_encoder_state = checkpoint.get("image_encoder_state_dict")

    def _step(self, batch, stage: str) -> torch.Tensor:
        features, captions = batch
        loss = self.model(features, captions)
        self.metrics[f"{stage}_loss"](loss.detach(), weight=features.shape[0])
        # The training loss per step too (train_loss_step beside train_loss_epoch in the logs).
        metric = self.metrics[f"{stage}_loss"]
        self.log(f"{stage}_loss", metric, on_step=stage == "train", on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.hparams.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": sched}
