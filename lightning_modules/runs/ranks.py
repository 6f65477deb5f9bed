"""This process's place in a distributed run, rank-zero output and seeding."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


def env_global_rank() -> int:
    """This process's global rank as the launcher announced it (0 when not distributed).

    Read from the environment, so it is right before any Trainer exists: torchrun and SLURM set
    RANK / SLURM_PROCID; Lightning's own launcher sets LOCAL_RANK and, across machines, NODE_RANK.
    Only "zero or not" matters to the callers.
    """
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    return local if node == 0 else node * 1_000_000 + local


def is_global_zero() -> bool:
    return env_global_rank() == 0 and rank_zero_only.rank == 0


def echo(*parts: Any) -> None:
    """print() on global rank zero only, flushed (so logs of DDP runs hold each line once)."""
    if is_global_zero():
        print(*parts, flush=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and the data-loader workers) the same way in every process."""
    pl.seed_everything(seed, workers=True, verbose=False)
