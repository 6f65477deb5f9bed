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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import EarlyStopping  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402

from lightning_modules import runs  # noqa: E402
from lightning_modules.classifier import OPTIMIZERS, SCHEDULERS, ClassifierModule  # noqa: E402
from lightning_modules.data.mnist import MNISTDataModule  # noqa: E402
from lightning_modules.networks import IMPLS  # noqa: E402

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
        "--hidden", type=runs.positive_int, nargs="+", help="hidden sizes to sweep (default: model-specific)"
    )
    p.add_argument(
        "--filter-sizes",
        type=runs.positive_int,
        nargs="+",
        help="CNN filter sizes k (k x k, valid) to sweep (default 3 5 7)",
    )
    p.add_argument("--filters", type=runs.positive_int, help="CNN number of filters F (default 32)")
    p.add_argument(
        "--sweep-epochs",
        type=runs.positive_int,
        help="epochs per sweep candidate in the first rung, same schedule for all (default 1)",
    )
    p.add_argument(
        "--halving",
        type=runs.positive_int,
        default=2,
        help="successive halving: the best third of the candidates trains again, from scratch, for this "
        "many times the epochs, while that leaves more than one (default 2; 1: every candidate "
        "for --sweep-epochs only)",
    )
    p.add_argument(
        "--final-epochs",
        type=runs.nonnegative_int,
        help="epochs for retraining the chosen candidate (default: softmax 40, cnn 30; 0: keep the sweep model)",
    )
    p.add_argument("--lr", type=runs.positive_float, help="peak learning rate (default 2e-3)")
    p.add_argument("--weight-decay", type=runs.nonnegative_float, help="weight decay (default 0.05)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer (default adamw)")
    p.add_argument(
        "--scheduler", choices=SCHEDULERS, default="onecycle", help="learning-rate schedule (default onecycle)"
    )
    p.add_argument(
        "--max-shift",
        type=runs.nonnegative_int,
        help="random shift of training images, in pixels (default 2; 0 = none)",
    )
    p.add_argument(
        "--max-rotation",
        type=runs.nonnegative_float,
        help="random rotation of training images, in degrees (default 8; 0 = none)",
    )
    p.add_argument(
        "--max-scale",
        type=runs.nonnegative_float,
        help="random scaling of training images by a factor in [1 - s, 1 + s] (default 0.08; 0 = none)",
    )
    p.add_argument(
        "--elastic-alpha",
        type=runs.nonnegative_float,
        help="elastic distortion of training images: displacement scale in pixels (default 24; 0 = none)",
    )
    p.add_argument(
        "--elastic-sigma",
        type=runs.positive_float,
        help="elastic distortion: smoothness of the displacement field, in pixels (default 5.5)",
    )
    # Off by default: under the one-cycle schedule the best epochs are the last, low-lr ones.
    p.add_argument(
        "--patience",
        type=runs.nonnegative_int,
        default=0,
        help="final run: early-stop after this many epochs without a better val accuracy (default 0: off)",
    )
    p.add_argument("--impl", choices=IMPLS, default="custom", help="customops layers or their torch.nn twins")
    p.add_argument(
        "--val-size",
        type=runs.positive_int,
        default=5000,
        help="training digits held out for validation (default 5000)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="whole path on a slice (2k train, 1k test digits, 2+3 epochs, small grid): a smoke test; "
        "options given explicitly still win",
    )
    runs.add_run_args(p, batch_size=DEFAULTS["softmax"]["batch_size"])
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
    args.out = args.out or runs.default_out("digit_classification", args.model)
    return args


