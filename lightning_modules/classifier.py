"""The one classification LightningModule: MNIST networks and the transfer-learning net alike.

    model = ClassifierModule({"name": "conv_net", "filters": 32, "kernel_size": 5, "hidden": 256},
                             lr=2e-3, optimizer="adamw", scheduler="onecycle")
    model = ClassifierModule.load_from_checkpoint(path)     # rebuilds the network from its spec

The network is built from ``net``, a plain dict (see ``models.build_model``), so the
checkpoint holds only plain hyper-parameters and loads with ``weights_only=True``. The loss is
customops' hand-written ``softmax_loss`` (``loss="torch"`` swaps in ``F.cross_entropy``, for a
baseline made only of torch built-ins); loss and accuracy are torchmetrics metrics, which
reduce exactly across distributed ranks and are kept in checkpoints (a run resumed in the middle
of an epoch reports that epoch's metrics over all its batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.models import build_model

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "cosine", "constant", "step")
LOSSES = ("customops", "torch")
STAGES = ("train", "val", "test")


class ClassifierModule(pl.LightningModule):
    """Classification with a network mapping a batch x (N, ...) to scores (N, num_classes); labels y (N,) int64.

    Args:
        net: the network's spec, a plain dict for ``models.build_model`` (its "num_classes" is the
            number of classes). A network built already may be passed instead if it carries its
            spec as ``net.spec`` (as TwoLayerNet, ConvNet and TransferNet do): it is trained as it
            is, and its spec is what the checkpoint stores.
        num_classes: optional check of the spec's number of classes.
        lr: peak learning rate (of the trunk, when ``head_lr`` is given).
        head_lr: learning rate of the network's ``head`` (the new last layer of a transfer net);
            None: ``lr`` for every parameter.
        weight_decay: decoupled for "adamw", L2 added to the gradient for "sgd" and "adam".
        optimizer: "sgd" (momentum), "adam" or "adamw".
        momentum: SGD momentum (OneCycle cycles it for SGD only; Adam's betas are left alone).
        nesterov: Nesterov momentum for SGD.
        scheduler: "onecycle" (warm-up then cosine decay, stepped per batch; "cosine" when a run
            has fewer than 4 steps), "cosine" (cosine decay to 0 per batch), "step" (times
            ``gamma`` every ``step_size`` epochs) or "constant".
        warmup_frac: fraction of the steps spent warming up under "onecycle".
        loss: "customops" (hand-written softmax_loss) or "torch" (F.cross_entropy).
        preprocessing: how an input is prepared (a ``preprocessing`` spec, e.g. ``MNIST_PREPROCESSING``),
            kept in the checkpoint so that ``predict`` prepares one's own images as training did.
        classes: the class names in label order (kept in the checkpoint; default: "0", "1", ...).
        trunk_weights: what a pretrained trunk started from ("imagenet"; read from the spec's
            "weights"). The checkpoint holds every weight, so its spec says "weights": "none": it loads
            without the pretrained-weights package, the trunk built without weights, then the
            state_dict loaded.
    """

    def __init__(
        self,
        net: dict[str, Any] | torch.nn.Module,
        num_classes: int | None = None,
        lr: float = 1e-3,
        head_lr: float | None = None,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        nesterov: bool = True,
        scheduler: str = "onecycle",
        warmup_frac: float = 0.2,
        step_size: int = 7,
        gamma: float = 0.1,
        loss: str = "customops",
        preprocessing: dict[str, Any] | None = None,
        classes: list[str] | None = None,
        trunk_weights: str | None = None,
    ) -> None:
        super().__init__()
        _check_choices(optimizer, scheduler, loss)
        built = net if isinstance(net, torch.nn.Module) else None
        spec = getattr(net, "spec", None) if built is not None else net
        num_classes = _check_numbers(spec, net, num_classes, lr, head_lr, weight_decay, warmup_frac, classes)
        # Plain hyper-parameters only (the spec, never a module): checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["net"])
        self.net = built if built is not None else build_model(spec)
        self.hparams["net"] = {**spec, "weights": "none"} if "weights" in spec else dict(spec)
        self.hparams["trunk_weights"] = trunk_weights or (spec.get("weights") if "weights" in spec else None)
        self.hparams["classes"] = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        if loss == "customops":
            import customops as co

            self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = co.softmax_loss
        else:
            self.loss_fn = F.cross_entropy
        # Keyed by the logged names: "train_loss", "train_acc", "val_loss", ...
        self.metrics = torch.nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}_loss"] = MeanMetric()
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, average="micro")
        for metric in self.metrics.values():
            metric.persistent(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        scores = self(x)
        loss = self.loss_fn(scores, y)
        self.metrics[f"{stage}_loss"](loss.detach(), weight=len(y))
        self.metrics[f"{stage}_acc"](scores.detach(), y)
        for name in (f"{stage}_loss", f"{stage}_acc"):
            # Training metrics per step too (train_loss_step beside train_loss_epoch in the logs).
            self.log(name, self.metrics[name], on_step=stage == "train", on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters only (a frozen trunk is never touched); the head apart when head_lr is set."""
        hp = self.hparams
        head = getattr(self.net, "head", None)
        if hp.head_lr is None or head is None:
            return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": hp.lr}]
        head_ids = {id(p) for p in head.parameters()}
        groups = [
            {"params": [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids], "lr": hp.lr},
            {"params": [p for p in head.parameters() if p.requires_grad], "lr": hp.head_lr},
        ]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.param_groups()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "constant":
            return opt
        if hp.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_size, gamma=hp.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = int(self.trainer.estimated_stepping_batches)
        if hp.scheduler == "onecycle" and total >= 4:
            # OneCycleLR divides by the length of each phase: keep at least 2 warm-up steps.
            warmup = min(max(hp.warmup_frac, 2.0 / total), 0.5)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=[g["lr"] for g in groups],
                total_steps=total,
                pct_start=warmup,
                cycle_momentum=hp.optimizer == "sgd",
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _check_choices(optimizer: str, scheduler: str, loss: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"ClassifierModule: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"ClassifierModule: scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    if loss not in LOSSES:
        raise ValueError(f"ClassifierModule: loss must be one of {LOSSES}, got {loss!r}")


def _check_numbers(spec, net, num_classes, lr, head_lr, weight_decay, warmup_frac, classes) -> int:
    """The number of classes (the spec's), after checking every number and the class names."""
    if not isinstance(spec, dict):
        raise ValueError(f"ClassifierModule: net must be a spec dict or a network with a .spec dict, got {net!r}")
    spec_classes = spec.get("num_classes", 10)
    num_classes = spec_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 2 or num_classes != spec_classes:
        raise ValueError(
            f"ClassifierModule: num_classes must be an int >= 2 matching the network's "
            f"{spec_classes}, got {num_classes!r}"
        )
    rates = (lr, weight_decay, head_lr if head_lr is not None else 1.0)
    # `not x > 0` rather than `x <= 0`: NaN fails every comparison.
    if not (all(map(math.isfinite, rates)) and lr > 0 and weight_decay >= 0 and rates[2] > 0):
        raise ValueError(
            f"ClassifierModule: need finite lr, head_lr > 0 and weight_decay >= 0, got {lr}, {head_lr}, {weight_decay}"
        )
    if not 0.0 < warmup_frac < 1.0:
        raise ValueError(f"ClassifierModule: warmup_frac must be in (0, 1), got {warmup_frac}")
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"ClassifierModule: {len(classes)} class names for {num_classes} classes")
    return num_classes
