"""One training epoch on MNIST: each customops network against its identical torch.nn twin.

    customops-benchmark-training fit                     # -> ./runs/benchmark_training/
    customops-benchmark-training fit --out reports/digit_classification/benchmark

Both impls are trained by the same ClassifierModule (same customops loss, optimizer and
schedule) on the same MNISTDataModule (55k digits, random shifts), in one process, with
the runs interleaved (custom, torch, custom, torch, ...) so that drifts in machine load
hit both alike. The time of each run is that of its training epoch alone (validation is
off). Two ratios are reported, median(custom) / median(torch) and min(custom) / min(torch):
on a shared machine other processes can slow any single epoch, so look at both.

The network sizes are options whose defaults are the sizes the published sweeps chose (README);
nothing is read from reports/. Writes config.yaml, benchmark.json and benchmark.md into the run
folder --out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule
from lightning_modules.paths import default_out
from lightning_modules.reporting import reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.cli import (
    DataOptions,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunOptions,
)
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything


class EpochTimer(Callback):
    """Wall time of each training epoch (synchronising the GPU, where there is one, at both ends)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._clock = record.Stopwatch()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.times.append(self._clock())


def specs(args: BenchmarkRecipe) -> dict[str, dict[str, Any]]:
    return {
        "softmax": {"name": "two_layer_net", "hidden": args.softmax_hidden},
        "cnn": {
            "name": "conv_net",
            "filters": args.cnn_filters,
            "kernel_size": args.cnn_kernel_size,
            "hidden": args.cnn_hidden,
        },
    }


def one_epoch(spec: dict[str, Any], dm: MNISTDataModule, args: BenchmarkRecipe, limit_train_batches) -> float:
    seed_everything(args.seed)
    module = ClassifierModule(
        spec, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer, scheduler="onecycle"
    )
    timer = EpochTimer()
    trainer = training.make_trainer(
        args,
        args.out,
        [timer],
        1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        limit_train_batches=limit_train_batches,
    )
    trainer.fit(module, datamodule=dm)
    return timer.times[0]


@dataclass(kw_only=True)
class BenchmarkRecipe(RunOptions):
    """Time one training epoch of each customops network against its identical torch.nn twin."""

    models: list[Literal["softmax", "cnn"]] = field(default_factory=lambda: ["softmax", "cnn"])
    """networks to time"""
    softmax_hidden: PositiveInt = 2048
    """TwoLayerNet hidden units"""
    cnn_filters: PositiveInt = 32
    """ConvNet filters"""
    cnn_kernel_size: PositiveInt = 7
    """ConvNet filter size"""
    cnn_hidden: PositiveInt = 512
    """ConvNet hidden units"""
    repeats: PositiveInt = 3
    """epochs timed per impl and network"""
    max_shift: NonNegativeInt = 2
    """random shift augmentation in pixels"""
    lr: PositiveFloat = 2e-3
    """peak learning rate"""
    weight_decay: NonNegativeFloat = 0.05
    """weight decay"""
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    """optimizer"""
    data: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        if self.resume:
            raise ValueError("--resume: the benchmark times whole epochs afresh; it has nothing to resume")


def fit(args: BenchmarkRecipe) -> dict[str, Any]:
    """The timed epochs, published in ``args.out`` when they end."""
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, resumable=False) as run:
        command_line.save_run_config(args, run.work)
        dm = MNISTDataModule(
            root=args.data.root,
            cache_dir=args.data.cache_dir,
            batch_size=args.data.batch_size,
            max_shift=args.max_shift,
            seed=args.seed,
        )
        rows = []
        trainer = None
        for model in args.models:
            base = specs(args)[model]
            both = {impl: {**base, "impl": impl} for impl in ("custom", "torch")}
            one_epoch(both["custom"], dm, args, 20)  # warm-up
            times: dict[str, list[float]] = {"custom": [], "torch": []}
            for _ in range(args.repeats):
                for impl in ("custom", "torch"):  # interleaved
                    times[impl].append(one_epoch(both[impl], dm, args, args.trainer.limit_train_batches))
                    echo(f"[{model}] {impl}: {times[impl][-1]:.2f} s")
            ratio = statistics.median(times["custom"]) / statistics.median(times["torch"])
            ratio_min = min(times["custom"]) / min(times["torch"])
            echo(f"[{model}] custom / torch = {ratio:.3f} (medians), {ratio_min:.3f} (minima)")
            rows.append(
                {
                    "model": model,
                    "spec": base,
                    "times_s": times,
                    "median_custom_s": statistics.median(times["custom"]),
                    "median_torch_s": statistics.median(times["torch"]),
                    "ratio": ratio,
                    "min_custom_s": min(times["custom"]),
                    "min_torch_s": min(times["torch"]),
                    "ratio_min": ratio_min,
                }
            )
            trainer = dm.trainer
        if not is_global_zero():
            return {}
        results = {
            "run": record.run_record(args, trainer, clock()),
            "config": {"optimizer": args.optimizer, "max_shift": args.max_shift},
            "batch_size": args.data.batch_size,
            "train_digits": len(dm.train_set),
            "limit_train_batches": args.trainer.limit_train_batches,
            "repeats": args.repeats,
            "results": rows,
        }
        markdown = reports.training_benchmark(results)
        storage.write_json(run.work / "benchmark.json", results)
        storage.write_text(run.work / "benchmark.md", markdown)
        echo(markdown.rstrip())
    return results


PROGRAM = command_line.Program(
    prog="customops-benchmark-training",
    description=__doc__.split("\n\n")[0],
    recipe=BenchmarkRecipe,
    fit=fit,
    default_out=lambda recipe: default_out("benchmark_training"),
)


def main(argv: list[str] | None = None) -> Any:
    """``fit`` with `argv` (default: the process's arguments)."""
    return PROGRAM.run(argv)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "benchmark_training")


if __name__ == "__main__":
    cli()
