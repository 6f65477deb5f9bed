"""Sweep the two-layer softmax net or the CNN on MNIST, choose on validation, report test accuracy.

    CUSTOMOPS_MIRROR=../shared/data python scripts/digit_classification.py --model cnn
    python scripts/digit_classification.py --model softmax --quick      # whole path on a slice

Every candidate is trained with the same schedule on the 55k/5k split and scored on the
5k validation digits; the best validation accuracy wins. The winner is then trained
again, from scratch, for ``--final-epochs`` (still choosing its checkpoint on validation
only), and only that model ever sees the 10k test digits.

Writes under ``--out`` (default ``reports/digit_classification/<model>/``): results.json,
sweep.md, learning_curves.png, sweep.png, confusion_matrix.png, first_layer_filters.png
(CNN) and checkpoints/best.ckpt (git-ignored).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint  # noqa: E402
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lightning_modules.classifier import OPTIMIZERS, SCHEDULERS, ClassifierModule  # noqa: E402
from lightning_modules.data_utils import DEFAULT_CACHE, PROJECT_ROOT  # noqa: E402
from lightning_modules.mnist import MNISTDataModule  # noqa: E402
from lightning_modules.networks import IMPLS, build_net  # noqa: E402

# Per-model defaults: the sweep grid and a training recipe.
DEFAULTS: dict[str, dict[str, Any]] = {
    "softmax": dict(hidden=[32, 64, 128, 256, 512, 1024, 2048], sweep_epochs=3, final_epochs=20,
                    lr=2e-3, weight_decay=0.05, batch_size=128, max_shift=2),
    "cnn": dict(hidden=[64, 256, 512], filter_sizes=[3, 5, 7], filters=32, sweep_epochs=2, final_epochs=20,
                lr=2e-3, weight_decay=0.05, batch_size=128, max_shift=2),
}
# --quick: the whole path on a slice of the data, in well under two minutes on 2 CPU cores.
QUICK = dict(train_subset=2000, test_subset=1000, sweep_epochs=2, final_epochs=3,
             hidden_softmax=[32, 64, 128, 256, 512, 2048], hidden_cnn=[64, 256], filter_sizes=[3, 5, 7], filters=8)


class History(Callback):
    """Per-epoch train/val loss and accuracy, read after validation has run for the epoch."""

    KEYS = ("train_loss_epoch", "train_acc", "val_loss", "val_acc")

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key in self.KEYS:
            if key in metrics:
                row[key.removesuffix("_epoch")] = float(metrics[key])
        self.epochs.append(row)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("softmax", "cnn"), required=True, help="two-layer softmax net or CNN")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden sizes to sweep (default: model-specific)")
    p.add_argument("--filter-sizes", type=int, nargs="+", help="CNN filter sizes k (k x k, valid) to sweep (default 3 5 7)")
    p.add_argument("--filters", type=int, help="CNN number of filters F (default 32)")
    p.add_argument("--sweep-epochs", type=int, help="epochs per sweep candidate, same schedule for all (default: softmax 3, cnn 2)")
    p.add_argument("--final-epochs", type=int, help="epochs for retraining the chosen candidate (default 20; 0: keep the sweep model)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default 0.05)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer (default adamw)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="onecycle", help="learning-rate schedule (default onecycle)")
    p.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    p.add_argument("--max-shift", type=int, help="random shift of training images, in pixels (default 2; 0 = none)")
    # Off by default: under the one-cycle schedule the best epochs are the last, low-lr ones.
    p.add_argument("--patience", type=int, default=0,
                   help="final run: early-stop after this many epochs without a better val accuracy (default 0: off)")
    p.add_argument("--impl", choices=IMPLS, default="custom", help="customops layers or their torch.nn twins")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (the split has its own)")
    p.add_argument("--mirror", help="local folder with the MNIST IDX files (.gz or not); default $CUSTOMOPS_MIRROR/MNIST")
    p.add_argument("--data-dir", default=str(DEFAULT_CACHE), help="download/decompression cache (default data/)")
    p.add_argument("--val-size", type=int, default=5000, help="training digits held out for validation (default 5000)")
    p.add_argument("--out", help="results folder (default reports/digit_classification/<model>)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator (default auto: a GPU where there is one)")
    p.add_argument("--quick", action="store_true",
                   help="whole path on a slice (2k train, 1k test digits, 2+3 epochs, small grid): a smoke test")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (for logs)")
    args = p.parse_args(argv)

    d = DEFAULTS[args.model]
    for key in ("hidden", "sweep_epochs", "final_epochs", "lr", "weight_decay", "batch_size", "max_shift"):
        if getattr(args, key) is None:
            setattr(args, key, d[key])
    if args.model == "cnn":
        args.filter_sizes = args.filter_sizes or d["filter_sizes"]
        args.filters = args.filters or d["filters"]
    args.train_subset = args.test_subset = None
    if args.quick:
        args.train_subset, args.test_subset = QUICK["train_subset"], QUICK["test_subset"]
        args.sweep_epochs, args.final_epochs = QUICK["sweep_epochs"], QUICK["final_epochs"]
        if args.model == "softmax":
            args.hidden = QUICK["hidden_softmax"]
        else:
            args.hidden, args.filter_sizes, args.filters = QUICK["hidden_cnn"], QUICK["filter_sizes"], QUICK["filters"]
    for key in ("sweep_epochs", "batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.final_epochs < 0 or args.max_shift < 0 or args.patience < 0:
        p.error("--final-epochs, --max-shift and --patience must be >= 0")
    if min(args.hidden) < 1 or (args.model == "cnn" and (min(args.filter_sizes) < 1 or args.filters < 1)):
        p.error("sizes must be positive")
    args.out = Path(args.out) if args.out else PROJECT_ROOT / "reports" / "digit_classification" / args.model
    return args


def candidates(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The sweep grid as network specs."""
    if args.model == "softmax":
        return [{"kind": "softmax", "impl": args.impl, "hidden": h} for h in args.hidden]
    return [
        {"kind": "cnn", "impl": args.impl, "filters": args.filters, "kernel_size": k, "hidden": h}
        for k, h in itertools.product(args.filter_sizes, args.hidden)
    ]


