"""The run record written into every ``results.json``: what produced a result (command, commit,
versions, devices, precision, seed, wall time, a digest of each rank's final weights)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

# git is asked about the checkout that holds this code (None where it was installed from a wheel).
SOURCE_DIR = Path(__file__).resolve().parent


def git_commit() -> str | None:
    """The checked-out commit, with "-dirty" when tracked files have changed; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=SOURCE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights: its state_dict without the states of its metrics (torchmetrics keeps its
    running sums in the state_dict too, and they are per rank and per attempt, not weights)."""
    from torchmetrics import Metric

    metric_prefixes = tuple(f"{name}." for name, m in module.named_modules() if name and isinstance(m, Metric))
    return {name: t for name, t in module.state_dict().items() if not name.startswith(metric_prefixes)}


def parameter_digests(module: torch.nn.Module) -> list[str]:
    """A SHA-256 of the module's weights (``weights``: parameters and buffers, no metric states) on
    each rank, gathered (one entry when not distributed).

    Equal digests prove that the ranks ended with bit-identical weights, and a resumed run that ends
    with the weights of an uninterrupted one has its digest. Collective: every rank must call it.
    """
    h = hashlib.sha256()
    for name, p in sorted(weights(module).items()):
        if p.is_floating_point():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())  # any dtype
    digest = h.hexdigest()[:16]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, digest)
        return [str(d) for d in gathered]
    return [digest]


def run_record(
    recipe: Any, trainer: pl.Trainer | None, wall_s: float, digests: list[str] | None = None
) -> dict[str, Any]:
    """What produced a result: command, commit, versions, devices, precision, seed and wall time."""
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(),
        "versions": {
            "python": platform.python_version(),
            **{p: _version(p) for p in ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "customops")},
        },
        "seed": recipe.seed,
        "batch_size_per_device": recipe.data.batch_size,
        "wall_time_s": round(wall_s, 2),
        "cpu_threads": torch.get_num_threads(),
    }
    if trainer is not None:
        record.update(
            {
                "world_size": trainer.world_size,
                "num_nodes": trainer.num_nodes,
                "devices_per_node": trainer.num_devices,
                "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
                "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision),
                "device": (
                    torch.cuda.get_device_name(trainer.strategy.root_device)
                    if trainer.strategy.root_device.type == "cuda"
                    else trainer.strategy.root_device.type
                ),
            }
        )
    if digests is not None:
        record["parameter_digest_per_rank"] = digests
        record["ranks_in_sync"] = len(set(digests)) == 1
    return record


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
