"""MNIST as a LightningDataModule: 55k train / 5k val / 10k test, held in memory as tensors.

Where the data comes from, in order:
1. ``root=`` (a folder) or ``$CUSTOMOPS_MIRROR/MNIST``: the four standard IDX files,
   gzipped (``*-ubyte.gz``) or already decompressed, either in that folder or in its
   ``raw/`` subfolder. They are decompressed into ``<cache_dir>/MNIST/raw/`` and every
   decompressed file is checked against the published md5.
2. Otherwise ``torchvision.datasets.MNIST(download=True)`` into ``<cache_dir>``.

``torchvision.datasets.MNIST`` then reads ``<cache_dir>/MNIST/raw/``, after each file's size is
checked against its IDX header (a truncated cache is named, with the fix). The whole set
(about 220 MB as float32) is kept normalised in memory and served a batch at a time,
and the training batches are randomly shifted on the device: both far cheaper on a
few CPU cores than per-image PIL transforms in worker processes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import zlib
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.paths import MIRROR_ENV, default_cache_dir
from lightning_modules.preprocessing import MNIST_MEAN, MNIST_STD
from lightning_modules.runs.errors import DataError, OptionError
from lightning_modules.runs.storage import atomic_path

from .sharding import ShardedDataModule
from .sources import resolve_dataset_dir

# md5 of the *decompressed* files (the .gz wrappers of a mirror may differ from the originals).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_source(folder: Path, name: str) -> Path | None:
    """The mirror's copy of IDX file `name`: decompressed or .gz, in `folder` or `folder/raw`."""
    for sub in (folder, folder / "raw", folder / "MNIST" / "raw"):
        for candidate in (sub / name, sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def prepare_mnist_raw(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    md5s: dict[str, str] | None = None,
) -> Path:
    """Copy/decompress the four IDX files from `root` into `<cache_dir>/MNIST/raw/`, checking md5s.

    md5s: file name -> md5 of the decompressed file (default: the real MNIST's). Files already
    in the cache with the right md5 are kept. Raises FileNotFoundError when the mirror lacks a
    file and DataError (a ValueError) naming the file when it is truncated or its md5 does not match.
    """
    md5s = MNIST_MD5 if md5s is None else md5s
    mirror = Path(root)
    raw = Path(cache_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, want in md5s.items():
        target = raw / name
        if target.is_file() and _md5(target) == want:
            continue
        source = _find_source(mirror, name)
        if source is None:
            raise FileNotFoundError(
                f"MNIST: {name} (or {name}.gz) not found in the mirror folder {mirror} "
                f"(looked in it and in its raw/ subfolder)"
            )
        # A private temporary file renamed into place: a crash never leaves a half-written file,
        # and processes preparing the same cache at once never share a temporary file.
        with atomic_path(target) as tmp:
            try:
                if source.suffix == ".gz":
                    with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    shutil.copyfile(source, tmp)
            except (EOFError, OSError, zlib.error) as err:
                raise DataError(
                    f"MNIST: {source} is truncated or corrupt: cannot decompress it ({err}): "
                    "replace it with a good copy"
                ) from err
            got = _md5(tmp)
            if got != want:
                raise DataError(
                    f"MNIST: {source} is truncated or corrupt: its decompressed content ({tmp.stat().st_size} "
                    f"bytes) has md5 {got}, expected {want}: replace it with a good copy"
                )
    return raw


# The shape of one item of each IDX file: a 28x28 image or a scalar label.
ITEM_SHAPES = {"images": (28, 28), "labels": ()}


def _fix() -> str:
    return f"delete it and run again to re-fetch it (from --data.root or ${MIRROR_ENV} when set, else by download)"


def check_idx(path: Path, item_shape: tuple[int, ...] | None = None) -> int:
    """The number of items in IDX file `path`; DataError naming it unless its size is what its header
    says (and, given `item_shape`, its items have that shape: a labels file where the images should
    be is named as such). Reads the header only."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
        # Magic: two zero bytes, the type (0x08: unsigned bytes), the number of dimensions.
        if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 3:
            raise DataError(
                f"MNIST: {path} is not an IDX file of bytes (its header is {magic.hex() or 'empty'}): {_fix()}"
            )
        dims = [int.from_bytes(f.read(4), "big") for _ in range(magic[3])]
    expected = 4 + 4 * len(dims) + math.prod(dims)
    if size != expected:
        raise DataError(
            f"MNIST: {path} is truncated or corrupt ({size} bytes; its header announces {expected}): {_fix()}"
        )
    if item_shape is not None and tuple(dims[1:]) != item_shape:
        held = "x".join(map(str, dims[1:])) or "single-number"
        wanted = "x".join(map(str, item_shape)) or "single-number (labels)"
        raise DataError(f"MNIST: {path} holds {held} items where {wanted} items belong: {_fix()}")
    return dims[0]


def download_failed(err: Exception) -> DataError:
    """The error for a download that failed: where to put the files instead."""
    files = ", ".join(f"{name}.gz" for name in MNIST_MD5)
    reason = str(err).splitlines()[0].rstrip(":") if str(err) else type(err).__name__
    return DataError(
        f"MNIST: cannot download it ({reason}); offline, set "
        f"${MIRROR_ENV} to a folder holding MNIST/raw/ with the four IDX files ({files}; .gz or decompressed), "
        "or pass --data.root <a folder holding them>"
    )


def shift_batch(x: torch.Tensor, max_shift: int, fill: float) -> torch.Tensor:
    """Translate each image of x (N, C, H, W) by its own random (dy, dx) in [-max_shift, max_shift].

    Pixels shifted in from outside take the value `fill` (the normalised background).
    """
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    s = max_shift
    padded = torch.nn.functional.pad(x, (s, s, s, s), value=fill)  # (N, C, H+2s, W+2s)
    offsets = torch.randint(0, 2 * s + 1, (2, n), device=x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]  # (N, 1, 1, 1)
    chan = torch.arange(c, device=x.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (N, 1, H, W) blurred by a Gaussian of `sigma` pixels cut at 2 sigma, reflected at the borders;
    separable (a row pass, then a column pass): a tenth of the work of one square kernel."""
    radius = min(max(1, int(round(2 * sigma))), x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))


def distort_batch(
    x: torch.Tensor,
    fill: float,
    max_shift: float = 0.0,
    max_rotation: float = 0.0,
    max_scale: float = 0.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
) -> torch.Tensor:
    """Each image of x (N, C, H, W) moved by its own random affine map and elastic field, in one resampling.

    The affine map rotates by up to ``max_rotation`` degrees, scales by a factor in
    [1 - max_scale, 1 + max_scale] and translates by up to ``max_shift`` pixels in each direction.
    The elastic field (Simard et al., 2003) is uniform noise in [-1, 1] per pixel and direction,
    smoothed by a Gaussian of ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` pixels.
    Pixels brought in from outside take the value ``fill``. The whole batch is one ``grid_sample``:
    on a few CPU cores far cheaper than per-image transforms.
    """
    n, c, h, w = x.shape
    if n == 0 or not (max_shift or max_rotation or max_scale or elastic_alpha):
        return x
    dev, dt = x.device, x.dtype

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(*shape, device=dev, dtype=dt) * 2 - 1

    angle = uniform(n) * math.radians(max_rotation)
    scale = 1 + uniform(n) * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Normalised coordinates span 2 over the image: a pixel is 2 / size.
    tx, ty = uniform(n) * max_shift * 2 / w, uniform(n) * max_shift * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, [n, c, h, w], align_corners=False)  # (N, H, W, 2)
    if elastic_alpha:
        field = _gaussian_blur(uniform(n * 2, 1, h, w), elastic_sigma)
        field = field.view(n, 2, h, w).permute(0, 2, 3, 1) * elastic_alpha  # pixels, (N, H, W, 2) as (dx, dy)
        grid = grid + field * torch.tensor([2 / w, 2 / h], device=dev, dtype=dt)
    out = torch.nn.functional.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class MNISTDataModule(ShardedDataModule):
    """MNIST digits as (N, 1, 28, 28) float tensors normalised by the training-set mean/std, labels (N,) int64.

    Args:
        root: folder with the four IDX files (.gz or decompressed); default
            ``$CUSTOMOPS_MIRROR/MNIST`` when that variable is set, else download.
        cache_dir: where they are decompressed (or downloaded): ``<cache_dir>/MNIST/raw/`` (default:
            ``paths.default_cache_dir()``).
        batch_size: training batch size per device (evaluation uses ``eval_batch_size``).
        val_size: digits held out of the 60k training set for validation.
        split_seed: seed of the train/val permutation (fixed, so every run sees the same split).
        max_shift: random translation of each training image by up to this many pixels (0: none).
        max_rotation / max_scale / elastic_alpha / elastic_sigma: random rotation (degrees), scaling
            (fraction) and elastic distortion of each training image (``distort_batch``); all 0
            (the default) keeps whole-pixel shifts alone (``shift_batch``).
        train_subset / test_subset: keep only the first n train (after the split) / test digits (quick runs).
        md5s: md5 of each decompressed file (default: the real MNIST's).
        seed / shuffle: the training batches' order (see ``ShardedDataModule``).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        max_shift: int = 0,
        max_rotation: float = 0.0,
        max_scale: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        md5s: dict[str, str] | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(seed=seed, shuffle=shuffle)
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"MNISTDataModule: batch sizes must be >= 1, got {batch_size}, {eval_batch_size}")
        if val_size < 1:
            raise ValueError(f"MNISTDataModule: val_size must be >= 1, got {val_size}")
        if max_shift < 0:
            raise ValueError(f"MNISTDataModule: max_shift must be >= 0, got {max_shift}")
        for name, value in (("max_rotation", max_rotation), ("max_scale", max_scale), ("elastic_alpha", elastic_alpha)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"MNISTDataModule: {name} must be a finite number >= 0, got {value}")
        if max_scale >= 1:
            raise ValueError(f"MNISTDataModule: max_scale must be < 1 (a factor in [1 - s, 1 + s]), got {max_scale}")
        if not (math.isfinite(elastic_sigma) and elastic_sigma > 0):
            raise ValueError(f"MNISTDataModule: elastic_sigma must be a finite number > 0, got {elastic_sigma}")
        self.root = root
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.max_shift = max_shift
        self.distortion = {
            "max_rotation": max_rotation,
            "max_scale": max_scale,
            "elastic_alpha": elastic_alpha,
            "elastic_sigma": elastic_sigma,
        }
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.md5s = md5s
        self.fill = (0.0 - MNIST_MEAN) / MNIST_STD  # a black pixel after normalisation
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def prepare_data(self) -> None:
        source = resolve_dataset_dir("MNIST", self.root)
        if source is None:
            raw = self.cache_dir / "MNIST" / "raw"
            cached = [raw / name for name in MNIST_MD5 if (raw / name).is_file()]
            for path in cached:
                check_idx(path)  # torchvision would read a truncated file as it is
            if len(cached) == len(MNIST_MD5):
                return
            # A cache folder that cannot be written is named as such (OSError with its path), not as a
            # failed download.
            raw.mkdir(parents=True, exist_ok=True)
            try:
                for train in (True, False):
                    torchvision.datasets.MNIST(self.cache_dir, train=train, download=True)
            except (RuntimeError, OSError) as err:  # torchvision's "Error downloading", urllib's URLError
                raise download_failed(err) from err
        else:
            prepare_mnist_raw(source, self.cache_dir, self.md5s)

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.cache_dir / "MNIST" / "raw" / f"{'train' if train else 't10k'}-labels-idx1-ubyte"
        self._count(train)
        ds = torchvision.datasets.MNIST(self.cache_dir, train=train, download=False)
        bad = (ds.targets > 9).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"MNIST: {labels} holds label {int(ds.targets[i])} at item {i}; digits are 0-9: {_fix()}")
        x = ds.data.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28) in [0, 1]
        x = x.sub_(MNIST_MEAN).div_(MNIST_STD)
        return x, ds.targets.long()

    def _count(self, train: bool) -> int:
        """The number of digits in a split's cached files, from their headers (checked, as their shapes)."""
        raw = self.cache_dir / "MNIST" / "raw"
        prefix = "train" if train else "t10k"
        images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        for path in (images, labels):
            if not path.is_file():
                raise DataError(
                    f"MNIST: {path} is missing; run again to fetch it (from --data.root or ${MIRROR_ENV} "
                    "when set, else by download)"
                )
        count = check_idx(images, ITEM_SHAPES["images"])
        if count != check_idx(labels, ITEM_SHAPES["labels"]):
            raise DataError(
                f"MNIST: {images} and {labels} hold different numbers of items: delete both and run "
                "again to re-fetch them"
            )
        return count

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            count = self._count(train=True)  # before the digits are read
            if self.val_size >= count:
                raise OptionError(
                    f"--data.val_size {self.val_size} leaves no training digits: the MNIST training set "
                    f"({self.cache_dir / 'MNIST' / 'raw'}) holds {count}; choose a smaller --data.val_size"
                )
            x, y = self._load(train=True)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
            if self.train_subset is not None:
                train_idx = train_idx[: self.train_subset]
            self.train_set = TensorDataset(x[train_idx], y[train_idx])
            self.val_set = TensorDataset(x[val_idx], y[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            x, y = self._load(train=False)
            if self.test_subset is not None:
                x, y = x[: self.test_subset], y[: self.test_subset]
            self.test_set = TensorDataset(x, y)

    # Each loader hands the dataset a whole list of indices at once (batch_size=None with a
    # batch sampler), so a batch is one tensor gather rather than `batch_size` item fetches.
    def _loader(self, ds: TensorDataset, batch_size: int, train: bool) -> DataLoader:
        return self.loader(ds, self.batch_sampler(len(ds), batch_size, train), train)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Augment on the device, training batches only.
        if self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        d = self.distortion
        if d["max_rotation"] or d["max_scale"] or d["elastic_alpha"]:
            return distort_batch(x, self.fill, self.max_shift, **d), y
        if self.max_shift > 0:
            return shift_batch(x, self.max_shift, self.fill), y
        return batch
