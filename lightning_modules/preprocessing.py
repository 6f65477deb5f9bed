"""What a network's inputs go through before it sees them, defined once, so that training and
prediction on one's own images prepare them alike.

- the normalisation statistics (ImageNet's for the pretrained trunks, MNIST's for the digits);
- ``digit``: any image (size, colour, dark ink on light paper or light on dark) converted as MNIST's
  digits were: grey levels, light ink on black, the digit's box scaled to fit 20x20, placed in a 28x28
  field with its centre of mass at the centre, normalised;
- ``photo_eval``: the transfer-learning evaluation transform (resize the short side, centre crop),
  on the image as PIL reads it, as the validation images are;
- ``photo_resized``: the captioning features' input (resized to a square, as the features were);
- ``preprocess(image, spec)``: one of them, as the spec a checkpoint carries says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lightning_modules.runs.errors import DataError

# ImageNet statistics: the pretrained trunks expect inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pixel statistics of the 60k MNIST training digits (after scaling to [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# The specs checkpoints carry (plain data).
MNIST_PREPROCESSING = {"kind": "digit", "size": 28, "box": 20, "mean": MNIST_MEAN, "std": MNIST_STD}


def photo_eval_spec(image_size: int = 224, resize: int = 256) -> dict[str, Any]:
    spec = {"kind": "photo_eval", "image_size": image_size, "resize": resize}
    return {**spec, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def photo_resized_spec(image_size: int = 224) -> dict[str, Any]:
    return {"kind": "photo_resized", "image_size": image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W); DataError naming the file when it does not decode."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} is missing")
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot decode this image ({reason})") from err


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """x (C, H, W) in [0, 1] -> (x - mean) / std per channel."""
    mean = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def denormalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Undo the normalisation for display. images: (N, 3, H, W) -> (N, 3, H, W) in [0, 1]."""
    mean = images.new_tensor(mean).view(1, -1, 1, 1)  # (1, 3, 1, 1)
    std = images.new_tensor(std).view(1, -1, 1, 1)  # (1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def digit(image: torch.Tensor, spec: dict[str, Any] = MNIST_PREPROCESSING) -> torch.Tensor:
    """uint8 (C, H, W), any size or colour -> (1, 28, 28) normalised as MNIST's digits are."""
    from torchvision.transforms.v2 import functional as TF

    grey = image.float().div(255).mean(0)  # (H, W) in [0, 1]
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > 0.5:  # dark ink on light paper: MNIST's digits are light on black
        grey, border = 1 - grey, 1 - border
    grey = (grey - border.median()).clamp_min(0)  # the background (the border's level) to black
    grey = grey / grey.max().clamp_min(1e-6)  # the ink to full strength
    ink = (grey > 0.2).nonzero()
    if len(ink):  # the digit's bounding box
        (top, left), (bottom, right) = ink.min(0).values.tolist(), ink.max(0).values.tolist()
        grey = grey[top : bottom + 1, left : right + 1]
    h, w = grey.shape
    box, size = spec["box"], spec["size"]
    scale = box / max(h, w)
    new = [max(1, round(h * scale)), max(1, round(w * scale))]
    digit = TF.resize(grey[None], new, antialias=True)[0].clamp(0, 1)  # (h', w'), fits box x box
    # Place it so that its centre of mass lands on the field's centre, as MNIST's were.
    ys, xs = torch.arange(new[0], dtype=torch.float32), torch.arange(new[1], dtype=torch.float32)
    mass = digit.sum().clamp_min(1e-6)
    cy, cx = float((digit.sum(1) * ys).sum() / mass), float((digit.sum(0) * xs).sum() / mass)
    top = min(max(round(size / 2 - cy - 0.5), 0), size - new[0])
    left = min(max(round(size / 2 - cx - 0.5), 0), size - new[1])
    field = torch.zeros(size, size)
    field[top : top + new[0], left : left + new[1]] = digit
    return normalize(field[None], [spec["mean"]], [spec["std"]])  # (1, 28, 28)


def photo_eval_transform(image_size: int = 224, resize: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The PyTorch transfer-learning tutorial's evaluation transform of a PIL image: resize the short
    side, centre crop, to a normalised (3, S, S) tensor."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def photo_eval(path: str | os.PathLike, spec: dict[str, Any]) -> torch.Tensor:
    """An image file -> (3, S, S), read and transformed as the validation images were (PIL, RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: cannot decode this image ({err})") from err
    return photo_eval_transform(spec["image_size"], spec["resize"], spec["mean"], spec["std"])(rgb)


def photo_resized(image: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, S, S): resized to a square (aspect squashed), normalised."""
    from torchvision.transforms.v2 import functional as TF

    size = spec["image_size"]
    if image.shape[-2:] != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return normalize(image.float() / 255.0, spec["mean"], spec["std"])


KINDS = ("digit", "photo_eval", "photo_resized")


def preprocess(path: str | os.PathLike, spec: dict[str, Any]) -> torch.Tensor:
    """The image file `path` prepared as `spec` (a checkpoint's ``preprocessing``) says."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise ValueError(f"preprocess: unknown preprocessing {spec!r}; kinds: {', '.join(KINDS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path} is missing")
    if spec["kind"] == "photo_eval":
        return photo_eval(path, spec)
    return (digit if spec["kind"] == "digit" else photo_resized)(read_image(path), spec)
