"""Sweep the two-layer softmax net or the CNN on MNIST, choose on validation, report test accuracy.

    python scripts/digit_classification.py --model cnn                   # -> runs/digit_classification/cnn/
    python scripts/digit_classification.py --model softmax --quick       # whole path on a slice
    python scripts/digit_classification.py --model cnn --devices 2 --strategy ddp   # two processes
    python scripts/digit_classification.py --model cnn --resume          # continue an interrupted run

Every candidate is trained with the same schedule on the 55k/5k split and scored on the
5k validation digits, by successive halving: all for ``--sweep-epochs``, then the best third
again for twice as many (``--halving``), and so on; the best of the last rung wins. The
winner is then trained again, from scratch, for ``--final-epochs`` (still choosing its
checkpoint on validation only), and only that model ever sees the 10k test digits (on
global rank zero). Every training batch is distorted on the fly: random shifts, rotations,
scaling and elastic fields (Simard et al., 2003), one resampling of the whole batch.

Writes the run folder ``--out`` (default ``runs/digit_classification/<model>/``) all at once
when the run ends: results.json, sweep.md, learning_curves.png, sweep.png,
confusion_matrix.png, first_layer_filters.png (CNN), the final training's CSV (and
TensorBoard) logs and checkpoints/{best,last}.ckpt, and sweep/<candidate>/ for each candidate.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from lightning_modules.classifier import OPTIMIZERS, SCHEDULERS, ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule
from lightning_modules.networks import IMPLS
from lightning_modules.paths import default_out
from lightning_modules.reporting import figures, reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything

# Per-model defaults: the sweep grid and a training recipe.
DEFAULTS: dict[str, dict[str, Any]] = {
    "softmax": dict(
        hidden=[32, 64, 128, 256, 512, 1024, 2048],
        sweep_epochs=1,
        final_epochs=40,
        lr=2e-3,
        weight_decay=0.05,
        batch_size=128,
        max_shift=2,
        max_rotation=8.0,
        max_scale=0.08,
        elastic_alpha=24.0,
        elastic_sigma=5.5,
    ),
    "cnn": dict(
        hidden=[64, 256, 512],
        filter_sizes=[3, 5, 7],
        filters=32,
        sweep_epochs=1,
        final_epochs=30,
        lr=2e-3,
        weight_decay=0.05,
        batch_size=128,
        max_shift=2,
        max_rotation=8.0,
        max_scale=0.08,
        elastic_alpha=24.0,
        elastic_sigma=5.5,
    ),
}
# --quick: the whole path on a slice of the data, in well under two minutes on 2 CPU cores.
QUICK = dict(
    train_subset=2000,
    test_subset=1000,
    sweep_epochs=2,
    final_epochs=3,
    hidden_softmax=[32, 64, 128, 256, 512, 2048],
    hidden_cnn=[64, 256],
    filter_sizes=[3, 5, 7],
    filters=8,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Every option checked here, before any data is read. An option given explicitly always wins;
    --quick and the model's recipe only fill in those left out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("softmax", "cnn"), required=True, help="two-layer softmax net or CNN")
    p.add_argument(
        "--hidden", type=command_line.positive_int, nargs="+", help="hidden sizes to sweep (default: model-specific)"
    )
    p.add_argument(
        "--filter-sizes",
        type=command_line.positive_int,
        nargs="+",
        help="CNN filter sizes k (k x k, valid) to sweep (default 3 5 7)",
    )
    p.add_argument("--filters", type=command_line.positive_int, help="CNN number of filters F (default 32)")
    p.add_argument(
        "--sweep-epochs",
        type=command_line.positive_int,
        help="epochs per sweep candidate in the first rung, same schedule for all (default 1)",
    )
    p.add_argument(
        "--halving",
        type=command_line.positive_int,
        default=2,
        help="successive halving: the best third of the candidates trains again, from scratch, for this "
        "many times the epochs, while that leaves more than one (default 2; 1: every candidate "
        "for --sweep-epochs only)",
    )
    p.add_argument(
        "--final-epochs",
        type=command_line.nonnegative_int,
        help="epochs for retraining the chosen candidate (default: softmax 40, cnn 30; 0: keep the sweep model)",
    )
    p.add_argument("--lr", type=command_line.positive_float, help="peak learning rate (default 2e-3)")
    p.add_argument("--weight-decay", type=command_line.nonnegative_float, help="weight decay (default 0.05)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer (default adamw)")
    p.add_argument(
        "--scheduler", choices=SCHEDULERS, default="onecycle", help="learning-rate schedule (default onecycle)"
    )
    p.add_argument(
        "--max-shift",
        type=command_line.nonnegative_int,
        help="random shift of training images, in pixels (default 2; 0 = none)",
    )
    p.add_argument(
        "--max-rotation",
        type=command_line.nonnegative_float,
        help="random rotation of training images, in degrees (default 8; 0 = none)",
    )
    p.add_argument(
        "--max-scale",
        type=command_line.nonnegative_float,
        help="random scaling of training images by a factor in [1 - s, 1 + s] (default 0.08; 0 = none)",
    )
    p.add_argument(
        "--elastic-alpha",
        type=command_line.nonnegative_float,
        help="elastic distortion of training images: displacement scale in pixels (default 24; 0 = none)",
    )
    p.add_argument(
        "--elastic-sigma",
        type=command_line.positive_float,
        help="elastic distortion: smoothness of the displacement field, in pixels (default 5.5)",
    )
    # Off by default: under the one-cycle schedule the best epochs are the last, low-lr ones.
    p.add_argument(
        "--patience",
        type=command_line.nonnegative_int,
        default=0,
        help="final run: early-stop after this many epochs without a better val accuracy (default 0: off)",
    )
    p.add_argument("--impl", choices=IMPLS, default="custom", help="customops layers or their torch.nn twins")
    p.add_argument(
        "--val-size",
        type=command_line.positive_int,
        default=5000,
        help="training digits held out for validation (default 5000)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="whole path on a slice (2k train, 1k test digits, 2+3 epochs, small grid): a smoke test; "
        "options given explicitly still win",
    )
    command_line.add_run_args(p, batch_size=DEFAULTS["softmax"]["batch_size"])
    args = p.parse_args(argv)

    d = DEFAULTS[args.model]
    quick = (
        {
            "sweep_epochs": QUICK["sweep_epochs"],
            "final_epochs": QUICK["final_epochs"],
            "hidden": QUICK[f"hidden_{args.model}"],
            "filter_sizes": QUICK["filter_sizes"],
            "filters": QUICK["filters"],
        }
        if args.quick
        else {}
    )
    for key in (
        "hidden",
        "filter_sizes",
        "filters",
        "sweep_epochs",
        "final_epochs",
        "lr",
        "weight_decay",
        "max_shift",
        "max_rotation",
        "max_scale",
        "elastic_alpha",
        "elastic_sigma",
    ):
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, d.get(key)))
    if args.model == "softmax":
        args.filter_sizes = args.filters = None  # not a softmax net's
    args.train_subset = QUICK["train_subset"] if args.quick else None
    args.test_subset = QUICK["test_subset"] if args.quick else None
    args.out = args.out or default_out("digit_classification", args.model)
    return args


def candidates(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The sweep grid as network specs (``models`` keys and their configs)."""
    if args.model == "softmax":
        return [{"name": "two_layer_net", "impl": args.impl, "hidden": h} for h in args.hidden]
    return [
        {"name": "conv_net", "impl": args.impl, "filters": args.filters, "kernel_size": k, "hidden": h}
        for k, h in itertools.product(args.filter_sizes, args.hidden)
    ]


