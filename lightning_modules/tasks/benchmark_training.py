"""One training epoch on MNIST: each customops network against its identical torch.nn twin.

    python scripts/benchmark_training.py            # sizes from the sweeps' results.json

Both impls are trained by the same ClassifierModule (same customops loss, optimizer and
schedule) on the same MNISTDataModule (55k digits, random shifts), in one process, with
the runs interleaved (custom, torch, custom, torch, ...) so that drifts in machine load
hit both alike. The time of each run is that of its training epoch alone (validation is
off). Two ratios are reported, median(custom) / median(torch) and min(custom) / min(torch):
on a shared machine other processes can slow any single epoch, so look at both. Writes
benchmark.json and benchmark.md into --out (default reports/digit_classification/).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lightning_modules.classifier import ClassifierModule  # noqa: E402
from lightning_modules.data.common import DEFAULT_CACHE, PROJECT_ROOT  # noqa: E402
from lightning_modules.data.mnist import MNISTDataModule  # noqa: E402
from lightning_modules.networks import build_net  # noqa: E402

REPORTS = PROJECT_ROOT / "reports" / "digit_classification"
# Used when a sweep's results.json is missing: the sizes the sweeps are expected to pick.
FALLBACK = {
    "softmax": {"kind": "softmax", "hidden": 1024},
    "cnn": {"kind": "cnn", "filters": 32, "kernel_size": 5, "hidden": 256},
}


class EpochTimer(Callback):
    """Wall time of each training epoch (synchronising the GPU, where there is one, at both ends)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)


def chosen_spec(model: str, reports: Path) -> tuple[dict[str, Any], str]:
    """The network the sweep chose (from its results.json), else the fallback sizes."""
    path = reports / model / "results.json"
    if path.is_file():
        spec = dict(json.loads(path.read_text())["chosen"]["spec"])
        return spec, str(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
    return dict(FALLBACK[model]), "fallback sizes (no results.json)"


def one_epoch(spec: dict[str, Any], dm: MNISTDataModule, args: argparse.Namespace) -> float:
    pl.seed_everything(args.seed, verbose=False)
    net = build_net(spec)
    module = ClassifierModule(net, num_classes=10, lr=args.lr, weight_decay=args.weight_decay,
                              optimizer=args.optimizer, scheduler="onecycle", backbone_spec=spec)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator=args.accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, limit_train_batches=args.limit_train_batches, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.times[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=("softmax", "cnn"), default=["softmax", "cnn"], help="networks to time")
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per impl and network (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--max-shift", type=int, default=2, help="random shift augmentation in pixels (default 2)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="weight decay (default 0.05)")
    p.add_argument("--optimizer", default="adamw", help="optimizer (default adamw)")
    p.add_argument("--limit-train-batches", type=float, default=1.0,
                   help="fraction (float) or number (int) of training batches per epoch (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--mirror", help="local MNIST folder; default $CUSTOMOPS_MIRROR/MNIST")
    p.add_argument("--data-dir", default=str(DEFAULT_CACHE), help="data cache (default data/)")
    p.add_argument("--reports", default=str(REPORTS), help="where the sweeps' results.json are read from")
    p.add_argument("--out", default=str(REPORTS), help="where benchmark.json / benchmark.md are written")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator (default auto)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.limit_train_batches == int(args.limit_train_batches) and args.limit_train_batches > 1:
        args.limit_train_batches = int(args.limit_train_batches)

    dm = MNISTDataModule(data_dir=args.data_dir, mirror=args.mirror, batch_size=args.batch_size,
                         max_shift=args.max_shift)
    dm.prepare_data()
    dm.setup("fit")

    rows = []
    for model in args.models:
        base, source = chosen_spec(model, Path(args.reports))
        specs = {impl: {**base, "impl": impl} for impl in ("custom", "torch")}
        one_epoch(specs["custom"], dm, argparse.Namespace(**{**vars(args), "limit_train_batches": 20}))  # warm-up
        times: dict[str, list[float]] = {"custom": [], "torch": []}
        for _ in range(args.repeats):
            for impl in ("custom", "torch"):  # interleaved
                times[impl].append(one_epoch(specs[impl], dm, args))
                print(f"[{model}] {impl}: {times[impl][-1]:.2f} s", flush=True)
        ratio = statistics.median(times["custom"]) / statistics.median(times["torch"])
        ratio_min = min(times["custom"]) / min(times["torch"])
        print(f"[{model}] custom / torch = {ratio:.3f} (medians), {ratio_min:.3f} (minima)", flush=True)
        rows.append({"model": model, "spec": base, "sizes_from": source, "times_s": times,
                     "median_custom_s": statistics.median(times["custom"]),
                     "median_torch_s": statistics.median(times["torch"]), "ratio": ratio,
                     "min_custom_s": min(times["custom"]), "min_torch_s": min(times["torch"]),
                     "ratio_min": ratio_min})

    device = str(dm.trainer.strategy.root_device) if dm.trainer is not None else "?"
    if device == "cpu":
        device = f"cpu ({torch.get_num_threads()} threads)"
    results = {"command": " ".join(["python", "scripts/benchmark_training.py",
                                    *(argv if argv is not None else sys.argv[1:])]),
               "device": device, "torch": torch.__version__, "batch_size": args.batch_size,
               "train_digits": len(dm.train_set), "limit_train_batches": args.limit_train_batches,
               "repeats": args.repeats, "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# One training epoch: customops network / identical torch.nn twin", "",
             f"Same ClassifierModule (customops softmax loss, {args.optimizer}, one-cycle), same MNISTDataModule "
             f"({len(dm.train_set):,} digits, batch {args.batch_size}, shifts of up to {args.max_shift} px), "
             f"runs interleaved, {args.repeats} epochs each, on {device}.", "",
             "| network | custom s/epoch (median, min) | torch twin s/epoch (median, min) | ratio of medians "
             "| ratio of minima |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        s = r["spec"]
        name = (f"TwoLayerNet, hidden {s['hidden']}" if r["model"] == "softmax"
                else f"ConvNet, {s['filters']} filters {s['kernel_size']}x{s['kernel_size']}, hidden {s['hidden']}")
        lines.append(f"| {name} | {r['median_custom_s']:.2f}, {r['min_custom_s']:.2f} | {r['median_torch_s']:.2f}, "
                     f"{r['min_torch_s']:.2f} | {r['ratio']:.3f} | {r['ratio_min']:.3f} |")
    for name, text in (("benchmark.json", json.dumps(results, indent=2) + "\n"), ("benchmark.md", "\n".join(lines) + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
