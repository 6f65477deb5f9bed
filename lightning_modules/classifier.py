"""A thin LightningModule that trains any backbone producing class scores.

    model = ClassifierModule(net, num_classes=10, lr=1e-3, optimizer="adamw",
                             scheduler="onecycle", backbone_spec=net.spec)

The loss is customops' hand-written ``softmax_loss`` (``loss="torch"`` swaps in
``F.cross_entropy``, for a baseline made only of torch built-ins); accuracy comes from
torchmetrics; optimizer and learning-rate schedule come from the hyper-parameters.

The backbone itself is not a hyper-parameter (it is a module); pass a plain dict that
describes it as ``backbone_spec`` and rebuild it when loading a checkpoint::

    model = ClassifierModule.load_rebuilt(ckpt_path, build_backbone=networks.build_net)
"""
from __future__ import annotations

import os
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "cosine", "constant")
LOSSES = ("customops", "torch")


class ClassifierModule(pl.LightningModule):
    """Classification with a backbone mapping a batch x (N, ...) to scores (N, num_classes); labels y (N,) int64.

    Args:
        backbone: any nn.Module returning class scores.
        num_classes: number of classes.
        lr: peak learning rate.
        weight_decay: decoupled for "adamw", L2 added to the gradient for "sgd" and "adam".
        optimizer: "sgd" (momentum, Nesterov), "adam" or "adamw".
        momentum: SGD momentum (OneCycle cycles it for SGD only; Adam's betas are left alone).
        scheduler: "onecycle" (warm-up then cosine decay, stepped per batch; "cosine" when a run
            has fewer than 4 steps), "cosine" (cosine decay to 0 per batch) or "constant".
        warmup_frac: fraction of the steps spent warming up under "onecycle".
        loss: "customops" (hand-written softmax_loss) or "torch" (F.cross_entropy).
        backbone_spec: a plain dict from which the backbone can be rebuilt; stored in the checkpoint.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        scheduler: str = "onecycle",
        warmup_frac: float = 0.2,
        loss: str = "customops",
        backbone_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"ClassifierModule: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"ClassifierModule: scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if loss not in LOSSES:
            raise ValueError(f"ClassifierModule: loss must be one of {LOSSES}, got {loss!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"ClassifierModule: num_classes must be an int >= 2, got {num_classes!r}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"ClassifierModule: need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        if not 0.0 < warmup_frac < 1.0:
            raise ValueError(f"ClassifierModule: warmup_frac must be in (0, 1), got {warmup_frac}")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        if loss == "customops":
            import customops as co

            self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = co.softmax_loss
        else:
            self.loss_fn = F.cross_entropy
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _step(self, batch, stage: str, acc: MulticlassAccuracy) -> torch.Tensor:
        x, y = batch
        scores = self(x)
        loss = self.loss_fn(scores, y)
        acc(scores.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self):
        hp = self.hparams
        params = self.parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, nesterov=True, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if hp.scheduler == "onecycle" and total >= 4:
            # OneCycleLR divides by the length of each phase: keep at least 2 warm-up steps.
            warmup = min(max(hp.warmup_frac, 2.0 / total), 0.5)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=hp.lr, total_steps=total, pct_start=warmup,
                cycle_momentum=hp.optimizer == "sgd",
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @classmethod
    def load_rebuilt(
        cls,
        checkpoint_path: str | os.PathLike,
        build_backbone: Callable[[dict[str, Any]], nn.Module],
        map_location: Any = "cpu",
    ) -> "ClassifierModule":
        """Load a checkpoint, rebuilding its backbone from the stored ``backbone_spec``."""
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        spec = ckpt.get("hyper_parameters", {}).get("backbone_spec")
        if spec is None:
            raise ValueError(f"{checkpoint_path}: no backbone_spec in its hyper-parameters; cannot rebuild the backbone")
        return cls.load_from_checkpoint(checkpoint_path, map_location=map_location, backbone=build_backbone(spec))