def candidate_name(spec: dict[str, Any]) -> str:
    """A candidate's folder name: hidden512 or f32-k7-hidden512."""
    if "filters" not in spec:
        return f"hidden{spec['hidden']}"
    return f"f{spec['filters']}-k{spec['kernel_size']}-hidden{spec['hidden']}"


def train(
    spec: dict[str, Any], args: argparse.Namespace, dm: MNISTDataModule, epochs: int, folder: Path, final: bool = False
) -> dict[str, Any]:
    """Train one candidate from a fresh seed in `folder`, keeping its best epoch (with --resume:
    continue it). Runs on every rank (see ``training.fit_best``)."""
    seed_everything(args.seed)
    module = ClassifierModule(
        spec, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer, scheduler=args.scheduler
    )
    stop = [EarlyStopping(monitor="val_acc", mode="max", patience=args.patience)] if final and args.patience else []
    fitted = training.fit_best(module, dm, args, folder, epochs, "val_acc", "max", callbacks=stop)
    return {
        "spec": spec,
        "epochs": len(fitted.history),
        "wall_s": round(fitted.wall_s, 1),
        "val_acc": fitted.best_score,
        "best_epoch": fitted.best_epoch,
        "history": fitted.history,
        "trainer": fitted.trainer,
        "digests": fitted.digests,
        "ckpt_path": fitted.best_path,
    }


def successive_halving(args: argparse.Namespace, dm: MNISTDataModule, folder: Path) -> list[dict[str, Any]]:
    """The sweep: every candidate trains ``--sweep-epochs`` epochs; the best third (by validation
    accuracy, rounded up) trains again from scratch for ``--halving`` times as many epochs, and so
    on while that leaves more than one (``--halving 1``: every candidate once, no rungs). Returns
    one row per candidate, from the last rung it reached (``rung``, counted from 0)."""
    alive = candidates(args)
    rows: dict[str, dict[str, Any]] = {}
    epochs, rung = args.sweep_epochs, 0
    while True:
        for spec in alive:
            name = candidate_name(spec)
            r = train(spec, args, dm, epochs, folder / name / f"rung{rung}")
            r["rung"] = rung
            r["val_by_rung"] = [*rows[name]["val_by_rung"], r["val_acc"]] if name in rows else [r["val_acc"]]
            if name in rows:  # its wall time is that of every rung it ran
                r["wall_s"] = round(r["wall_s"] + rows[name]["wall_s"], 1)
            echo(
                f"[sweep] rung {rung}, {reports.describe_digit_net(spec)}: val acc {100 * r['val_acc']:.2f}% "
                f"after {epochs} epochs ({r['wall_s']:.0f} s)"
            )
            rows[name] = r
        keep = math.ceil(len(alive) / 3)
        if args.halving == 1 or keep <= 1:
            break
        ranked = sorted(alive, key=lambda spec: -rows[candidate_name(spec)]["val_acc"])  # stable: ties keep order
        alive = [spec for spec in alive if spec in ranked[:keep]]
        epochs, rung = epochs * args.halving, rung + 1
    return [rows[candidate_name(spec)] for spec in candidates(args)]


