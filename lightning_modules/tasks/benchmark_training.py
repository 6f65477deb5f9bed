"""One training epoch on MNIST: each customops network against its identical torch.nn twin.

    python scripts/benchmark_training.py                       # -> runs/benchmark_training/
    python scripts/benchmark_training.py --out reports/digit_classification/benchmark

Both impls are trained by the same ClassifierModule (same customops loss, optimizer and
schedule) on the same MNISTDataModule (55k digits, random shifts), in one process, with
the runs interleaved (custom, torch, custom, torch, ...) so that drifts in machine load
hit both alike. The time of each run is that of its training epoch alone (validation is
off). Two ratios are reported, median(custom) / median(torch) and min(custom) / min(torch):
on a shared machine other processes can slow any single epoch, so look at both.

The network sizes are flags whose defaults are the sizes the published sweeps chose (README);
nothing is read from reports/. Writes benchmark.json and benchmark.md into the run folder --out.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_modules.classifier import OPTIMIZERS, ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule
from lightning_modules.paths import default_out
from lightning_modules.reporting import reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
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


def specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "softmax": {"name": "two_layer_net", "hidden": args.softmax_hidden},
        "cnn": {
            "name": "conv_net",
            "filters": args.cnn_filters,
            "kernel_size": args.cnn_kernel_size,
            "hidden": args.cnn_hidden,
        },
    }


def one_epoch(spec: dict[str, Any], dm: MNISTDataModule, args: argparse.Namespace, limit_train_batches) -> float:
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", nargs="+", choices=("softmax", "cnn"), default=["softmax", "cnn"], help="networks to time"
    )
    p.add_argument(
        "--softmax-hidden", type=command_line.positive_int, default=2048, help="TwoLayerNet hidden units (default 2048)"
    )
    p.add_argument("--cnn-filters", type=command_line.positive_int, default=32, help="ConvNet filters (default 32)")
    p.add_argument(
        "--cnn-kernel-size", type=command_line.positive_int, default=7, help="ConvNet filter size (default 7)"
    )
    p.add_argument(
        "--cnn-hidden", type=command_line.positive_int, default=512, help="ConvNet hidden units (default 512)"
    )
    p.add_argument(
        "--repeats", type=command_line.positive_int, default=3, help="epochs timed per impl and network (default 3)"
    )
    p.add_argument(
        "--max-shift",
        type=command_line.nonnegative_int,
        default=2,
        help="random shift augmentation in pixels (default 2)",
    )
    p.add_argument("--lr", type=command_line.positive_float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument(
        "--weight-decay", type=command_line.nonnegative_float, default=0.05, help="weight decay (default 0.05)"
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer (default adamw)")
    p.add_argument(
        "--limit-train-batches",
        type=command_line.batch_limit,
        default=1.0,
        help="fraction in (0, 1] or number (> 1) of training batches per epoch (default: all)",
    )
    command_line.add_run_args(p, batch_size=128)
    args = p.parse_args(argv)
    args.out = args.out or default_out("benchmark_training")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clock = record.Stopwatch()
    with storage.RunFolder(args.out) as run:
        dm = MNISTDataModule(
            root=args.data_root,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
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
                    times[impl].append(one_epoch(both[impl], dm, args, args.limit_train_batches))
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
            "batch_size": args.batch_size,
            "train_digits": len(dm.train_set),
            "limit_train_batches": args.limit_train_batches,
            "repeats": args.repeats,
            "results": rows,
        }
        markdown = reports.training_benchmark(results)
        storage.write_json(run.work / "benchmark.json", results)
        storage.write_text(run.work / "benchmark.md", markdown)
        echo(markdown.rstrip())
    return results


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "benchmark_training")


if __name__ == "__main__":
    cli()
