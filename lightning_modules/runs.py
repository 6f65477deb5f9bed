"""Run support shared by every training script, written once.

- atomic writes: ``atomic_path`` (a unique temporary file beside the target, renamed into place
  on success), ``write_text``, ``write_json`` (strict JSON: no NaN), ``save_figure``;
- run folders: ``RunFolder`` builds a run's outputs in ``.<name>.partial/`` beside the target
  and moves the finished folder into place, so a killed run never leaves old and new files
  mixed; ``--resume`` continues from the partial folder's last checkpoint;
- seeding (``seed_everything``), rank-zero output (``echo``, ``is_global_zero``);
- the Lightning pieces every script uses the same way: the standard command-line flags
  (``add_run_args``) and the argparse types that validate options up front, loggers, checkpoints
  (read only with ``weights_only=True``: ``load_checkpoint``, ``load_module``), ``make_trainer``
  (which stops a run whose loss is not finite), metrics read back from the CSV log, learning
  curves, and the run record written into every ``results.json``;
- errors the user fixes (``RunError``): ``cli`` reports them in one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.metadata
import json
import math
import os
import pickle
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = PROJECT_ROOT / "runs"
DEFAULT_CACHE = PROJECT_ROOT / "data"


# --------------------------------------------------------------------------- errors the user fixes


class RunError(RuntimeError):
    """A problem with a run's inputs or its course that the user fixes (missing or corrupt data, an
    unsafe file, a diverged training). The message names the file, option or step and says what to
    do; the scripts print it in one line, without a traceback (``cli``)."""


class DataError(RunError, ValueError):
    """A data file is unreadable, truncated or corrupt, or a data set cannot be had."""


class UnsafeFileError(RunError):
    """A file refused because loading it would unpickle arbitrary objects (which can run code)."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or infinite."""


def cli(main: Callable[[], Any], prog: str) -> None:
    """Run a script's ``main``; an error the user fixes ends it with one line on stderr and status 1."""
    try:
        main()
    except (RunError, FileNotFoundError) as err:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Stop the process group's threads first: left running at exit, they abort the process.
            torch.distributed.destroy_process_group()
        sys.exit(f"{prog}: error: {err}")


# --------------------------------------------------------------------------- ranks and seeds


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


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary path beside `path`; rename it onto `path` when the block succeeds.

    The name is unique per process, so ranks or runs writing the same file never share a
    temporary file; whoever renames last wins, and readers only ever see a whole file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (NaN or infinity is an error, not an unreadable file), written atomically."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- run folders


class RunFolder:
    """A run's output folder, published all at once.

    Everything is written into ``work`` (``<out>/../.<name>.partial``). ``publish()`` (called on
    leaving the ``with`` block without an error) moves a previous ``out`` aside, renames ``work``
    to ``out`` and deletes the old one, so ``out`` holds either the previous run or the new one,
    never a mixture (a publish cut between its two renames is finished by the next run). A failed
    or killed run leaves ``work`` for ``--resume``. Only global rank
    zero creates, clears or publishes; the other ranks only learn the paths.
    """

    def __init__(self, out: str | os.PathLike, resume: bool = False) -> None:
        self.out = Path(out).resolve()
        self.work = self.out.parent / f".{self.out.name}.partial"
        self.resume = resume

    # Every run writes one of these; a folder without any was not written by a run.
    RESULT_FILES = ("results.json", "benchmark.json")

    @property
    def old(self) -> Path:
        """Where ``publish`` moves the previous run while it renames ``work`` into place."""
        return self.out.parent / f".{self.out.name}.old"

    def _finish_cut_publish(self) -> None:
        """A kill during ``publish`` leaves ``old``: finish that publish (``work`` was a finished run)."""
        if not self.out.exists():
            os.replace(self.work if self.work.is_dir() else self.old, self.out)
        shutil.rmtree(self.old, ignore_errors=True)

    def __enter__(self) -> RunFolder:
        if is_global_zero():
            if self.old.exists():
                self._finish_cut_publish()
            if (
                self.out.is_dir()
                and any(self.out.iterdir())
                and not any((self.out / name).is_file() for name in self.RESULT_FILES)
            ):
                # Publishing replaces the whole folder: never a folder that is not a run's (--out reports/).
                raise FileExistsError(
                    f"{self.out} is not a run folder (it has no {' or '.join(self.RESULT_FILES)}); "
                    "refusing to replace it: choose another --out"
                )
            if self.work.exists() and not self.resume:
                shutil.rmtree(self.work)  # a stale, abandoned attempt
            for stray in self.work.rglob(".*.tmp*"):
                stray.unlink()  # a file a killed attempt was writing (atomic_path's temporaries)
            self.work.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not is_global_zero():
            return
        if exc_type is None:
            self.publish()
        elif self.work.is_dir() and not any(self.work.iterdir()):
            self.work.rmdir()  # failed before writing anything: nothing to resume

    def publish(self) -> Path:
        if self.old.exists():
            shutil.rmtree(self.old)
        if self.out.exists():
            os.replace(self.out, self.old)
        os.replace(self.work, self.out)
        shutil.rmtree(self.old, ignore_errors=True)
        return self.out


