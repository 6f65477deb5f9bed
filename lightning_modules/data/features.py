"""CNN image features, extracted once (one inference pass for both poolings) and cached."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from tqdm.auto import tqdm

from lightning_modules.paths import default_cache_dir
from lightning_modules.preprocessing import photo_resized, photo_resized_spec
from lightning_modules.pretrained import TRUNK_KINDS
from lightning_modules.pretrained import backbone as make_backbone
from lightning_modules.runs.errors import DataError, RunError
from lightning_modules.runs.ranks import echo
from lightning_modules.runs.storage import atomic_path, load_checkpoint

# Bump when the feature computation changes, so old caches are not reused.
FEATURE_FORMAT = 2


class _ImageFiles(Dataset):
    """Decoded, resized and ImageNet-normalised images (``preprocessing.photo_resized``): each
    (3, size, size) float32, with "" or, for a file that cannot be decoded, the reason (raised by the
    reader, which names the file: an error raised inside a loader worker would reach it wrapped in the
    worker's traceback)."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = list(paths)
        self.size = size
        self.spec = photo_resized_spec(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[i]
        try:
            image = decode_image(torchvision.io.read_file(str(path)), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            # torchvision's message names only its own C++ source: keep the reason alone.
            reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err)).split(". ")[0] or type(err).__name__
            return torch.zeros(3, self.size, self.size), reason
        return photo_resized(image, self.spec), ""


POOLINGS = ("mean", "grid")


def feature_cache_key(
    paths: Sequence[Path],
    backbone: str,
    weights: str | None,
    image_size: int,
    pooling: str = "mean",
    trunk: str = "customops",
) -> str:
    """Hash of everything the features depend on: backbone, its trunk's kind (customops or native
    layers), weights, pooling and the image list (names and sizes)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [FEATURE_FORMAT, backbone, trunk, weights, image_size] + ([] if pooling == "mean" else [pooling])
        ).encode()
    )
    for p in paths:
        h.update(f"\n{p.name}\t{p.stat().st_size}".encode())
    return h.hexdigest()[:20]


def _cache_file(
    cache_dir: str | os.PathLike,
    backbone: str,
    trunk: str,
    weights: str | None,
    image_size: int,
    pooling: str,
    key: str,
) -> Path:
    kind = "" if pooling == "mean" else f"{pooling}-"
    name = f"{backbone}-{trunk}-{weights or 'random'}-{image_size}-{kind}{key}.pt"
    return Path(cache_dir) / "features" / name


def _read_cache(cache_file: Path, key: str, count: int) -> tuple[torch.Tensor, dict] | None:
    """The cached features when the file holds those of `key` (`count` images); else None."""
    if not cache_file.is_file():
        return None
    try:
        saved = load_checkpoint(cache_file, "feature cache")
        if saved["meta"]["key"] == key and saved["features"].shape[0] == count:
            return saved["features"], {**saved["meta"], "cached": True, "file": str(cache_file)}
        echo(f"extract_features: {cache_file} holds other features; extracting them again")
    except (RunError, KeyError, TypeError, AttributeError) as err:
        # A corrupt or refused cache is never unpickled beyond plain data: rebuilt, not fatal.
        echo(f"extract_features: ignoring the feature cache: {err}; extracting again")
    return None


def pooled_features(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """A trunk's feature maps (B, C, h, w) as the two poolings: "mean" (B, C) float32 and "grid"
    (B, h*w, C) float16, as the cache stores them (and ``predict`` computes them)."""
    maps = maps.float()
    return {"mean": maps.mean(dim=(2, 3)), "grid": maps.flatten(2).transpose(1, 2).half()}


@torch.inference_mode()
def _inference_pass(loader, trunk, device, paths, label: str, progress: bool) -> dict[str, list[torch.Tensor]]:
    """Both poolings of every image, batch by batch; DataError naming the first image that does not decode."""
    chunks: dict[str, list[torch.Tensor]] = {p: [] for p in POOLINGS}
    for batch, (images, errors) in enumerate(tqdm(loader, desc=label, unit="batch", disable=not progress)):
        for k, reason in enumerate(errors):
            if reason:
                path = paths[batch * loader.batch_size + k]
                raise DataError(f"extract_features: cannot decode image {path} ({reason}): replace or delete the file")
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        for name, pooled in pooled_features(trunk(images)).items():  # trunk: (B, C, h, w)
            chunks[name].append(pooled.cpu())
    return chunks


def extract_features(
    paths: Sequence[Path],
    backbone: str = "mobilenet_v2",
    weights: str | None = "imagenet",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    image_size: int = 224,
    device: torch.device | str | None = None,
    progress: bool = True,
    pooling: str = "mean",
    num_workers: int | None = None,
    trunk: str = "customops",
) -> tuple[torch.Tensor, dict]:
    """CNN features of the images, cached in ``<cache_dir>/features/``.

    pooling "mean": globally average-pooled, (M, C) float32; "grid": the last feature map's
    positions, (M, h*w, C) in float16 (a 7x7 grid of 1280 channels is 125 KB per image).
    One pass over the images computes and caches both, so the other pooling is then read from
    the cache too. trunk "customops" (the default) extracts them with the backbone converted to
    customops layers, "native" with torchvision's own; the cache's key, file name and metadata say
    which, so the two are never mixed. The pass is built for inference: ``torch.inference_mode``
    and channels-last tensors (on 2 CPU cores the native MobileNetV2 runs 75 images/s channels-last
    against 40 contiguous; the customops one runs as fast either way).
    ``num_workers`` processes decode the images (default: none on a CPU, where decoding is a
    small part of the time and a worker would take a core from the network; 2 on a GPU).
    Returns the features on the CPU and the cache's metadata (``seconds`` of the extraction that
    built it, ``cached`` whether it was reused).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"extract_features: pooling must be one of {POOLINGS}, got {pooling!r}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("extract_features: empty image list")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"extract_features: image {p} is missing")
    if trunk not in TRUNK_KINDS:
        raise ValueError(f"extract_features: trunk must be one of {TRUNK_KINDS}, got {trunk!r}")
    keys = {pool: feature_cache_key(paths, backbone, weights, image_size, pool, trunk) for pool in POOLINGS}
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = {pool: _cache_file(cache_dir, backbone, trunk, weights, image_size, pool, keys[pool]) for pool in POOLINGS}
    found = _read_cache(files[pooling], keys[pooling], len(paths))
    if found is not None:
        return found
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    network, channels = make_backbone(backbone, weights, trunk)
    # Channels-last: torch's kernels (the native trunk) run MobileNetV2 1.7x faster so on a CPU;
    # customops' layers run as fast either way (one thread's CPU time, batch 32, 224x224).
    network = network.to(device, memory_format=torch.channels_last).eval()
    if num_workers is None:
        num_workers = 0 if device.type == "cpu" else 2
    loader = DataLoader(_ImageFiles(paths, image_size), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    start = time.perf_counter()
    label = f"{backbone} ({trunk}) features"
    chunks = _inference_pass(loader, network, device, paths, label, progress)
    seconds = time.perf_counter() - start
    common = {"backbone": backbone, "trunk": trunk, "weights": weights}
    common |= {"image_size": image_size, "num_images": len(paths)}
    common |= {"seconds": seconds, "images_per_s": len(paths) / seconds, "device": str(device)}
    common |= {"threads": torch.get_num_threads(), "decode_workers": num_workers}
    result = None
    for name in POOLINGS:  # both poolings cached, from the one pass
        features = torch.cat(chunks[name]).contiguous()  # (M, C) or (M, h*w, C)
        assert features.shape[0] == len(paths) and features.shape[-1] == channels
        meta = {"key": keys[name], **common, "pooling": name}
        with atomic_path(files[name]) as tmp:
            torch.save({"features": features, "meta": meta}, tmp)
        if name == pooling:
            result = features, {**meta, "cached": False, "file": str(files[name])}
    return result
