"""Shared test builders, as fixtures: tiny data sets written under tmp_path (MNIST IDX files, an
ants-vs-bees image folder, Flickr8k- and COCO-format caption sets) and the programs run as a user
runs them, in a subprocess."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.io import write_jpeg

from lightning_modules.data import captions
from tests.helpers import ROOT

# Environment variables a subprocess must not inherit: the data mirror (the tests make their own
# data) and the rank variables of a distributed parent.
_CLEARED = ("CUSTOMOPS_MIRROR", "LOCAL_RANK", "RANK", "WORLD_SIZE")


# --------------------------------------------------------------------------- programs in a subprocess


CPU_QUIET = ("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false")


def run_program(name: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``scripts/<name>.py fit <args>`` as a user runs it, on the CPU, without progress bars or the data
    mirror."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), "fit", *args, *CPU_QUIET],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_ok(name: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    proc = run_program(name, *args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.fixture
def run_cli():
    """run_cli(name, *args, cwd=...): the finished process (returncode, stdout, stderr)."""
    return run_program


@pytest.fixture
def run_script():
    """run_script(name, *args, cwd=...): its stdout, after asserting that it succeeded."""
    return _run_ok


# --------------------------------------------------------------------------- MNIST


def idx_bytes(t: torch.Tensor) -> bytes:
    """t: uint8 (N,) labels or (N, 28, 28) images, in the IDX format (big-endian header)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + t.numpy().tobytes()


def _write_mnist_mirror(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> dict[str, str]:
    """Write a tiny MNIST mirror under folder/raw/; returns the md5 of each decompressed file."""
    g = torch.Generator().manual_seed(0)
    data = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(n_train, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": torch.arange(n_test, dtype=torch.uint8) % 10,
    }
    raw = folder / "raw"
    raw.mkdir(parents=True)
    md5s = {}
    for name, t in data.items():
        blob = idx_bytes(t)
        md5s[name] = hashlib.md5(blob).hexdigest()
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return md5s


def _write_mnist_cache(cache: Path, n_train: int, n_test: int) -> Path:
    """Decompressed tiny IDX files where torchvision.datasets.MNIST reads them (no download, no md5)."""
    g = torch.Generator().manual_seed(0)
    raw = cache / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        # A bright square whose place depends on the label: something to learn.
        images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 * label : 2 * label + 8, 4:12] = 255
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return cache


@pytest.fixture
def mnist_mirror():
    """mnist_mirror(folder, n_train=60, n_test=20, gz=True): a tiny MNIST mirror (random digits,
    labels i % 10) under folder/raw/; returns the md5 of each decompressed file."""
    return _write_mnist_mirror


@pytest.fixture
def mnist_cache():
    """mnist_cache(cache, n_train, n_test): decompressed tiny IDX files where torchvision reads them,
    a bright square placed by the label (something to learn); returns `cache`."""
    return _write_mnist_cache


# --------------------------------------------------------------------------- ants vs bees


def _write_hymenoptera(root: Path) -> Path:
    """hymenoptera-shaped folder: {train,val}/{ants,bees}/*.png, 32x32, a colour cue per class."""
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 4)):
        for label, name in enumerate(("ants", "bees")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 120, (32, 32, 3), generator=gen, dtype=torch.uint8)
                pixels[..., label] += 120  # ants reddish, bees greenish
                Image.fromarray(pixels.numpy()).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def hymenoptera():
    """hymenoptera(root): a hymenoptera-shaped folder of 32x32 images; returns `root`."""
    return _write_hymenoptera


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """One tiny ants-vs-bees folder shared by a test module's tests (read only)."""
    return _write_hymenoptera(tmp_path_factory.mktemp("tiny") / "hymenoptera_data")


# --------------------------------------------------------------------------- captions

WORDS = "a dog cat man woman runs sits on the grass red blue ball jumps water".split()


def _image(path: Path, seed: int, size: int = 32) -> None:
    g = torch.Generator().manual_seed(seed)
    # A coloured gradient, different per image, so random-weight features differ too.
    base = torch.rand(3, 1, 1, generator=g) * 255
    ramp = torch.linspace(0, 1, size).view(1, 1, size) * torch.rand(3, 1, 1, generator=g) * 255
    image = (0.5 * base + 0.5 * ramp).expand(3, size, size).clamp(0, 255).to(torch.uint8).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(image, str(path), quality=95)


def _caption(seed: int, k: int) -> str:
    g = torch.Generator().manual_seed(seed * 10 + k)
    n = int(torch.randint(3, 7, (1,), generator=g))
    return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g)).capitalize() + " ."


def _make_coco(root: Path, counts=(8, 3, 3), captions_per_image=2) -> Path:
    """captions_{train,val,test}.json and images/{split}/ under root."""
    seed = 0
    for split, n in zip(("train", "val", "test"), counts):
        images, anns = [], []
        for i in range(n):
            seed += 1
            name = f"{split}_{i:03d}.jpg"
            _image(root / split / name, seed)
            images.append({"id": seed, "file_name": name})
            caps = [_caption(seed, k) for k in range(captions_per_image)]
            if split == "val" and i == 0:
                caps[0] = "A zebra eats ."  # a word that appears in no training caption
            anns += [{"id": seed * 100 + k, "image_id": seed, "caption": c} for k, c in enumerate(caps)]
        (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def _make_flickr(root: Path) -> Path:
    names = {"train": ["t1.jpg", "t2.jpg"], "dev": ["d1.jpg"], "test": ["s1.jpg"]}
    lines = []
    for seed, name in enumerate(n for split in names.values() for n in split):
        _image(root / "Images" / name, seed)
        lines += [f"{name}#{k}\t{_caption(seed, k)}" for k in range(5)]
    lines.append("extra.jpg#0\tAn image outside the splits .")
    (root / captions.FLICKR8K_TOKENS).write_text("\n".join(lines) + "\n")
    for split, file in captions.FLICKR8K_SPLIT_FILES.items():
        (root / file).write_text("\n".join(names[split]) + "\n")
    return root


@pytest.fixture
def write_image():
    """write_image(path, seed, size=32): a JPEG colour gradient, different per seed."""
    return _image


@pytest.fixture
def make_coco():
    """make_coco(root, counts=(8, 3, 3), captions_per_image=2): a COCO-format caption set; returns `root`."""
    return _make_coco


@pytest.fixture
def make_flickr():
    """make_flickr(root): a Flickr8k-format set (2 train, 1 dev, 1 test images); returns `root`."""
    return _make_flickr


# --------------------------------------------------------------------------- networks


def _small_nets(impl: str) -> list[torch.nn.Module]:
    from lightning_modules.networks import ConvNet, TwoLayerNet

    return [TwoLayerNet(hidden=64, impl=impl), ConvNet(filters=8, kernel_size=5, hidden=32, impl=impl)]


@pytest.fixture
def small_nets():
    """small_nets(impl): a small TwoLayerNet and ConvNet of that impl ("custom" or "torch")."""
    return _small_nets