@torch.no_grad()
def predict(module: ClassifierModule, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval().to(device)
    preds, labels = [], []
    for x, y in loader:
        preds.append(module(x.to(device)).argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def make_datamodule(args: argparse.Namespace) -> MNISTDataModule:
    return MNISTDataModule(
        root=args.data_root,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        val_size=args.val_size,
        max_shift=args.max_shift,
        max_rotation=args.max_rotation,
        max_scale=args.max_scale,
        elastic_alpha=args.elastic_alpha,
        elastic_sigma=args.elastic_sigma,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        seed=args.seed,
    )


def choose(args: argparse.Namespace, dm: MNISTDataModule, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sweep's rows and the chosen candidate (the best of the last rung; first of equals: the
    smaller, earlier one). One candidate (a seed study's rerun of a chosen size) is not swept."""
    if len(candidates(args)) == 1 and args.final_epochs:
        return [], {"spec": candidates(args)[0], "val_acc": float("nan")}
    rows = successive_halving(args, dm, work / "sweep")
    top = max(r["rung"] for r in rows)
    best = max((r for r in rows if r["rung"] == top), key=lambda r: r["val_acc"])
    echo(f"[chosen] {reports.describe_digit_net(best['spec'])} (val acc {100 * best['val_acc']:.2f}%)")
    return rows, best


def test(args: argparse.Namespace, dm: MNISTDataModule, final: dict[str, Any], work: Path):
    """The chosen model's test accuracy, on all the test digits on rank zero (not the data module's
    loader, which shards by rank); the model, predictions and labels, and the confusion matrix."""
    model = training.load_module(ClassifierModule, final["ckpt_path"])
    dm.setup("test")
    device = final["trainer"].strategy.root_device
    preds, labels = predict(model, DataLoader(dm.test_set, batch_size=dm.eval_batch_size), device)
    test_acc = (preds == labels).float().mean().item()
    echo(f"[test] {reports.describe_digit_net(final['spec'])}: test acc {100 * test_acc:.2f}%")
    title = f"MNIST {args.model}: test confusion matrix ({100 * test_acc:.2f}% correct)"
    cm = figures.plot_confusion(preds, labels, title, work / "confusion_matrix.png")
    return model, test_acc, len(labels), cm


def public(r: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps of a training."""
    keys = ("spec", "val_acc", "best_epoch", "epochs", "wall_s", "history", "rung", "val_by_rung")
    return {k: r[k] for k in keys if k in r}


def write_outputs(args, results: dict[str, Any], rows, final, model, work: Path) -> None:
    storage.write_json(work / "results.json", results)
    if rows:
        storage.write_text(work / "sweep.md", reports.digits_sweep(results))
        figures.plot_sweep(rows, args.model, work / "sweep.png")
    title = f"MNIST {args.model}: {reports.describe_digit_net(final['spec'])} (train: augmented batches)"
    figures.plot_curves(
        {"": final["history"]}, [("loss", "loss"), ("acc", "accuracy")], work / "learning_curves.png", title
    )
    if args.model == "cnn":
        figures.plot_filters(model.net.conv.weight, work / "first_layer_filters.png")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, args.resume) as run:
        dm = make_datamodule(args)
        rows, best = choose(args, dm, run.work)
        sweep_wall = clock()
        final = train(best["spec"], args, dm, args.final_epochs, run.work, final=True) if args.final_epochs else best
        if not is_global_zero():
            return {}  # the other ranks have done their share: training
        # The test digits are used once, by the chosen model only.
        model, test_acc, test_size, cm = test(args, dm, final, run.work)
        results = {
            "model": args.model,
            "run": record.run_record(args, final["trainer"], clock(), final["digests"]),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "split": {"train": len(dm.train_set), "val": len(dm.val_set), "split_seed": dm.split_seed},
            "candidates": [public(r) for r in rows],
            "chosen": {"spec": best["spec"], "sweep_val_acc": best["val_acc"] if rows else None},
            "final": public(final),
            "test_acc": test_acc,
            "test_size": test_size,
            "confusion_matrix": cm.tolist(),
            "checkpoint": storage.relative(final["ckpt_path"], run.work),
            "sweep_wall_s": round(sweep_wall, 1),
            "total_wall_s": round(clock(), 1),
        }
        write_outputs(args, results, rows, final, model, run.work)
    echo(f"[done] {clock():.0f} s; results in {run.out}")
    return results


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "digit_classification")


if __name__ == "__main__":
    cli()
