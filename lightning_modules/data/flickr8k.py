"""Image-captioning data: Flickr8k and COCO-format caption files, the vocabulary,
cached CNN image features, and the LightningDataModule that serves them.

Layout of Flickr8k (the data set's own distribution, or the offline mirror):
``Images/*.jpg``, ``Flickr8k.token.txt`` (``<image>.jpg#<k>\\t<caption>``) and the
official splits ``Flickr_8k.{train,dev,test}Images.txt``.

COCO captions format: ``captions_<split>*.json`` (under the folder or its
``annotations/``) with ``images: [{id, file_name}]`` and
``annotations: [{image_id, caption}]``, and the images in ``<split>*/`` or ``images/``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from lightning_modules.pretrained import backbone as make_backbone
from lightning_modules.runs import DataError, RunError, atomic_path, echo, load_checkpoint, write_text

from .common import (
    DEFAULT_CACHE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ShardedBatchSampler,
    ShardedDataModule,
    resolve_dataset_dir,
)

SPLITS = ("train", "dev", "test")
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_TOKENS = "Flickr8k.token.txt"
# Bump when the feature computation changes, so old caches are not reused.
FEATURE_FORMAT = 2


# --------------------------------------------------------------------------- captions


def tokenize(caption: str) -> list[str]:
    """Lower-cased words; punctuation dropped (as the standard caption tokenizers do)."""
    return re.findall(r"[a-z0-9]+", caption.lower())


@dataclass
class CaptionSplit:
    """One split: image files and the reference captions of each (raw strings)."""

    image_dir: Path
    names: list[str]
    captions: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.captions):
            raise ValueError(f"CaptionSplit: {len(self.names)} images but {len(self.captions)} caption lists")

    @property
    def paths(self) -> list[Path]:
        return [self.image_dir / name for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> CaptionSplit:
        return CaptionSplit(self.image_dir, [self.names[i] for i in indices], [self.captions[i] for i in indices])


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"flickr8k: {path} is missing")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_flickr8k(root: str | os.PathLike) -> dict[str, CaptionSplit]:
    """The official train/dev/test splits of Flickr8k found in `root`."""
    root = Path(root)
    image_dir = root / "Images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"flickr8k: {root} has no Images/ folder")
    by_image: dict[str, list[str]] = collections.defaultdict(list)
    for n, line in enumerate(_read_lines(root / FLICKR8K_TOKENS), 1):
        key, sep, caption = line.partition("\t")
        if not sep or "#" not in key:
            raise ValueError(f"flickr8k: {root / FLICKR8K_TOKENS}:{n} is not '<image>#<k><TAB><caption>'")
        by_image[key.split("#", 1)[0]].append(caption.strip())
    splits = {}
    for split, filename in FLICKR8K_SPLIT_FILES.items():
        names = _read_lines(root / filename)
        missing = [name for name in names if name not in by_image]
        if missing:
            raise ValueError(f"flickr8k: {len(missing)} {split} images have no captions, e.g. {missing[0]}")
        absent = [name for name in names if not (image_dir / name).is_file()]
        if absent:
            raise FileNotFoundError(f"flickr8k: {len(absent)} {split} images are missing, e.g. {image_dir / absent[0]}")
        splits[split] = CaptionSplit(image_dir, names, [by_image[name] for name in names])
    return splits


def load_coco_captions(annotation_file: str | os.PathLike, image_dir: str | os.PathLike) -> CaptionSplit:
    """One COCO-format caption file (``images`` + ``annotations``) and its image folder."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"coco captions: {annotation_file} is missing")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"coco captions: image folder {image_dir} is missing")
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
        files = {int(img["id"]): str(img["file_name"]) for img in data["images"]}
        by_id: dict[int, list[str]] = collections.defaultdict(list)
        for ann in data["annotations"]:
            by_id[int(ann["image_id"])].append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"coco captions: {annotation_file} is not a COCO captions file ({err!r})") from err
    ids = sorted(i for i in files if by_id.get(i))
    if not ids:
        raise ValueError(f"coco captions: {annotation_file} has no captioned images")
    absent = [files[i] for i in ids if not (image_dir / files[i]).is_file()]
    if absent:
        raise FileNotFoundError(f"coco captions: {len(absent)} images are missing, e.g. {image_dir / absent[0]}")
    return CaptionSplit(image_dir, [files[i] for i in ids], [by_id[i] for i in ids])