def make_module(spec: dict[str, Any], args: argparse.Namespace) -> ClassifierModule:
    return ClassifierModule(
        build_net(spec), num_classes=10, lr=args.lr, weight_decay=args.weight_decay,
        optimizer=args.optimizer, scheduler=args.scheduler, backbone_spec=spec,
    )


def make_trainer(args: argparse.Namespace, epochs: int, callbacks: list[Callback]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator=args.accelerator, devices=1, callbacks=callbacks,
        logger=False, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=not args.no_progress, enable_model_summary=False, deterministic=False,
    )


def train(spec: dict[str, Any], args: argparse.Namespace, dm: MNISTDataModule, epochs: int,
          ckpt_dir: Path | None = None) -> dict[str, Any]:
    """Train one candidate from a fresh seed; returns its history, best val accuracy and wall time."""
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = make_module(spec, args)
    history = History()
    callbacks: list[Callback] = [history]
    ckpt = None
    if ckpt_dir is not None:
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_acc", mode="max",
                               save_top_k=1, enable_version_counter=False)
        callbacks.append(ckpt)
        if args.patience:
            callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=args.patience))
    trainer = make_trainer(args, epochs, callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - start
    val_accs = [row["val_acc"] for row in history.epochs]
    return {
        "spec": spec, "epochs": len(history.epochs), "wall_s": round(wall, 1),
        "val_acc": max(val_accs), "best_epoch": 1 + val_accs.index(max(val_accs)),
        "history": history.epochs, "module": module, "trainer": trainer,
        "ckpt_path": ckpt.best_model_path if ckpt is not None else None,
    }


def _relative(path: str | os.PathLike) -> str:
    """`path` relative to the project root where it lies inside it (results stay machine-independent)."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_fig(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_curves(history: list[dict[str, float]], title: str, path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in ("train", "val"):
        ax_loss.plot(epochs, [row.get(f"{stage}_loss") for row in history], "o-", label=stage)
        ax_acc.plot(epochs, [100 * row.get(f"{stage}_acc", float("nan")) for row in history], "o-", label=stage)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title + " (train: augmented batches, running mean over the epoch)")
    save_fig(fig, path)


def plot_sweep(rows: list[dict[str, Any]], model: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    if model == "softmax":
        ax.plot([r["spec"]["hidden"] for r in rows], [100 * r["val_acc"] for r in rows], "o-")
        ax.set(xscale="log", xlabel="hidden units")
        ax.set_xticks([r["spec"]["hidden"] for r in rows], [str(r["spec"]["hidden"]) for r in rows])
    else:
        for h in sorted({r["spec"]["hidden"] for r in rows}):
            sub = [r for r in rows if r["spec"]["hidden"] == h]
            ax.plot([r["spec"]["kernel_size"] for r in sub], [100 * r["val_acc"] for r in sub], "o-", label=f"hidden {h}")
        ax.set(xlabel="filter size k (k x k)")
        ax.set_xticks(sorted({r["spec"]["kernel_size"] for r in rows}))
        ax.legend()
    ax.set(ylabel="validation accuracy (%)", title=f"{model}: sweep, validation accuracy")
    ax.grid(alpha=0.3)
    save_fig(fig, path)


def plot_confusion(cm: torch.Tensor, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(cm.numpy(), cmap="Blues")
    for i in range(10):
        for j in range(10):
            value = int(cm[i, j])
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > cm.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(10), yticks=range(10))
    save_fig(fig, path)


def plot_filters(weight: torch.Tensor, path: Path) -> None:
    """weight (F, 1, k, k): each filter as a small image, each on its own symmetric colour scale."""
    w = weight.detach().cpu()[:, 0]  # (F, k, k)
    n = w.shape[0]
    cols = 8
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            lim = float(w[i].abs().max())
            ax.imshow(w[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"first-layer filters ({n} x {w.shape[1]}x{w.shape[2]})")
    save_fig(fig, path)


def describe(spec: dict[str, Any]) -> str:
    if spec["kind"] == "softmax":
        return f"hidden {spec['hidden']}"
    return f"{spec['filters']} filters {spec['kernel_size']}x{spec['kernel_size']}, hidden {spec['hidden']}"


def sweep_markdown(results: dict[str, Any]) -> str:
    model = results["model"]
    head = "| hidden | val acc (%) | epochs | wall (s) |\n|---:|---:|---:|---:|"
    if model == "cnn":
        head = "| filters | k | hidden | val acc (%) | epochs | wall (s) |\n|---:|---:|---:|---:|---:|---:|"
    lines = [f"# MNIST {model}: sweep on the 5,000 validation digits", "",
             f"Each candidate: {results['config']['sweep_epochs']} epochs, {results['config']['optimizer']}, "
             f"{results['config']['scheduler']} schedule, peak lr {results['config']['lr']}, weight decay "
             f"{results['config']['weight_decay']}, batch {results['config']['batch_size']}, random shifts of up to "
             f"{results['config']['max_shift']} px.", "", head]
    chosen = results["chosen"]["spec"]
    for row in results["candidates"]:
        s = row["spec"]
        mark = " **(chosen)**" if s == chosen else ""
        sizes = f"| {s['hidden']}" if model == "softmax" else f"| {s['filters']} | {s['kernel_size']} | {s['hidden']}"
        lines.append(f"{sizes} | {100 * row['val_acc']:.2f}{mark} | {row['epochs']} | {row['wall_s']:.0f} |")
    final = results["final"]
    lines += ["", f"Chosen on validation: **{describe(chosen)}**. Retrained for {final['epochs']} epochs "
              f"(checkpoint of epoch {final['best_epoch']} kept, chosen on validation): val accuracy "
              f"**{100 * final['val_acc']:.2f}%**, test accuracy **{100 * results['test_acc']:.2f}%** "
              f"on the {results['test_size']:,} test digits.", "",
              f"Wall time: sweep {results['sweep_wall_s']:.0f} s, final training {final['wall_s']:.0f} s, "
              f"total {results['total_wall_s']:.0f} s on {results['device']}."]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def predict(module: ClassifierModule, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval().to(device)
    preds, labels = [], []
    for x, y in loader:
        preds.append(module(x.to(device)).argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = args.out / "checkpoints"
    dm = MNISTDataModule(data_dir=args.data_dir, mirror=args.mirror, batch_size=args.batch_size,
                         val_size=args.val_size, max_shift=args.max_shift,
                         train_subset=args.train_subset, test_subset=args.test_subset)
    dm.prepare_data()
    dm.setup("fit")

    rows = []
    for spec in candidates(args):
        r = train(spec, args, dm, args.sweep_epochs)
        print(f"[sweep] {describe(spec)}: val acc {100 * r['val_acc']:.2f}% ({r['wall_s']:.0f} s)", flush=True)
        rows.append(r)
    sweep_wall = time.perf_counter() - t0
    best = max(rows, key=lambda r: r["val_acc"])  # first of equals: the smaller/earlier candidate
    print(f"[chosen] {describe(best['spec'])} (val acc {100 * best['val_acc']:.2f}%)", flush=True)

    if args.final_epochs > 0:
        final = train(best["spec"], args, dm, args.final_epochs, ckpt_dir=ckpt_dir)
        model = ClassifierModule.load_rebuilt(final["ckpt_path"], build_backbone=build_net)
    else:
        final = best
        model = best["module"]
        best["trainer"].save_checkpoint(ckpt_dir / "best.ckpt")
        final["ckpt_path"] = str(ckpt_dir / "best.ckpt")

    # The test digits are used once, by the chosen model only.
    dm.setup("test")
    device = final["trainer"].strategy.root_device
    preds, labels = predict(model, dm.test_dataloader(), device)
    test_acc = (preds == labels).float().mean().item()
    cm = MulticlassConfusionMatrix(num_classes=10)(preds, labels)
    print(f"[test] {describe(best['spec'])}: test acc {100 * test_acc:.2f}%", flush=True)

    def public(r: dict[str, Any]) -> dict[str, Any]:
        keep = ("spec", "val_acc", "best_epoch", "epochs", "wall_s", "history")
        return {k: r[k] for k in keep}

    total = time.perf_counter() - t0
    results = {
        "model": args.model,
        "device": str(device) if device.type != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
        "command": " ".join(["python", "scripts/digit_classification.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {k: (_relative(v) if k in ("out", "data_dir") else v) for k, v in vars(args).items()},
        "split": {"train": len(dm.train_set), "val": len(dm.val_set), "split_seed": dm.split_seed},
        "candidates": [public(r) for r in rows],
        "chosen": {"spec": best["spec"], "sweep_val_acc": best["val_acc"]},
        "final": public(final),
        "test_acc": test_acc,
        "test_size": len(labels),
        "confusion_matrix": cm.tolist(),
        "checkpoint": _relative(final["ckpt_path"]) if final["ckpt_path"] else None,
        "sweep_wall_s": round(sweep_wall, 1),
        "total_wall_s": round(total, 1),
    }
    write_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    write_atomic(args.out / "sweep.md", sweep_markdown(results))
    plot_curves(final["history"], f"MNIST {args.model}: {describe(best['spec'])}", args.out / "learning_curves.png")
    plot_sweep(rows, args.model, args.out / "sweep.png")
    plot_confusion(cm, f"MNIST {args.model}: test confusion matrix ({100 * test_acc:.2f}% correct)",
                   args.out / "confusion_matrix.png")
    if args.model == "cnn":
        plot_filters(model.backbone.conv.weight, args.out / "first_layer_filters.png")
    print(f"[done] {total:.0f} s; results in {args.out}", flush=True)
    return results


if __name__ == "__main__":
    main()