def default_out(*parts: str) -> Path:
    """The git-ignored default output folder: runs/<task>/..."""
    return RUNS_DIR.joinpath(*parts)


# --------------------------------------------------------------------------- command line


# argparse ``type=`` functions: a bad value is an ``error:`` line naming the option, status 2,
# before any data is read.


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _number_type(kind: type, accept: Callable[[Any], bool], wanted: str, name: str) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` for which `accept` holds, else "must be <wanted>, got <text>"."""

    def parse(text: str):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = name
    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer", "positive_int")
nonnegative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0", "nonnegative_int")
# Learning rates, factors, time limits.
positive_float = _number_type(float, lambda v: v > 0, "a finite number > 0", "positive_float")
nonnegative_float = _number_type(float, lambda v: v >= 0, "a finite number >= 0", "nonnegative_float")
# Dropout, momentum.
probability = _number_type(float, lambda v: 0 <= v < 1, "in [0, 1)", "probability")


def batch_limit(text: str) -> int | float:
    """Lightning's limit_*_batches: a fraction in (0, 1] of the batches (1 or 1.0: all) or a count > 1."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or a number of batches >= 1, got {text}")
    if value <= 1:
        return value
    if value != int(value):
        raise argparse.ArgumentTypeError(f"a number of batches must be whole, got {text}")
    return int(value)


def _devices(value: str) -> int | str:
    if value.isdigit():
        return positive_int(value)
    return value


def add_run_args(
    parser: argparse.ArgumentParser, *, batch_size: int, num_workers: int = 0, out_help: str = "results folder"
) -> None:
    """The flags every training script shares, with Lightning's names and meanings."""
    g = parser.add_argument_group("run (the same on every script)")
    g.add_argument("--accelerator", default="auto", help="Lightning accelerator: cpu, gpu, auto, ...")
    g.add_argument(
        "--devices", type=_devices, default=1, help="devices per machine (an int, 'auto', or a list such as '0,1')"
    )
    g.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ddp_spawn, ...")
    g.add_argument("--num-nodes", type=positive_int, default=1, help="machines (with torchrun or SLURM, see README)")
    g.add_argument("--precision", default="32-true", help="Lightning precision: 32-true, bf16-mixed, 16-mixed, ...")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentation")
    g.add_argument("--batch-size", type=positive_int, default=batch_size, help="training batch size per device")
    g.add_argument(
        "--num-workers", type=nonnegative_int, default=num_workers, help="data-loader worker processes per device"
    )
    g.add_argument(
        "--data-root", default=None, help="where the data set is (default: $CUSTOMOPS_MIRROR/<data set>, else download)"
    )
    g.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the project keeps what it derives from the data (downloads, features)",
    )
    g.add_argument("--out", type=Path, default=None, help=f"{out_help} (default: under runs/, git-ignored)")
    g.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint"
    )
    g.add_argument(
        "--ckpt-every-n-steps",
        type=nonnegative_int,
        default=50,
        help="also save the last checkpoint every n training steps (mid-epoch resume)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


# --------------------------------------------------------------------------- trainer pieces


class RNGState(Callback):
    """Keeps the global torch and Python random states in the checkpoint.

    Resuming from a mid-epoch checkpoint then draws the same augmentation and dropout as the
    uninterrupted run would have (exactly so with in-process data loading).
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        return {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        torch.set_rng_state(state_dict["torch"])
        random.setstate((state_dict["python_version"], tuple(state_dict["python"]), state_dict["python_gauss"]))


class FiniteLoss(Callback):
    """Stops the training at the first loss that is NaN or infinite, before its backward pass.

    The check comes before any gradient or checkpoint of that step, so the last checkpoint is
    still a finite one. Under DDP the loss is summed over the ranks first (one scalar all-reduce
    per step), so every rank sees the same value and all stop together at the same step with
    the same error.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        if trainer.world_size > 1:
            value = trainer.strategy.reduce(value.clone(), reduce_op="sum")
        if not bool(torch.isfinite(value)):
            batch = trainer.fit_loop.epoch_loop.batch_progress.current.processed + 1
            raise NonFiniteLossError(
                f"the training loss is {float(value)} at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step + 1} (batch {batch} of the epoch): the training diverged; lower the "
                "learning rate (--lr) or check the inputs, and run again; nothing was published"
            )


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    A file holding pickled objects other than tensors and plain data is refused (loading it could
    run code) with ``UnsafeFileError``; an unreadable or truncated one raises ``DataError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; keep the line that says which object was refused.
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+", str(err))
        reason = f"it wants {found.group(1) or found.group(0)}" if found else "not a weights-only file"
        raise UnsafeFileError(
            f"{path}: refused to load this {what}: it holds pickled objects other than tensors and plain data, "
            f"which could run code ({reason}); delete it and re-create it with this project"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read this {what}, it is truncated or not a torch file "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); delete it"
        ) from err


def load_module(cls: type[pl.LightningModule], path: str | os.PathLike) -> pl.LightningModule:
    """``cls.load_from_checkpoint(path)`` on the CPU, the file checked first by ``load_checkpoint``."""
    load_checkpoint(path)
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)


def checkpoints(ckpt_dir: str | os.PathLike, monitor: str, mode: str, every_n_steps: int) -> list[ModelCheckpoint]:
    """best.ckpt (by `monitor`, overwritten, never best-v1.ckpt) and last.ckpt (every epoch, and
    every `every_n_steps` training steps, for a mid-epoch resume)."""
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    found = [best]
    if every_n_steps:
        found.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="last",
                every_n_train_steps=every_n_steps,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    return found


def loggers(folder: str | os.PathLike) -> list[Logger]:
    """CSV logs in ``<folder>/logs/version_<n>/`` always; TensorBoard logs in ``<folder>/tensorboard/``
    too where the optional ``tensorboard`` package is installed. Each attempt of a resumed run
    gets the next version, so no attempt's log overwrites another's (``read_metrics`` merges them)."""
    found: list[Logger] = [CSVLogger(folder, name="logs")]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        found.append(TensorBoardLogger(folder, name="tensorboard", default_hp_metric=False))
    except (ImportError, ModuleNotFoundError):
        pass
    return found


def fit(
    trainer: pl.Trainer, module: pl.LightningModule, folder: str | os.PathLike, resume: bool, **kwargs: Any
) -> None:
    """``trainer.fit``; with ``resume``, from ``<folder>/checkpoints/last.ckpt`` where a previous attempt
    left one. Checkpoints hold only plain data, so they are read with ``weights_only=True``."""
    last = Path(folder) / "checkpoints" / "last.ckpt"
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None:
        load_checkpoint(resume_from)  # a refused or truncated file is named, before Lightning reads it
    trainer.fit(module, ckpt_path=resume_from and str(resume_from), weights_only=True, **kwargs)


def make_trainer(
    args: argparse.Namespace, folder: str | os.PathLike, callbacks: list[Callback], max_epochs: int, **overrides: Any
) -> pl.Trainer:
    """A Trainer from the standard run flags. The data modules shard their own batches across
    ranks, so Lightning's DistributedSampler is off."""
    logged = overrides.get("logger", True) is not False
    options: dict[str, Any] = dict(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        max_epochs=max_epochs,
        logger=loggers(folder) if logged else False,
        default_root_dir=folder,
        callbacks=[
            *callbacks,
            RNGState(),
            FiniteLoss(),
            *([LearningRateMonitor(logging_interval="epoch")] if logged else []),
        ],
        use_distributed_sampler=False,
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    options["enable_checkpointing"] = any(isinstance(c, ModelCheckpoint) for c in options["callbacks"])
    options.update(overrides)
    return pl.Trainer(**options)


# --------------------------------------------------------------------------- metrics and curves


def read_metrics(folder: str | os.PathLike) -> list[dict[str, float]]:
    """Per-epoch rows ({"epoch": 1-based, metric: value}) from the CSV logs that ``loggers(folder)`` wrote.

    Step-level columns (``*_step``, ``lr-*``) are left out; the attempts of a resumed run are
    read in order, and where two logged the same epoch the later one wins.
    """
    files = sorted(Path(folder).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    epochs: dict[int, dict[str, float]] = {}
    for metrics_csv in files:
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"])) + 1
                for key, value in row.items():
                    if key in ("epoch", "step") or not value or key.endswith("_step") or key.startswith("lr-"):
                        continue
                    epochs.setdefault(epoch, {"epoch": epoch})[key.removesuffix("_epoch")] = float(value)
    return [epochs[e] for e in sorted(epochs)]


def plot_curves(
    histories: dict[str, list[dict[str, float]]],
    panels: list[tuple[str, str]],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """One panel per (metric, y label): train dashed, val solid, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels):
        for color, (label, rows) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], histories.items()):
            for split, style in (("train", "--"), ("val", "-")):
                points = [(r["epoch"], r[f"{split}_{metric}"]) for r in rows if f"{split}_{metric}" in r]
                if points:
                    ax.plot(*zip(*points), style, marker="o", color=color, label=f"{label} {split}".strip())
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- the run record


def git_commit() -> str | None:
    """The checked-out commit, with "-dirty" when tracked files have changed; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
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


def parameter_digests(module: torch.nn.Module) -> list[str]:
    """A SHA-256 of the module's parameters on each rank, gathered (one entry when not distributed).

    Equal digests prove that the ranks ended with bit-identical weights. Collective: every
    rank must call it.
    """
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if p.is_floating_point():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, digest)
        return [str(d) for d in gathered]
    return [digest]


def run_record(
    args: argparse.Namespace, trainer: pl.Trainer | None, wall_s: float, digests: list[str] | None = None
) -> dict[str, Any]:
    """What produced a result: command, commit, versions, devices, precision, seed and wall time."""
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(),
        "versions": {
            "python": platform.python_version(),
            **{p: _version(p) for p in ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "customops")},
        },
        "seed": args.seed,
        "batch_size_per_device": args.batch_size,
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


def relative(path: str | os.PathLike, start: str | os.PathLike) -> str:
    """`path` relative to `start` where it lies inside it (results stay machine-independent)."""
    path, start = Path(path).resolve(), Path(start).resolve()
    return str(path.relative_to(start)) if path.is_relative_to(start) else str(path)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
