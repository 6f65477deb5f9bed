"""Transfer learning: a pretrained trunk, global average pooling, and a new customops last layer.

Two ways to train it (the homework's scenarios):
- finetune: every layer learns, starting from the pretrained weights (by default the
  BatchNorm running statistics stay at their pretrained values, while BatchNorm's scale and
  shift still learn: re-estimating them from 32-image batches of augmented crops of 244
  images cost accuracy, see reports/transfer_learning/README.md);
- freeze: the trunk is a fixed feature extractor (no gradients, BatchNorm statistics frozen,
  no autograd graph built for it) and only the new last layer learns.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import customops as co
from lightning_modules.pretrained import backbone

MODES = ("finetune", "freeze")
BN_STATS = ("pretrained", "update")


class TransferNet(nn.Module):
    """trunk (N, 3, H, W) -> (N, C, h, w); mean over (h, w) -> (N, C); customops.Linear -> (N, K)."""

    def __init__(self, trunk: nn.Module, num_features: int, num_classes: int, freeze_trunk: bool = False,
                 freeze_bn_stats: bool = False) -> None:
        super().__init__()
        if num_features < 1 or num_classes < 2:
            raise ValueError(
                f"TransferNet: need num_features >= 1 and num_classes >= 2, got {num_features} and {num_classes}"
            )
        self.trunk = trunk
        self.head = co.Linear(num_features, num_classes)
        self.freeze_trunk = freeze_trunk
        # A frozen trunk freezes its BatchNorm statistics too.
        self.freeze_bn_stats = freeze_bn_stats or freeze_trunk
        if freeze_trunk:
            self.trunk.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "TransferNet":
        super().train(mode)
        if self.freeze_trunk:
            # A frozen trunk keeps its pretrained BatchNorm statistics: train mode would update them.
            self.trunk.eval()
        elif self.freeze_bn_stats:
            # BatchNorm in eval mode normalises with its running statistics and leaves them alone;
            # its weight and bias still receive gradients.
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features. x: (N, 3, H, W) -> (N, C)."""
        if self.freeze_trunk:
            # Nothing upstream of the head learns, so build no graph through the trunk.
            with torch.no_grad():
                maps = self.trunk(x)  # (N, C, h, w)
        else:
            maps = self.trunk(x)  # (N, C, h, w)
        return maps.mean(dim=(2, 3))  # (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> class scores (N, K)."""
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        return f"freeze_trunk={self.freeze_trunk}, freeze_bn_stats={self.freeze_bn_stats}"


def build_transfer_net(
    backbone_name: str, weights: str | None, num_classes: int, mode: str, bn_stats: str = "pretrained"
) -> TransferNet:
    """A TransferNet on `backbone_name` ("mobilenet_v2" | "resnet18").

    weights: "imagenet" (an error if they cannot be had) or "none"/None for a random trunk.
    mode: "finetune" (train every layer) or "freeze" (train only the new last layer).
    bn_stats: "pretrained" keeps BatchNorm running statistics fixed while fine-tuning,
    "update" re-estimates them from the training batches (freeze always keeps them).
    """
    if mode not in MODES:
        raise ValueError(f"transfer: mode must be one of {MODES}, got {mode!r}")
    if bn_stats not in BN_STATS:
        raise ValueError(f"transfer: bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    if weights == "none":
        weights = None
    trunk, num_features = backbone(backbone_name, weights)
    return TransferNet(trunk, num_features, num_classes, freeze_trunk=(mode == "freeze"),
                       freeze_bn_stats=(bn_stats == "pretrained"))


class TransferClassifier(pl.LightningModule):
    """Thin LightningModule: customops softmax loss, accuracy, SGD with a step schedule.

    The network is passed in (it is not a hyperparameter); the optimizer only sees the
    parameters that require gradients, so a frozen trunk is never touched. `head_lr`
    (default: `lr`) lets the new, randomly initialised last layer learn faster than the
    pretrained trunk when fine-tuning.
    """

    def __init__(
        self,
        net: TransferNet,
        lr: float = 1e-3,
        head_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        step_size: int = 7,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = co.SoftmaxLoss()
        num_classes = net.head.weight.shape[1]
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, accuracy: MulticlassAccuracy, stage: str) -> torch.Tensor:
        x, y = batch
        scores = self(x)
        loss = self.loss(scores, y)
        accuracy(scores.argmax(dim=1), y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}_acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_acc, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_acc, "val")

    def configure_optimizers(self):
        hp = self.hparams
        head_lr = hp.lr if hp.head_lr is None else hp.head_lr
        groups = [
            {"params": [p for p in self.net.trunk.parameters() if p.requires_grad], "lr": hp.lr},
            {"params": [p for p in self.net.head.parameters() if p.requires_grad], "lr": head_lr},
        ]
        optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]], lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