def load_coco_folder(root: str | os.PathLike) -> dict[str, CaptionSplit]:
    """COCO-format splits in `root`: ``captions_<split>*.json`` for train, dev (or val) and test."""
    root = Path(root)
    splits = {}
    for split in SPLITS:
        aliases = (split, "val") if split == "dev" else (split,)
        found = [
            p
            for alias in aliases
            for folder in (root, root / "annotations")
            for p in sorted(folder.glob(f"captions_{alias}*.json"))
        ]
        if not found:
            continue
        annotation = found[0]
        stem = annotation.stem[len("captions_") :]  # e.g. "train2014"
        candidates = [root / stem, root / "images" / stem, root / "images"]
        image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        splits[split] = load_coco_captions(annotation, image_dir)
    if "train" not in splits:
        raise FileNotFoundError(f"coco captions: no captions_train*.json in {root} or {root / 'annotations'}")
    return splits


def load_captions(root: str | os.PathLike | None, fmt: str = "flickr8k") -> dict[str, CaptionSplit]:
    """Splits of a caption data set: `fmt` is "flickr8k" or "coco".

    `root` None means $CUSTOMOPS_MIRROR/<fmt>. Flickr8k is distributed only
    after a request form, so there is nothing to download automatically.
    """
    if fmt not in ("flickr8k", "coco"):
        raise ValueError(f"captions: format must be 'flickr8k' or 'coco', got {fmt!r}")
    root = resolve_dataset_dir(fmt, root)
    if root is None:
        raise FileNotFoundError(
            f"{fmt}: no data folder given and $CUSTOMOPS_MIRROR is unset; request Flickr8k from "
            "https://hockenmaier.cs.illinois.edu/DenotationGraph/ (or use COCO captions) and pass its folder"
        )
    return load_flickr8k(root) if fmt == "flickr8k" else load_coco_folder(root)


# --------------------------------------------------------------------------- vocabulary


