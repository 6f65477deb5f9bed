"""Batches sharded across distributed ranks that can resume in the middle of an epoch, and the
DataModule base class that serves them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import Dataset, Sampler, default_collate


class ShardedBatchSampler(Sampler[list[int]]):
    """Index batches for one rank: the same global batches on every rank, each split between the ranks.

    Each epoch draws the global batches (of ``batch_size * num_replicas`` indices) from a
    generator seeded with ``seed + epoch``, identically on every rank; rank r takes the r-th
    contiguous part of each. So the ranks see distinct samples and the same number of batches,
    and one step of ``num_replicas`` ranks with per-rank batch B sees exactly the samples one
    process sees with batch ``B * num_replicas``. A global batch too small to give every rank a
    sample is dropped (fewer than ``num_replicas`` samples an epoch).

    ``skip_batches(epoch, n)`` makes the iteration of that epoch start at its (n+1)-th batch:
    how a run resumed from a mid-epoch checkpoint continues where it stopped.
    Subclasses change how the global batches are drawn (``global_batches``).
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if batch_size < 1 or size < 0:
            raise ValueError(f"{type(self).__name__}: need batch_size >= 1 and size >= 0, got {batch_size}, {size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"{type(self).__name__}: rank {rank} is not in [0, {num_replicas})")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._skip: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: a new order per epoch, the same on every rank."""
        self.epoch = epoch

    def skip_batches(self, epoch: int, n: int) -> None:
        self._skip = {epoch: n}

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's global batches, each of up to batch_size * num_replicas indices."""
        order = torch.randperm(self.size, generator=self.generator()) if self.shuffle else torch.arange(self.size)
        return list(order.split(self.batch_size * self.num_replicas))

    def _kept(self) -> list[torch.Tensor]:
        return [b for b in self.global_batches() if len(b) >= self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        skip = self._skip.pop(self.epoch, 0)
        for batch in self._kept()[skip:]:
            yield batch.tensor_split(self.num_replicas)[self.rank].tolist()

    def __len__(self) -> int:
        return len(self._kept())


class BatchedDataset(Dataset):
    """Serves a whole batch per index list: ``ds[[i, j, ...]]`` -> the collated items.

    With ``DataLoader(BatchedDataset(ds), sampler=batch_sampler, batch_size=None)`` Lightning
    finds the batch sampler as the loader's sampler and sets its epoch.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]):
        return default_collate([self.dataset[i] for i in indices])


class ShardedDataModule(pl.LightningDataModule):
    """A DataModule whose loaders shard their batches across ranks and resume mid-epoch.

    Subclasses build their loaders with ``self.batch_sampler(...)``; the run's rank and world
    size come from the trainer. The training position (epoch, batches done) goes into the
    checkpoint, and a run resumed from it skips the batches it has already trained on.
    """

    def __init__(self, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        self.seed = seed
        self.shuffle = shuffle  # of the training batches (evaluation keeps the data's order)
        self._resume: dict[str, int] = {}

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def batch_sampler(
        self, size: int, batch_size: int, train: bool, cls=ShardedBatchSampler, **kwargs: Any
    ) -> ShardedBatchSampler:
        """This rank's batches of a split of `size` samples; `train` shuffles (if asked) and resumes."""
        world, rank = self._ranks()
        sampler = cls(
            size=size,
            batch_size=batch_size,
            shuffle=train and self.shuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            **kwargs,
        )
        if train and self._resume:
            # Lightning creates the loader's iterator before it sets the epoch: set it now.
            sampler.set_epoch(self._resume["epoch"])
            sampler.skip_batches(self._resume["epoch"], self._resume["batches_done"])
            self._resume = {}
        return sampler

    def loader_generator(self) -> torch.Generator:
        """A DataLoader's own generator: creating an iterator (every epoch) then draws its worker seed
        from it instead of the global random state, so a resumed run's augmentation draws match."""
        return torch.Generator().manual_seed(self.seed)

    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches_done": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict)
