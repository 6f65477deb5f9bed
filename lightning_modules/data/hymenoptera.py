"""Ants versus bees (``hymenoptera_data``): the PyTorch transfer-learning tutorial's data set.

245 training and 153 validation JPEGs in ``train/{ants,bees}`` and ``val/{ants,bees}``,
read with ``torchvision.datasets.ImageFolder`` and the tutorial's transforms; every image is
decoded once in ``setup``, so a truncated or foreign file is named before training. The folder
comes from an explicit path, else ``$CUSTOMOPS_MIRROR/hymenoptera_data``, else the
official zip is downloaded into the project's cache and extracted safely.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_url

from lightning_modules.paths import MIRROR_ENV, default_cache_dir
from lightning_modules.preprocessing import IMAGENET_MEAN, IMAGENET_STD, photo_eval_transform
from lightning_modules.runs.errors import DataError

from .sharding import BatchedDataset, ShardedDataModule
from .sources import check_images, resolve_dataset_dir

NAME = "hymenoptera_data"
URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
SPLITS = ("train", "val")


def _member_target(dest: Path, name: str, zip_name: str) -> Path:
    """Where zip member `name` would land under `dest`; ValueError if it would leave `dest`."""
    # Zip names use "/", but a hostile archive may use "\" or a drive letter as well.
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]) or ".." in posix.parts:
        raise ValueError(f"{zip_name}: refusing member {name!r}, its path leaves the target folder")
    target = (dest / posix).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise ValueError(f"{zip_name}: refusing member {name!r}, its path leaves the target folder")
    return target


def safe_extract(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract `zip_path` into `dest`, refusing the whole archive if any member escapes it.

    Every member is checked before anything is written, so a refused archive leaves `dest`
    untouched.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path}: no such zip file")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        for member in members:
            _member_target(dest, member.filename, zip_path.name)
        for member in members:
            archive.extract(member, dest)
    return dest


def download_hymenoptera(cache_dir: str | os.PathLike | None = None) -> Path:
    """Download and extract the official zip into `cache_dir`; returns ``cache_dir/hymenoptera_data``.

    Extraction goes to a temporary folder beside the target and is renamed into place,
    so an interrupted run never leaves a half-extracted data set that looks complete.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / NAME
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    try:
        download_url(URL, str(cache))
    except (RuntimeError, OSError) as err:  # urllib's URLError is an OSError
        raise DataError(
            f"{NAME}: cannot download {URL} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); offline, "
            f"set ${MIRROR_ENV} to a folder holding {NAME}/ (train/ants, train/bees, val/ants, val/bees: JPEG files), "
            f"or pass --data.root <the {NAME} folder>"
        ) from err
    zip_path = cache / Path(URL).name
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{NAME}-") as tmp:
        try:
            safe_extract(zip_path, tmp)
        except zipfile.BadZipFile as err:
            # Most likely an interrupted download; drop it so the next run fetches it again.
            zip_path.unlink(missing_ok=True)
            raise DataError(f"{zip_path}: not a valid zip ({err}); deleted it, run again to re-download") from err
        extracted = Path(tmp) / NAME
        if not extracted.is_dir():
            raise FileNotFoundError(f"{URL}: the zip holds no {NAME}/ folder")
        shutil.move(str(extracted), str(root))
    return root


def train_transform(image_size: int = 224) -> transforms.Compose:
    """The tutorial's training augmentation: random resized crop and horizontal flip."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def val_transform(image_size: int = 224, resize: int = 256) -> transforms.Compose:
    """The tutorial's evaluation transform: resize the short side, then centre crop."""
    return photo_eval_transform(image_size, resize)


class HymenopteraDataModule(ShardedDataModule):
    """ImageFolder train/val loaders over ``hymenoptera_data`` with the tutorial's transforms.

    Args:
        root: the ``hymenoptera_data`` folder; default ``$CUSTOMOPS_MIRROR/hymenoptera_data``,
            else the official zip is downloaded into ``cache_dir``.
        cache_dir: where a download goes (default: ``paths.default_cache_dir()``).
        batch_size: per device; num_workers: loader processes per device.
        augment: the tutorial's random crops and flips on the training images (False: the
            evaluation transform, for exactly repeatable runs).
        seed / shuffle: the training batches' order (see ``ShardedDataModule``).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        image_size: int = 224,
        resize: int | None = None,
        augment: bool = True,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(seed=seed, shuffle=shuffle)
        # The tutorial's 256 -> 224 ratio, kept for other image sizes.
        resize = round(image_size * 256 / 224) if resize is None else resize
        if batch_size < 1:
            raise ValueError(f"HymenopteraDataModule: batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"HymenopteraDataModule: num_workers must be >= 0, got {num_workers}")
        if not 0 < image_size <= resize:
            raise ValueError(f"HymenopteraDataModule: need 0 < image_size <= resize, got {image_size} and {resize}")
        self.root = root
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.resize = resize
        self.augment = augment
        self.data_path: Path | None = None  # the folder actually read
        self.train_set: datasets.ImageFolder | None = None
        self.val_set: datasets.ImageFolder | None = None

    def _data_path(self) -> Path:
        root = resolve_dataset_dir(NAME, self.root)
        return root if root is not None else download_hymenoptera(self.cache_dir)

    def prepare_data(self) -> None:
        self._data_path()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = self._data_path()
        for split in SPLITS:
            if not (root / split).is_dir():
                raise FileNotFoundError(f"{NAME}: {root} has no {split}/ folder (expected train/ and val/)")
        self.data_path = root
        evaluation = val_transform(self.image_size, self.resize)
        self.train_set = datasets.ImageFolder(
            root / "train", transform=train_transform(self.image_size) if self.augment else evaluation
        )
        self.val_set = datasets.ImageFolder(root / "val", transform=evaluation)
        if self.train_set.classes != self.val_set.classes:
            raise DataError(
                f"{NAME}: train classes {self.train_set.classes} differ from val classes {self.val_set.classes}"
            )
        # 398 images: cheap to decode once here, where a bad file is named before any training.
        check_images((path for ds in (self.train_set, self.val_set) for path, _ in ds.samples), NAME)

    @property
    def classes(self) -> list[str]:
        """Class names in label order (["ants", "bees"] for the real data)."""
        if self.train_set is None:
            self.setup()
        return list(self.train_set.classes)

    def _loader(self, dataset: datasets.ImageFolder, train: bool) -> DataLoader:
        return self.loader(
            BatchedDataset(dataset),
            self.batch_sampler(len(dataset), self.batch_size, train),
            train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