def candidates(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The sweep grid as network specs."""
    if args.model == "softmax":
        return [{"kind": "softmax", "impl": args.impl, "hidden": h} for h in args.hidden]
    return [
        {"kind": "cnn", "impl": args.impl, "filters": args.filters, "kernel_size": k, "hidden": h}
        for k, h in itertools.product(args.filter_sizes, args.hidden)
    ]


def make_module(spec: dict[str, Any], args: argparse.Namespace, scheduler: str | None = None) -> ClassifierModule:
    return ClassifierModule(
        spec,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        scheduler=scheduler or args.scheduler,
    )


def train(
    spec: dict[str, Any], args: argparse.Namespace, dm: MNISTDataModule, epochs: int, folder: Path, final: bool = False
) -> dict[str, Any]:
    """Train one candidate from a fresh seed in `folder` (logs, checkpoints); with --resume, continue it.


    Runs on every rank. The validation accuracy that chooses comes from the checkpoint callback
    (synced across ranks, so every rank chooses alike); the history is read back from the CSV log.
    """
    runs.seed_everything(args.seed)
    module = make_module(spec, args)
    callbacks: list[Any] = runs.checkpoints(folder / "checkpoints", "val_acc", "max", args.ckpt_every_n_steps)
    if final and args.patience:
        callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=args.patience))
    trainer = runs.make_trainer(args, folder, callbacks, epochs)
    clock = runs.Stopwatch()
    runs.fit(trainer, module, folder, args.resume, datamodule=dm)
    wall = clock()
    digests = runs.parameter_digests(module)
    history = runs.read_metrics(folder) if runs.is_global_zero() else []
    best = callbacks[0]
    val_acc = float(best.best_model_score)
    val_accs = [row.get("val_acc", float("nan")) for row in history]
    return {
        "spec": spec,
        "epochs": len(history),
        "wall_s": round(wall, 1),
        "val_acc": val_acc,
        "best_epoch": 1 + val_accs.index(max(val_accs)) if history else None,
        "history": history,
        "trainer": trainer,
        "digests": digests,
        "ckpt_path": folder / "checkpoints" / "best.ckpt",
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
            runs.echo(
                f"[sweep] rung {rung}, {describe(spec)}: val acc {100 * r['val_acc']:.2f}% after {epochs} "
                f"epochs ({r['wall_s']:.0f} s)"
            )
            rows[name] = r
        keep = math.ceil(len(alive) / 3)
        if args.halving == 1 or keep <= 1:
            break
        ranked = sorted(alive, key=lambda spec: -rows[candidate_name(spec)]["val_acc"])  # stable: ties keep order
        alive = [spec for spec in alive if spec in ranked[:keep]]
        epochs, rung = epochs * args.halving, rung + 1
    return [rows[candidate_name(spec)] for spec in candidates(args)]


def plot_sweep(rows: list[dict[str, Any]], model: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    if model == "softmax":
        ax.plot([r["spec"]["hidden"] for r in rows], [100 * r["val_acc"] for r in rows], "o-")
        ax.set(xscale="log", xlabel="hidden units")
        ax.set_xticks([r["spec"]["hidden"] for r in rows], [str(r["spec"]["hidden"]) for r in rows])
    else:
        for h in sorted({r["spec"]["hidden"] for r in rows}):
            sub = [r for r in rows if r["spec"]["hidden"] == h]
            ax.plot(
                [r["spec"]["kernel_size"] for r in sub], [100 * r["val_acc"] for r in sub], "o-", label=f"hidden {h}"
            )
        ax.set(xlabel="filter size k (k x k)")
        ax.set_xticks(sorted({r["spec"]["kernel_size"] for r in rows}))
        ax.legend()
    ax.set(ylabel="validation accuracy (%)", title=f"{model}: sweep, validation accuracy")
    ax.grid(alpha=0.3)
    runs.save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_confusion(preds: torch.Tensor, labels: torch.Tensor, title: str, path: Path) -> torch.Tensor:
    """torchmetrics' confusion matrix and its own plot; returns the matrix (true x predicted)."""
    metric = MulticlassConfusionMatrix(num_classes=10, sync_on_compute=False)  # rank zero alone
    metric.update(preds, labels)
    fig, ax = metric.plot(add_text=True)
    ax.set(title=title, xlabel="predicted", ylabel="true")
    fig.set_size_inches(6.5, 6)
    runs.save_figure(fig, path, dpi=120, bbox_inches="tight")
    return metric.compute()


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
    runs.save_figure(fig, path, dpi=120, bbox_inches="tight")


def describe(spec: dict[str, Any]) -> str:
    if spec["kind"] == "softmax":
        return f"hidden {spec['hidden']}"
    return f"{spec['filters']} filters {spec['kernel_size']}x{spec['kernel_size']}, hidden {spec['hidden']}"


def sweep_markdown(results: dict[str, Any]) -> str:
    model = results["model"]
    cfg = results["config"]
    head = "| hidden | val acc (%) | epochs | rung | wall (s) |\n|---:|---:|---:|---:|---:|"
    if model == "cnn":
        head = "| filters | k | hidden | val acc (%) | epochs | rung | wall (s) |\n|---:|---:|---:|---:|---:|---:|---:|"
    halving = (
        f"Successive halving: every candidate trains {cfg['sweep_epochs']} epoch(s); the best third by "
        f"validation accuracy (rounded up) trains again from scratch for {cfg.get('halving', 1)} times as many "
        "epochs, while that leaves more than one; the choice is the best of the last rung."
        if cfg.get("halving", 1) > 1
        else f"Every candidate trains {cfg['sweep_epochs']} epoch(s)."
    )
    lines = [
        f"# MNIST {model}: sweep on the 5,000 validation digits",
        "",
        f"{halving} {cfg['optimizer']}, {cfg['scheduler']} schedule, peak lr {cfg['lr']}, "
        f"weight decay {cfg['weight_decay']}, batch "
        f"{cfg['batch_size']}, training digits distorted (shifts of up to {cfg['max_shift']} px, rotations of up "
        f"to {cfg.get('max_rotation', 0)} degrees, scaling by up to {cfg.get('max_scale', 0)}, elastic alpha "
        f"{cfg.get('elastic_alpha', 0)} px, sigma {cfg.get('elastic_sigma', 0)} px).",
        "",
        head,
    ]
    chosen = results["chosen"]["spec"]
    for row in results["candidates"]:
        s = row["spec"]
        mark = " **(chosen)**" if s == chosen else ""
        sizes = f"| {s['hidden']}" if model == "softmax" else f"| {s['filters']} | {s['kernel_size']} | {s['hidden']}"
        lines.append(
            f"{sizes} | {100 * row['val_acc']:.2f}{mark} | {row['epochs']} | {row.get('rung', 0)} "
            f"| {row['wall_s']:.0f} |"
        )
    final = results["final"]
    lines += [
        "",
        f"Chosen on validation: **{describe(chosen)}**. Retrained from scratch for {final['epochs']} epochs, "
        f"{cfg['scheduler']} schedule "
        f"(checkpoint of epoch {final['best_epoch']} kept, chosen on validation): val accuracy "
        f"**{100 * final['val_acc']:.2f}%**, test accuracy **{100 * results['test_acc']:.2f}%** "
        f"on the {results['test_size']:,} test digits.",
        "",
        f"Wall time: sweep {results['sweep_wall_s']:.0f} s, final training {final['wall_s']:.0f} s, "
        f"total {results['total_wall_s']:.0f} s on {results['run']['world_size']} x "
        f"{results['run']['device']} ({results['run']['precision']}).",
    ]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def predict(module: ClassifierModule, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval().to(device)
    preds, labels = [], []
    for x, y in loader:
        preds.append(module(x.to(device)).argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def candidate_name(spec: dict[str, Any]) -> str:
    if spec["kind"] == "softmax":
        return f"hidden{spec['hidden']}"
    return f"f{spec['filters']}-k{spec['kernel_size']}-hidden{spec['hidden']}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clock = runs.Stopwatch()
    with runs.RunFolder(args.out, args.resume) as run:
        dm = MNISTDataModule(
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
        if len(candidates(args)) > 1 or not args.final_epochs:
            rows = successive_halving(args, dm, run.work / "sweep")
            top = max(r["rung"] for r in rows)
            # The best of the last rung; first of equals: the smaller/earlier candidate.
            best = max((r for r in rows if r["rung"] == top), key=lambda r: r["val_acc"])
        else:  # one candidate (a seed study's rerun of a chosen size): nothing to choose
            rows, best = [], {"spec": candidates(args)[0], "val_acc": float("nan")}
        sweep_wall = clock()
        if rows:
            runs.echo(f"[chosen] {describe(best['spec'])} (val acc {100 * best['val_acc']:.2f}%)")
        final = train(best["spec"], args, dm, args.final_epochs, run.work, final=True) if args.final_epochs else best
        if not runs.is_global_zero():
            return {}  # the other ranks have done their share: training

        # The test digits are used once, by the chosen model only.
        model = runs.load_module(ClassifierModule, final["ckpt_path"])
        dm.setup("test")
        device = final["trainer"].strategy.root_device
        # All 10k digits here, on rank zero alone: not the data module's loader, which shards by rank.
        preds, labels = predict(model, DataLoader(dm.test_set, batch_size=dm.eval_batch_size), device)
        test_acc = (preds == labels).float().mean().item()
        runs.echo(f"[test] {describe(best['spec'])}: test acc {100 * test_acc:.2f}%")
        cm = plot_confusion(
            preds,
            labels,
            f"MNIST {args.model}: test confusion matrix ({100 * test_acc:.2f}% correct)",
            run.work / "confusion_matrix.png",
        )

        def public(r: dict[str, Any]) -> dict[str, Any]:
            return {
                k: r[k]
                for k in ("spec", "val_acc", "best_epoch", "epochs", "wall_s", "history", "rung", "val_by_rung")
                if k in r
            }

        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        results = {
            "model": args.model,
            "run": runs.run_record(args, final["trainer"], clock(), final["digests"]),
            "config": config,
            "split": {"train": len(dm.train_set), "val": len(dm.val_set), "split_seed": dm.split_seed},
            "candidates": [public(r) for r in rows],
            "chosen": {"spec": best["spec"], "sweep_val_acc": best["val_acc"] if rows else None},
            "final": public(final),
            "test_acc": test_acc,
            "test_size": len(labels),
            "confusion_matrix": cm.tolist(),
            "checkpoint": runs.relative(final["ckpt_path"], run.work),
            "sweep_wall_s": round(sweep_wall, 1),
            "total_wall_s": round(clock(), 1),
        }
        runs.write_json(run.work / "results.json", results)
        if rows:
            runs.write_text(run.work / "sweep.md", sweep_markdown(results))
        runs.plot_curves(
            {"": final["history"]},
            [("loss", "loss"), ("acc", "accuracy")],
            run.work / "learning_curves.png",
            f"MNIST {args.model}: {describe(best['spec'])} (train: augmented batches)",
        )
        if rows:
            plot_sweep(rows, args.model, run.work / "sweep.png")
        if args.model == "cnn":
            plot_filters(model.net.conv.weight, run.work / "first_layer_filters.png")
    runs.echo(f"[done] {clock():.0f} s; results in {run.out}")
    return results


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    runs.cli(main, "digit_classification")


if __name__ == "__main__":
    cli()
