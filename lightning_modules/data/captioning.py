"""The captioning DataModules: (image feature, caption) pairs of each split, batched by caption
length and sharded across ranks (``CaptionDataModule``); and the full batches of the overfit check
(``OverfitDataModule``)."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_modules.runs.errors import DataError

from .captions import CaptionSplit, load_captions
from .features import POOLINGS, extract_features
from .sharding import ShardedBatchSampler, ShardedDataModule
from .vocabulary import Vocabulary


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
        trunk: the backbone's layers, "customops" (converted) or "native" (torchvision's, for comparison).

    ``prepare_data`` extracts the features once (one process per machine); ``setup`` reads them.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        fmt: str = "flickr8k",
        backbone: str = "mobilenet_v2",
        weights: str | None = "imagenet",
        cache_dir: str | os.PathLike | None = None,
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
        trunk: str = "customops",
    ):
        super().__init__(seed=seed, shuffle=shuffle)
        if pooling not in POOLINGS:
            raise ValueError(f"CaptionDataModule: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling, self.trunk = pooling, trunk
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
            trunk=self.trunk,
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

    def feature_report(self) -> dict[str, dict]:
        """Each split's feature extraction: backbone, trunk, images, seconds, device, threads, cached or not."""
        keys = ("backbone", "trunk", "weights", "num_images", "seconds", "device", "threads", "cached")
        return {
            split: {k: meta[k] for k in keys if k in meta}
            | ({"images_per_s": round(meta["images_per_s"], 1)} if "images_per_s" in meta else {})
            for split, meta in self.feature_meta.items()
        }

    def pairs(self, split: str) -> CaptionPairs:
        if split not in self.splits:
            raise ValueError(f"CaptionDataModule: no {split!r} split (have {sorted(self.splits)})")
        return caption_pairs(self.features[split], self.splits[split], self.vocab, self.max_words)

    def _loader(self, split: str, train: bool) -> DataLoader:
        pairs = self.pairs(split)
        lengths = (pairs.captions != self.vocab.null_id).sum(1)  # (M,) tokens per caption
        sampler = self.batch_sampler(len(pairs), self.batch_size, train, cls=LengthBucketBatchSampler, lengths=lengths)
        # The pairs take a whole index list at once: a batch is one tensor gather.
        return self.loader(pairs, sampler, train)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class RepeatedPairs(CaptionPairs):
    """The pairs `repeats` times over (index i is pair i % n), a whole batch per index list."""

    def __init__(self, pairs: CaptionPairs, repeats: int):
        super().__init__(pairs.features, pairs.image_index, pairs.captions)
        self.n, self.repeats = len(pairs.captions), repeats

    def __len__(self) -> int:
        return self.n * self.repeats

    def __getitem__(self, i):
        return super().__getitem__(torch.as_tensor(i) % self.n)


class OverfitDataModule(ShardedDataModule):
    """Full batches of the few overfit captions, `steps` per epoch; the ranks split each batch."""

    def __init__(self, pairs: CaptionPairs, steps: int, seed: int):
        super().__init__(seed=seed)
        self.pairs, self.steps = pairs, steps

    def train_dataloader(self) -> DataLoader:
        world, _ = self._ranks()
        data = RepeatedPairs(self.pairs, self.steps)
        per_rank = max(1, len(self.pairs.captions) // world)
        return self.loader(data, self.batch_sampler(len(data), per_rank, train=True), train=True)
