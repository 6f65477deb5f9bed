"""The Lightning pieces every program uses the same way: the Trainer factory and its callbacks
(random state in checkpoints, the stop at a non-finite loss, the clean stop on SIGTERM/SIGINT),
checkpoints written atomically, loggers, ``fit`` (with resume), ``fit_best`` (train one model and
keep its best epoch) and the per-epoch metrics read back from the CSV log."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_modules.runs import signals
from lightning_modules.runs.errors import NonFiniteLossError, RunError, Stopped, TimeLimitError
from lightning_modules.runs.ranks import is_global_zero
from lightning_modules.runs.record import Stopwatch, parameter_digests
from lightning_modules.runs.storage import load_checkpoint, write_bytes


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
    """Stops the training at the first loss that is NaN or infinite: a training loss before its
    backward pass, a validation loss at the end of its validation.

    The check comes before any gradient or checkpoint of that step (of that epoch: before the
    checkpoint callbacks, which Lightning runs last), so the last checkpoint is still a finite one.
    Under DDP the training loss is summed over the ranks first (one scalar all-reduce per step) and
    the validation loss is the metric synced over them, so every rank sees the same value and all
    stop together with the same error.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val_") and name.endswith("loss") and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"the validation loss ({name}) is {float(value)} after epoch {trainer.current_epoch + 1}, step "
                    f"{trainer.global_step}: the model diverged or overflows its precision; lower the learning rate "
                    "(--lr), use a wider --trainer.precision or check the inputs, and run again; nothing was published"
                )

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


def agreed_signal(trainer: pl.Trainer) -> int:
    """The stop signal received by any rank (0: none); collective under DDP (a scalar all-reduce)."""
    signum = signals.requested() or 0
    if trainer.world_size > 1:
        value = torch.tensor(signum, device=trainer.strategy.root_device)
        signum = int(trainer.strategy.reduce(value, reduce_op="max"))
    return signum


