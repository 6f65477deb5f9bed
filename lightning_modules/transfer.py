"""Transfer learning: a pretrained trunk, global average pooling, and a new customops last layer.

Two ways to train it (the homework's scenarios):
- finetune: every layer learns, starting from the pretrained weights (by default the
  BatchNorm running statistics stay at their pretrained values, while BatchNorm's scale and
  shift still learn: re-estimating them from 32-image batches of augmented crops of 244
  images cost accuracy when it was measured; ``bn_stats="update"`` does that);
- freeze: the trunk is a fixed feature extractor (no gradients, BatchNorm statistics frozen,
  no autograd graph built for it) and only the new last layer learns.

The trunk runs on customops layers (``trunk="customops"``: torchvision's network through
``customops.convert``), or on torch.nn's for comparison (``trunk="native"``). The customops
BatchNorm layers subclass torch.nn's ``_BatchNorm``, so freezing their statistics finds them.

One network per backbone is registered in ``models``, ``transfer_<backbone>``; the net is trained by
``classifier.ClassifierModule`` from the plain spec ``{"name": "transfer_mobilenet_v2", "weights": ...,
"num_classes": ..., "mode": ..., "bn_stats": ..., "trunk": ...}`` (a spec without "trunk", from an
older checkpoint, builds the customops trunk: the state_dicts of both kinds are the same).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

import customops as co
from lightning_modules.models import register_model
from lightning_modules.pretrained import BACKBONES, TRUNK_KINDS
from lightning_modules.pretrained import backbone as make_trunk

MODES = ("finetune", "freeze")
BN_STATS = ("pretrained", "update")


class TransferNet(nn.Module):
    """trunk (N, 3, H, W) -> (N, C, h, w); global average pooling -> (N, C); customops.Linear -> (N, K)."""

    def __init__(
        self,
        trunk: nn.Module,
        num_features: int,
        num_classes: int,
        freeze_trunk: bool = False,
        freeze_bn_stats: bool = False,
    ) -> None:
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

    def train(self, mode: bool = True) -> TransferNet:
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
        return co.adaptive_avg_pool2d(maps, 1).flatten(1)  # (N, C, 1, 1) -> (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> class scores (N, K)."""
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        return f"freeze_trunk={self.freeze_trunk}, freeze_bn_stats={self.freeze_bn_stats}"


def build_transfer_net(
    backbone: str = "mobilenet_v2",
    weights: str | None = "imagenet",
    num_classes: int = 2,
    mode: str = "finetune",
    bn_stats: str = "pretrained",
    trunk: str = "customops",
) -> TransferNet:
    """A TransferNet on trunk `backbone` ("mobilenet_v2" | "resnet18" | "small_cnn").

    weights: "imagenet" (an error if they cannot be had) or "none"/None for a random trunk.
    mode: "finetune" (train every layer) or "freeze" (train only the new last layer).
    bn_stats: "pretrained" keeps BatchNorm running statistics fixed while fine-tuning,
    "update" re-estimates them from the training batches (freeze always keeps them).
    trunk: "customops" (the trunk's layers are customops' hand-written ones) or "native"
    (torch.nn's, for comparison); both load the same weights.
    """
    if mode not in MODES:
        raise ValueError(f"transfer: mode must be one of {MODES}, got {mode!r}")
    if bn_stats not in BN_STATS:
        raise ValueError(f"transfer: bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    # The trunk, built here alone: where another kind of trunk plugs in.
    if trunk not in TRUNK_KINDS:
        raise ValueError(f"transfer: trunk must be one of {TRUNK_KINDS}, got {trunk!r}")
    layers, num_features = make_trunk(backbone, None if weights == "none" else weights, trunk)
    net = TransferNet(
        layers, num_features, num_classes, freeze_trunk=(mode == "freeze"), freeze_bn_stats=(bn_stats == "pretrained")
    )
    net.spec = {
        "name": f"transfer_{backbone}",
        "weights": weights or "none",
        "num_classes": num_classes,
        "mode": mode,
        "bn_stats": bn_stats,
        "trunk": trunk,
    }
    return net


# One registered network per backbone: transfer_mobilenet_v2, transfer_resnet18, transfer_small_cnn.
for _backbone in BACKBONES:
    register_model(f"transfer_{_backbone}")(functools.partial(build_transfer_net, _backbone))