@dataclass
class Vocabulary:
    """Word <-> id. Ids 0..3 are ``<NULL>`` (padding), ``<START>``, ``<END>``, ``<UNK>``."""

    words: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    NULL = "<NULL>"
    START = "<START>"
    END = "<END>"
    UNK = "<UNK>"
    SPECIALS = (NULL, START, END, UNK)
    null_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __post_init__(self) -> None:
        if tuple(self.words[:4]) != self.SPECIALS:
            raise ValueError(f"Vocabulary: the first words must be {self.SPECIALS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("Vocabulary: words must be unique")
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """Words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        if min_count < 1:
            raise ValueError(f"Vocabulary.build: min_count must be >= 1, got {min_count}")
        counts = collections.Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(cls.SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_words: int | None = None) -> list[int]:
        """``<START> w1 .. wk <END>`` ids, with at most `max_words` words (the rest cut)."""
        ids = [self.index.get(w, self.unk_id) for w in tokenize(caption)]
        if max_words is not None:
            ids = ids[:max_words]
        return [self.start_id, *ids, self.end_id]

    def encode_batch(self, captions: Sequence[str], max_words: int) -> torch.Tensor:
        """(M, max_words + 2) int64 ids, padded with ``<NULL>``."""
        out = torch.full((len(captions), max_words + 2), self.null_id, dtype=torch.long)
        for i, caption in enumerate(captions):
            ids = self.encode(caption, max_words)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first ``<END>``; ``<NULL>`` and ``<START>`` skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.null_id, self.start_id):
                continue
            words.append(self.words[i])
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Vocabulary: {path} is missing")
        try:
            words = json.loads(path.read_text(encoding="utf-8"))["words"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"Vocabulary: {path} is not a saved vocabulary ({err!r})") from err
        return cls(list(words))


# --------------------------------------------------------------------------- image features


class _ImageFiles(Dataset):
    """Decoded, resized and ImageNet-normalised images: each (3, size, size) float32, with "" or,
    for a file that cannot be decoded, the reason (raised by the reader, which names the file:
    an error raised inside a loader worker would reach it wrapped in the worker's traceback)."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = list(paths)
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

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
        if image.shape[-2:] != (self.size, self.size):
            image = TF.resize(image, [self.size, self.size], antialias=True)
        return (image.float() / 255.0 - self.mean) / self.std, ""


POOLINGS = ("mean", "grid")


def feature_cache_key(
    paths: Sequence[Path], backbone: str, weights: str | None, image_size: int, pooling: str = "mean"
) -> str:
    """Hash of everything the features depend on: backbone, weights, pooling and the image list (names and sizes)."""
    h = hashlib.sha256()
    h.update(
        json.dumps([FEATURE_FORMAT, backbone, weights, image_size] + ([] if pooling == "mean" else [pooling])).encode()
    )
    for p in paths:
        h.update(f"\n{p.name}\t{p.stat().st_size}".encode())
    return h.hexdigest()[:20]


def _cache_file(
    cache_dir: str | os.PathLike, backbone: str, weights: str | None, image_size: int, pooling: str, key: str
) -> Path:
    kind = "" if pooling == "mean" else f"{pooling}-"
    return Path(cache_dir) / "features" / f"{backbone}-{weights or 'random'}-{image_size}-{kind}{key}.pt"


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


def extract_features(
    paths: Sequence[Path],
    backbone: str = "mobilenet_v2",
    weights: str | None = "imagenet",
    cache_dir: str | os.PathLike = DEFAULT_CACHE,
    batch_size: int = 64,
    image_size: int = 224,
    device: torch.device | str | None = None,
    progress: bool = True,
    pooling: str = "mean",
    num_workers: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """CNN features of the images, cached in ``<cache_dir>/features/``.

    pooling "mean": globally average-pooled, (M, C) float32; "grid": the last feature map's
    positions, (M, h*w, C) in float16 (a 7x7 grid of 1280 channels is 125 KB per image).
    One pass over the images computes and caches both, so the other pooling is then read from
    the cache too. The pass is built for inference: ``torch.inference_mode`` and channels-last
    tensors (on 2 CPU cores MobileNetV2 runs 75 images/s channels-last against 40 contiguous).
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
    keys = {pool: feature_cache_key(paths, backbone, weights, image_size, pool) for pool in POOLINGS}
    files = {pool: _cache_file(cache_dir, backbone, weights, image_size, pool, keys[pool]) for pool in POOLINGS}
    found = _read_cache(files[pooling], keys[pooling], len(paths))
    if found is not None:
        return found
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    trunk, channels = make_backbone(backbone, weights)
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()
    if num_workers is None:
        num_workers = 0 if device.type == "cpu" else 2
    loader = DataLoader(_ImageFiles(paths, image_size), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks: dict[str, list[torch.Tensor]] = {pool: [] for pool in POOLINGS}
    start = time.perf_counter()
    with torch.inference_mode():
        for batch, (images, errors) in enumerate(
            tqdm(loader, desc=f"{backbone} features", unit="batch", disable=not progress)
        ):
            for k, reason in enumerate(errors):
                if reason:
                    path = paths[batch * batch_size + k]
                    raise DataError(
                        f"extract_features: cannot decode image {path} ({reason}): replace or delete the file"
                    )
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            maps = trunk(images).float()  # (B, C, h, w)
            chunks["mean"].append(maps.mean(dim=(2, 3)).cpu())  # (B, C)
            chunks["grid"].append(maps.flatten(2).transpose(1, 2).half().cpu())  # (B, h*w, C)
    seconds = time.perf_counter() - start
    result = None
    for pool in POOLINGS:
        features = torch.cat(chunks[pool]).contiguous()  # (M, C) or (M, h*w, C)
        assert features.shape[0] == len(paths) and features.shape[-1] == channels
        meta = {
            "key": keys[pool],
            "backbone": backbone,
            "weights": weights,
            "image_size": image_size,
            "pooling": pool,
            "num_images": len(paths),
            "seconds": seconds,
            "images_per_s": len(paths) / seconds,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "decode_workers": num_workers,
        }
        with atomic_path(files[pool]) as tmp:
            torch.save({"features": features, "meta": meta}, tmp)
        if pool == pooling:
            result = features, {**meta, "cached": False, "file": str(files[pool])}
    return result


# --------------------------------------------------------------------------- datamodule


class CaptionPairs(Dataset):
    """(image feature, caption) pairs: feature (C,) float32, caption (L,) int64."""

    def __init__(self, features: torch.Tensor, image_index: torch.Tensor, captions: torch.Tensor):
        self.features, self.image_index, self.captions = features, image_index, captions

    def __len__(self) -> int:
        return self.captions.shape[0]

    def __getitem__(self, i: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair, or a whole batch for a list of indices: features (B, C), captions (B, L)."""
        return self.features[self.image_index[i]], self.captions[i]


class LengthBucketBatchSampler(ShardedBatchSampler):
    """Batches of captions of similar length, so little compute goes to padding; sharded across ranks.

    Each epoch (seeded by ``seed + epoch``, the same on every rank): shuffle, cut into pools of
    `pool` global batches, sort each pool by length, split it into global batches of
    ``batch_size * num_replicas`` captions, and shuffle the batches; each rank then takes its
    part of every global batch (see ``ShardedBatchSampler``).
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        pool: int = 50,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        size: int | None = None,
    ):
        super().__init__(len(lengths), batch_size, shuffle, seed, num_replicas, rank)
        if size is not None and size != len(lengths):
            raise ValueError(f"LengthBucketBatchSampler: size {size} but {len(lengths)} lengths")
        self.lengths, self.pool = lengths, pool

    def global_batches(self) -> list[torch.Tensor]:
        g = self.generator()
        n, per_batch = len(self.lengths), self.batch_size * self.num_replicas
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        batches: list[torch.Tensor] = []
        for chunk in order.split(per_batch * self.pool):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(per_batch))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        return batches


def caption_pairs(features: torch.Tensor, split: CaptionSplit, vocab: Vocabulary, max_words: int) -> CaptionPairs:
    """Every (image, reference caption) pair of a split."""
    image_index = torch.tensor([i for i, refs in enumerate(split.captions) for _ in refs], dtype=torch.long)
    captions = vocab.encode_batch([c for refs in split.captions for c in refs], max_words)  # (M, max_words + 2)
    return CaptionPairs(features, image_index, captions)


class CaptionDataModule(ShardedDataModule):
    """Caption splits, vocabulary (from training captions only) and cached image features.

    Args:
        root: the data set folder; default ``$CUSTOMOPS_MIRROR/<fmt>``.
        cache_dir: the image features are cached in ``<cache_dir>/features/``.
        batch_size: captions per batch and device.
        seed / shuffle: the training batches' order (see ``ShardedDataModule``).
        images: only these splits, each cut to its first n images (``{"train": 100}``: the first 100
            training images, no dev or test); None: every split whole. Features are extracted for
            these images only; the vocabulary still comes from every training caption.
        pooling: "mean" (one feature vector per image, for the RNN/LSTM) or "grid" (the feature map's
            positions, for the attention captioner); see ``extract_features``.

    ``prepare_data`` extracts the features once (one process per machine); ``setup`` reads them.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        fmt: str = "flickr8k",
        backbone: str = "mobilenet_v2",
        weights: str | None = "imagenet",
        cache_dir: str | os.PathLike = DEFAULT_CACHE,
        image_size: int = 224,
        min_count: int = 5,
        max_words: int = 16,
        batch_size: int = 128,
        feature_batch_size: int = 64,
        vocab: Vocabulary | None = None,
        progress: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        images: dict[str, int] | None = None,
        pooling: str = "mean",
    ):
        super().__init__(seed=seed, shuffle=shuffle)
        if pooling not in POOLINGS:
            raise ValueError(f"CaptionDataModule: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if max_words < 1 or batch_size < 1:
            raise ValueError(f"CaptionDataModule: max_words and batch_size must be >= 1, got {max_words}, {batch_size}")
        self.root, self.fmt = root, fmt
        self.backbone, self.weights, self.cache_dir, self.image_size = backbone, weights, cache_dir, image_size
        self.min_count, self.max_words, self.batch_size = min_count, max_words, batch_size
        self.feature_batch_size, self.progress = feature_batch_size, progress
        self.vocab = vocab
        self.images = images
        self.splits: dict[str, CaptionSplit] = {}
        self.features: dict[str, torch.Tensor] = {}
        self.feature_meta: dict[str, dict] = {}

    def _features(self, split: CaptionSplit) -> tuple[torch.Tensor, dict]:
        return extract_features(
            split.paths,
            self.backbone,
            self.weights,
            self.cache_dir,
            batch_size=self.feature_batch_size,
            image_size=self.image_size,
            progress=self.progress,
            pooling=self.pooling,
        )

    def _selected(self, splits: dict[str, CaptionSplit]) -> dict[str, CaptionSplit]:
        if self.images is None:
            return splits
        missing = sorted(set(self.images) - set(splits))
        if missing:
            raise DataError(f"CaptionDataModule: the data set has no {missing} split (has {sorted(splits)})")
        return {name: splits[name].subset(range(min(n, len(splits[name])))) for name, n in self.images.items()}

    def prepare_data(self) -> None:
        for split in self._selected(load_captions(self.root, self.fmt)).values():
            self._features(split)

    def setup(self, stage: str | None = None) -> None:
        if self.features:
            return
        splits = load_captions(self.root, self.fmt)
        if self.vocab is None:
            self.vocab = Vocabulary.build((c for refs in splits["train"].captions for c in refs), self.min_count)
        self.splits = self._selected(splits)
        for name, split in self.splits.items():
            self.features[name], self.feature_meta[name] = self._features(split)

    def pairs(self, split: str) -> CaptionPairs:
        if split not in self.splits:
            raise ValueError(f"CaptionDataModule: no {split!r} split (have {sorted(self.splits)})")
        return caption_pairs(self.features[split], self.splits[split], self.vocab, self.max_words)

    def _loader(self, split: str, train: bool) -> DataLoader:
        pairs = self.pairs(split)
        lengths = (pairs.captions != self.vocab.null_id).sum(1)  # (M,) tokens per caption
        sampler = self.batch_sampler(len(pairs), self.batch_size, train, cls=LengthBucketBatchSampler, lengths=lengths)
        # The pairs take a whole index list at once: a batch is one tensor gather.
        return DataLoader(pairs, sampler=sampler, batch_size=None, generator=self.loader_generator())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