class CleanStop(Callback):
    """SIGTERM or SIGINT during a training (``runs.signals``): every rank stops at the end of the same
    optimizer step, `checkpoint` (last.ckpt, what ``--resume`` continues from) is saved, and
    ``Stopped`` is raised.

    Under DDP the ranks agree on it at each step (a scalar all-reduce of the signal), so a signal
    reaching any one rank stops them all within a step, and none waits in a collective the others
    left. The epoch's last step is not a stopping point (its validation and the epoch-end checkpoint
    follow; the next step, or the end of the training, is). From the training's start, this
    process's handler replaces the SIGTERM handler Lightning installs (which stops only the rank it
    reaches).
    """

    def __init__(self, checkpoint: str | os.PathLike | None) -> None:
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self._deferral: contextlib.ExitStack | None = None

    def _start(self, trainer: pl.Trainer) -> None:
        if self._deferral is None:  # once per fit
            self._deferral = contextlib.ExitStack()
            self._deferral.enter_context(signals.deferred())
            signals.reclaim()
        signum = agreed_signal(trainer)
        if signum:
            raise Stopped(signum, f"at epoch {trainer.current_epoch + 1}, step {trainer.global_step}", agreed=True)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not stepped or batch_idx + 1 >= trainer.num_training_batches:  # the same on every rank
            return
        signum = agreed_signal(trainer)
        if signum:
            if self.checkpoint is not None:
                trainer.save_checkpoint(
                    self.checkpoint
                )  # the full state --resume needs; every rank calls it, rank zero writes
            raise Stopped(signum, f"at epoch {trainer.current_epoch + 1}, step {trainer.global_step}", agreed=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._deferral is not None:
            self._deferral.close()
            self._deferral = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the checkpoint's own folder, flushed to disk, then
    renamed over the old one (``storage.write_bytes``): a kill, a full disk or a crash at any moment
    leaves the previous checkpoint whole. (Lightning's own writer stages the file in the system's
    temporary folder and, where that is another file system, copies it over the old checkpoint.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}: storage_options are not supported")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getbuffer(), durable=True)


# What each LightningModule's checkpoint holds among its hyper-parameters, and which program writes it.
_CHECKPOINT_KINDS = {
    "net": "a classifier (customops-digits, customops-transfer)",
    "cell": "a captioner (customops-captioning)",
}


class TimeLimit(Callback):
    """A guard, never part of a recipe: the training ends with ``TimeLimitError`` once this attempt has
    trained for `minutes`, rather than publishing the result of a shorter recipe.

    Recipes are fixed in epochs; a limit only stops a run that takes far longer than it should. When
    it is reached (checked after every training step) the checkpoint `last` is written at that step
    first, so ``--resume`` continues from there and nothing trained is lost. Under DDP rank zero's
    clock decides and every rank learns its decision (one broadcast per step), so all stop at the
    same step.
    """

    def __init__(self, minutes: float, last: str | os.PathLike, option: str = "--max_minutes") -> None:
        if not minutes > 0:
            raise ValueError(f"TimeLimit: minutes must be > 0, got {minutes}")
        self.minutes, self.last, self.option = minutes, Path(last), option
        self._clock: Stopwatch | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock = Stopwatch()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        reached = self._clock is not None and self._clock() >= 60 * self.minutes
        if trainer.world_size > 1:
            reached = trainer.strategy.broadcast(reached, src=0)
        if not reached:
            return
        trainer.save_checkpoint(self.last)
        raise TimeLimitError(
            f"stopped by {self.option} after {trainer.current_epoch} of {trainer.max_epochs} epochs; nothing "
            f"published (the limit: {self.minutes:g} min of training; {self.last} is kept at step "
            f"{trainer.global_step}: the same command with --resume continues from it)"
        )


def load_module(cls: type[pl.LightningModule], path: str | os.PathLike) -> pl.LightningModule:
    """``cls.load_from_checkpoint(path)`` on the CPU, the file checked first by ``load_checkpoint``; a
    checkpoint of another kind of module is named, with what it holds."""
    checkpoint = load_checkpoint(path)
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (TypeError, KeyError, ValueError, RuntimeError, AttributeError) as err:
        hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
        holds = next((kind for key, kind in _CHECKPOINT_KINDS.items() if key in hparams), "no model of this project")
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{path}: not a {cls.__name__} checkpoint: it holds {holds} ({reason})") from err


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


class _ContinuingWriter(ExperimentWriter):
    """The CSV writer of a resumed run: it keeps the rows already in metrics.csv and appends to them
    (Lightning's own writer deletes an existing file)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ContinuingCSVLogger(CSVLogger):
    """A CSVLogger whose version, when it exists already, is continued rather than replaced."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def _last_version(folder: Path) -> int | None:
    versions = [int(p.name.split("_")[1]) for p in folder.glob("version_*") if p.name.split("_")[1].isdigit()]
    return max(versions) if versions else None


def loggers(folder: str | os.PathLike, resume: bool = False) -> list[Logger]:
    """CSV logs in ``<folder>/logs/version_<n>/`` always; TensorBoard logs in ``<folder>/tensorboard/``
    too where the optional ``tensorboard`` package is installed. A resumed run continues the log
    version its interrupted attempt wrote, so one run is one log."""
    folder = Path(folder)
    version = _last_version(folder / "logs") if resume else None
    found: list[Logger] = [ContinuingCSVLogger(folder, name="logs", version=version)]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        tb_version = _last_version(folder / "tensorboard") if resume else None
        found.append(TensorBoardLogger(folder, name="tensorboard", version=tb_version, default_hp_metric=False))
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
    with signals.deferred():  # a signal stops the training cleanly (CleanStop)
        try:
            trainer.fit(module, ckpt_path=resume_from and str(resume_from), weights_only=True, **kwargs)
        except SIGTERMException:  # Lightning's own stop, should its handler have seen the signal first
            where = f"at epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
            raise Stopped(signal.SIGTERM, where) from None
        # One that came after the last step (during the last validation): stop here, every rank alike.
        signum = agreed_signal(trainer)
    if signum:
        raise Stopped(signum, f"at the end of epoch {trainer.current_epoch}, step {trainer.global_step}", agreed=True)


# Lightning prints its device banner ("GPU available: ...") as info on this logger, once per Trainer.
_LIGHTNING_INFO = "lightning_fabric.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"
_trainers_made = 0


def make_trainer(
    recipe: Any, folder: str | os.PathLike, callbacks: list[Callback], max_epochs: int, **overrides: Any
) -> pl.Trainer:
    """A Trainer from a recipe's ``trainer`` options (``cli.TrainerOptions``, Lightning's names) and
    `overrides` (a task's own settings win). The data modules shard their own batches across ranks,
    so Lightning's DistributedSampler is off. The training loss and learning rate are logged every
    ``log_every_n_steps`` steps, the metrics every epoch. Checkpoints are written atomically
    (``AtomicCheckpointIO``); SIGTERM and SIGINT stop it cleanly (``CleanStop``).

    One banner per program: Lightning's info lines (devices, "max_epochs reached", ...) are shown for
    the program's first Trainer; a sweep's later Trainers log warnings only (Lightning's loggers'
    own level setting, as Lightning's docs configure console output).
    """
    global _trainers_made
    logged = overrides.get("logger", True) is not False
    resume = bool(getattr(recipe, "resume", False))
    options: dict[str, Any] = {
        # A limit of 1.0 is Lightning's default ("all batches"), which it would announce if passed.
        **{k: v for k, v in vars(recipe.trainer).items() if not (k.startswith("limit_") and v == 1.0)},
        "max_epochs": max_epochs,
        "logger": loggers(folder, resume) if logged else False,
        "default_root_dir": folder,
        "callbacks": [
            *callbacks,
            RNGState(),
            FiniteLoss(),
            *([LearningRateMonitor(logging_interval="step")] if logged else []),
        ],
        "plugins": [AtomicCheckpointIO()],
        "use_distributed_sampler": False,
        "enable_model_summary": False,
    }
    options["enable_checkpointing"] = any(isinstance(c, ModelCheckpoint) for c in options["callbacks"])
    options.update(overrides)
    # A stop saves the checkpoint that training.fit resumes from, where the training keeps checkpoints.
    stop_checkpoint = Path(folder) / "checkpoints" / "last.ckpt" if options["enable_checkpointing"] else None
    options["callbacks"] = [*options["callbacks"], CleanStop(stop_checkpoint)]
    if _trainers_made:
        for name in _LIGHTNING_INFO:
            logging.getLogger(name).setLevel(logging.WARNING)
    trainer = pl.Trainer(**options)
    _trainers_made += 1
    return trainer


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


# --------------------------------------------------------------------------- one model, its best epoch


def best_row(history: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float]:
    """The history row of the best epoch: the highest (mode "max") or lowest ("min") `monitor`,
    the first one on ties, as ``ModelCheckpoint`` keeps it (it replaces its best only on a strict
    improvement)."""
    rows = [row for row in history if monitor in row]
    if not rows:
        raise ValueError(f"best_row: no epoch logged {monitor!r}")
    sign = 1.0 if mode == "max" else -1.0
    return max(rows, key=lambda row: (sign * row[monitor], -row["epoch"]))


@dataclass
class FitResult:
    """What ``fit_best`` returns. ``history`` and ``best_epoch`` are rank zero's (empty and None on
    the other ranks); the rest is the same on every rank."""

    trainer: pl.Trainer
    wall_s: float
    digests: list[str]  # each rank's parameter digest (``record.parameter_digests``)
    best_score: float  # the monitored value of the best epoch, synced across the ranks
    best_path: Path  # the best epoch's checkpoint
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based


def fit_best(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    recipe: Any,
    folder: str | os.PathLike,
    max_epochs: int,
    monitor: str = "val_acc",
    mode: str = "max",
    callbacks: list[Callback] | None = None,
    **trainer_overrides: Any,
) -> FitResult:
    """Train one model in `folder` (logs, checkpoints; with ``recipe.resume``, continue from its last
    checkpoint), validating every epoch, and keep its best epoch (``best_row``'s rule).

    Runs on every rank. The best score comes from the checkpoint callback (synced, so every rank
    chooses alike); the history is read back from the CSV log on global rank zero.
    """
    folder = Path(folder)
    best = checkpoints(folder / "checkpoints", monitor, mode, recipe.ckpt_every_n_steps)
    trainer = make_trainer(recipe, folder, [*best, *(callbacks or [])], max_epochs, **trainer_overrides)
    clock = Stopwatch()
    with warnings.catch_warnings():
        # A frozen trunk stays in eval mode on purpose (its BatchNorm statistics are fixed).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        fit(trainer, module, folder, recipe.resume, datamodule=datamodule)
    wall = clock()
    digests = parameter_digests(module)
    if not best[0].best_model_path:
        raise RuntimeError(f"fit_best({folder.name}): no validation result, so no best epoch to keep")
    result = FitResult(trainer, wall, digests, float(best[0].best_model_score), Path(best[0].best_model_path))
    if is_global_zero():
        result.history = read_metrics(folder)
        result.best_epoch = int(best_row(result.history, monitor, mode)["epoch"]) if result.history else None
    return result
