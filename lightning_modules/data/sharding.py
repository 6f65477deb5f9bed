"""Batches sharded across distributed ranks that can resume in the middle of an epoch, and the
DataModule base class that serves them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


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


class ResumableLoader(DataLoader):
    """A training DataLoader that Lightning sees as resumable: it has the ``state_dict`` /
    ``load_state_dict`` protocol Lightning checks for (as torchdata's StatefulDataLoader does), so a
    mid-epoch resume is not warned about as unreliable.

    Its state is the training position (epoch, batches done), read from the trainer's progress rather
    than counted here (Lightning fetches a batch ahead). Lightning restores the DataModule's state
    before it builds the loaders (``ShardedDataModule.load_state_dict``), and a loader built for
    estimating the steps may be the one that trains, so the position is applied there; restoring it
    here again, where Lightning does, sets the same skip.
    """

    def __init__(self, *args: Any, position: Callable[[], dict[str, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position = position

    def state_dict(self) -> dict[str, int]:
        return self._position()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            # Lightning creates the loader's iterator before it sets the epoch: set it now.
            self.sampler.set_epoch(state_dict["epoch"])
            self.sampler.skip_batches(state_dict["epoch"], state_dict["batches_done"])


class ShardedDataModule(pl.LightningDataModule):
    """A DataModule whose loaders shard their batches across ranks and resume mid-epoch.

    Subclasses build their loaders with ``self.loader(dataset, self.batch_sampler(...), train)``; the
    run's rank and world size come from the trainer. The training loader is a ``ResumableLoader``:
    its position (epoch, batches done) goes into the checkpoint, and a run resumed from it skips the
    batches it has already trained on.
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
        """This rank's batches of a split of `size` samples; `train` shuffles (if asked)."""
        world, rank = self._ranks()
        return cls(
            size=size,
            batch_size=batch_size,
            shuffle=train and self.shuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            **kwargs,
        )

    def loader(self, dataset: Dataset, sampler: ShardedBatchSampler, train: bool, **kwargs: Any) -> DataLoader:
        """A loader of whole batches (``batch_size=None``: the dataset takes each index list at once);
        for training, resumable mid-epoch."""
        options = {"sampler": sampler, "batch_size": None, "generator": self.loader_generator(), **kwargs}
        if not train:
            return DataLoader(dataset, **options)
        loader = ResumableLoader(dataset, position=self._position, **options)
        loader.load_state_dict(self._resume)  # a resumed run's position, restored before the loader existed
        self._resume = {}
        return loader

    def loader_generator(self) -> torch.Generator:
        """A DataLoader's own generator: creating an iterator (every epoch) then draws its worker seed
        from it instead of the global random state, so a resumed run's augmentation draws match."""
        return torch.Generator().manual_seed(self.seed)

    def state_dict(self) -> dict[str, int]:
        return self._position()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict)

    def _position(self) -> dict[str, int]:
        """The training position: the epoch and the batches trained on in it (empty outside fit)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches_done": progress.processed}
