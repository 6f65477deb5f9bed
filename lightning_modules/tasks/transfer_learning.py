"""Transfer learning on ants versus bees: fine-tune every layer versus train only a new last layer.

Runs both scenarios on a pretrained trunk (MobileNetV2 by default) whose last layer is
``customops.Linear`` and whose loss is ``customops.SoftmaxLoss``, and writes into ``--out``:
results.json (best validation accuracy, its epoch, wall time and history per scenario),
results.md, learning_curves.png and visualize_<scenario>.png.

    CUSTOMOPS_MIRROR=../shared/data python scripts/transfer_learning.py
    python scripts/transfer_learning.py --backbone resnet18 --data-dir path/to/hymenoptera_data
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; no display on these machines
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_modules.data.hymenoptera import HymenopteraDataModule, denormalize
from lightning_modules.pretrained import BACKBONES, PretrainedWeightsError
from lightning_modules.transfer import BN_STATS, MODES, TransferClassifier, build_transfer_net

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "reports" / "transfer_learning"
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class History(Callback):
    """Records the epoch-level metrics after each epoch's validation, and prints one line."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.rows: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation has already run inside this epoch, so both splits' metrics are here.
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        row.update({k: float(metrics[k]) for k in HISTORY_KEYS if k in metrics})
        row["seconds"] = round(time.perf_counter() - self._start, 2)
        self.rows.append(row)
        shown = "  ".join(f"{k} {row[k]:.4f}" for k in HISTORY_KEYS if k in row)
        print(f"[{self.name}] epoch {row['epoch']}: {shown}  ({row['seconds']:.1f} s)", flush=True)


def train_model(
    model: TransferClassifier,
    datamodule: pl.LightningDataModule,
    epochs: int,
    checkpoint_dir: str | os.PathLike,
    name: str = "model",
    **trainer_kwargs,
) -> tuple[TransferClassifier, list[dict[str, float]]]:
    """Train with Lightning, validating every epoch; return the model restored to its best epoch and the history.

    The best epoch is the first one with the highest validation accuracy; its weights come back
    from the checkpoint Lightning kept for it.
    """
    if epochs < 1:
        raise ValueError(f"train_model: epochs must be >= 1, got {epochs}")
    history = History(name)
    best = ModelCheckpoint(
        dirpath=checkpoint_dir, filename=f"{name}-best", monitor="val_acc", mode="max", save_top_k=1
    )
    options = dict(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[best, history, *trainer_kwargs.pop("callbacks", [])],
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
    )
    options.update(trainer_kwargs)
    trainer = pl.Trainer(**options)
    with warnings.catch_warnings():
        # A frozen trunk stays in eval mode on purpose (its BatchNorm statistics are fixed).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(model, datamodule=datamodule)
    if not best.best_model_path:
        raise RuntimeError(f"train_model({name}): no validation result, so no best epoch to restore")
    state = torch.load(best.best_model_path, map_location=model.device, weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model, history.rows


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The history row with the highest validation accuracy (the first one on ties)."""
    return max(history, key=lambda row: (row["val_acc"], -row["epoch"]))


@torch.no_grad()
def visualize_model(
    model: TransferClassifier,
    datamodule: HymenopteraDataModule,
    path: str | os.PathLike,
    num_images: int = 8,
    title: str = "",
) -> Path:
    """Write a PNG grid of validation images, each titled with its predicted and true class.

    The images are spread evenly over the validation set, so every class appears.
    """
    if num_images < 1:
        raise ValueError(f"visualize_model: num_images must be >= 1, got {num_images}")
    datamodule.setup("fit")
    dataset, classes = datamodule.val_set, datamodule.classes
    num_images = min(num_images, len(dataset))
    indices = [round(i * (len(dataset) - 1) / max(num_images - 1, 1)) for i in range(num_images)]
    images = torch.stack([dataset[i][0] for i in indices])  # (B, 3, H, W)
    labels = [dataset[i][1] for i in indices]
    was_training = model.training
    model.eval()
    predicted = model(images.to(model.device)).argmax(dim=1).tolist()
    model.train(was_training)

    columns = min(4, num_images)
    rows = math.ceil(num_images / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, true in zip(axes.flat, denormalize(images), predicted, labels):
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())  # (H, W, 3) for matplotlib
        ax.set_title(f"predicted: {classes[pred]}\ntrue: {classes[true]}",
                     color="tab:green" if pred == true else "tab:red", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def _save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a PNG atomically (write a temporary file, then rename), and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _write_text(path: Path, text: str) -> None:
    """Write a text file atomically, so an interrupted run never leaves half a result."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run_scenario(mode: str, datamodule: HymenopteraDataModule, backbone_name: str, weights: str,
                  epochs: int, out: str | os.PathLike, hparams: dict, trainer_kwargs: dict,
                  bn_stats: str = "pretrained") -> tuple[TransferClassifier, list[dict]]:
    datamodule.setup("fit")
    net = build_transfer_net(backbone_name, weights, len(datamodule.classes), mode, bn_stats)
    model = TransferClassifier(net, **hparams)
    return train_model(model, datamodule, epochs, Path(out) / "checkpoints" / mode, name=mode, **trainer_kwargs)


def finetune(datamodule: HymenopteraDataModule, backbone_name: str = "mobilenet_v2", weights: str = "imagenet",
             epochs: int = 12, out: str | os.PathLike = DEFAULT_OUT, lr: float = 1e-4, head_lr: float = 1e-2,
             momentum: float = 0.9, step_size: int = 7, gamma: float = 0.1, bn_stats: str = "pretrained",
             **trainer_kwargs):
    """Start from the pretrained weights, replace the last layer, and train every layer.

    The trunk learns at `lr`, the new last layer at `head_lr`; bn_stats="pretrained" keeps the
    BatchNorm running statistics fixed. Returns (model at its best epoch, history).
    """
    hparams = dict(lr=lr, head_lr=head_lr, momentum=momentum, step_size=step_size, gamma=gamma)
    return _run_scenario("finetune", datamodule, backbone_name, weights, epochs, out, hparams, trainer_kwargs,
                         bn_stats)


def freeze(datamodule: HymenopteraDataModule, backbone_name: str = "mobilenet_v2", weights: str = "imagenet",
           epochs: int = 12, out: str | os.PathLike = DEFAULT_OUT, head_lr: float = 1e-2,
           momentum: float = 0.9, step_size: int = 7, gamma: float = 0.1, **trainer_kwargs):
    """Start from the pretrained weights and train only a new last layer; the trunk gets no gradients.

    Returns (model at its best epoch, history).
    """
    # Only the head has trainable parameters, so its learning rate is the only one.
    hparams = dict(lr=head_lr, head_lr=head_lr, momentum=momentum, step_size=step_size, gamma=gamma)
    return _run_scenario("freeze", datamodule, backbone_name, weights, epochs, out, hparams, trainer_kwargs)


def plot_learning_curves(results: dict[str, dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, train and validation, for each scenario."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for color, (mode, result) in zip(("tab:blue", "tab:orange"), results.items()):
        history = result["history"]
        epochs = [row["epoch"] for row in history]
        for split, style in (("train", "--"), ("val", "-")):
            ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], style, color=color,
                         label=f"{mode} {split}")
            ax_acc.plot(epochs, [row[f"{split}_acc"] for row in history], style, color=color,
                        label=f"{mode} {split}")
        ax_acc.plot([result["best_epoch"]], [result["best_val_acc"]], "o", color=color)
    ax_loss.set(xlabel="epoch", ylabel="mean cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dot: best validation epoch)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save_figure(fig, path)


def results_markdown(summary: dict) -> str:
    """A short Markdown table of the run, for the report folder."""
    lines = [
        "# Transfer learning on ants vs bees",
        "",
        f"Backbone `{summary['backbone']}` ({summary['weights']} weights), "
        f"{summary['train_images']} training / {summary['val_images']} validation images, "
        f"device {summary['device']}, seed {summary['seed']}.",
        f"Command: `{summary['command']}`",
        "",
        "| scenario | best val acc | best epoch | epochs run | trunk lr | head lr | trainable params | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in summary["scenarios"].items():
        trunk_lr = r["trunk_lr"] if r["trunk_lr"] is not None else "frozen"
        lines.append(f"| {mode} | {r['best_val_acc']:.4f} ({r['best_val_correct']}) | {r['best_epoch']} | {r['epochs_run']} | {trunk_lr} | "
                     f"{r['head_lr']} | {r['trainable_parameters']:,} | {r['wall_time_s']:.1f} |")
    lines += ["", f"Both scenarios together: {summary['total_wall_time_s']:.1f} s.", "",
              "![learning curves](learning_curves.png)", ""]
    lines += [f"![{mode}](visualize_{mode}.png)" for mode in summary["scenarios"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="mobilenet_v2")
    parser.add_argument("--weights", choices=("imagenet", "none"), default="imagenet",
                        help="'none' trains from a random trunk (on purpose only)")
    parser.add_argument("--data-dir", default=None,
                        help="hymenoptera_data folder; default $CUSTOMOPS_MIRROR/hymenoptera_data, else download")
    parser.add_argument("--scenarios", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--epochs", type=int, default=12, help="epochs per scenario")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224, help="crop size fed to the network")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the pretrained trunk (finetune)")
    parser.add_argument("--head-lr", type=float, default=1e-2, help="learning rate of the new last layer (both)")
    parser.add_argument("--bn-stats", choices=BN_STATS, default="pretrained",
                        help="finetune: keep BatchNorm running statistics (pretrained) or re-estimate them (update)")
    parser.add_argument("--step-size", type=int, default=7, help="epochs between learning-rate drops")
    parser.add_argument("--gamma", type=float, default=0.1, help="learning-rate drop factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    datamodule = HymenopteraDataModule(args.data_dir, batch_size=args.batch_size, num_workers=args.num_workers,
                                       image_size=args.image_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    summary = {
        "backbone": args.backbone,
        "weights": args.weights,
        "data_dir": str(datamodule.root),
        "train_images": len(datamodule.train_set),
        "val_images": len(datamodule.val_set),
        "classes": datamodule.classes,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "command": " ".join(["python", "scripts/transfer_learning.py", *(argv if argv is not None else sys.argv[1:])]),
        "scenarios": {},
    }
    start_all = time.perf_counter()
    for mode in args.scenarios:
        pl.seed_everything(args.seed, workers=True)
        start = time.perf_counter()
        common = dict(head_lr=args.head_lr, step_size=args.step_size, gamma=args.gamma)
        if mode == "finetune":
            model, history = finetune(datamodule, args.backbone, args.weights, args.epochs, args.out,
                                      lr=args.lr, bn_stats=args.bn_stats, **common)
        else:
            model, history = freeze(datamodule, args.backbone, args.weights, args.epochs, args.out, **common)
        wall = time.perf_counter() - start
        best = best_epoch(history)
        summary["scenarios"][mode] = {
            "best_val_acc": best["val_acc"],
            "best_val_correct": f"{round(best['val_acc'] * len(datamodule.val_set))}/{len(datamodule.val_set)}",
            "best_epoch": best["epoch"],
            "epochs_run": len(history),
            "wall_time_s": round(wall, 1),
            "trunk_lr": args.lr if mode == "finetune" else None,
            "head_lr": args.head_lr,
            "bn_stats": args.bn_stats if mode == "finetune" else "pretrained",
            "momentum": 0.9,
            "step_size": args.step_size,
            "gamma": args.gamma,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "history": history,
        }
        visualize_model(model, datamodule, args.out / f"visualize_{mode}.png",
                        title=f"{mode} ({args.backbone}), best epoch {best['epoch']}: val acc {best['val_acc']:.3f}")
        summary["total_wall_time_s"] = round(time.perf_counter() - start_all, 1)
        # Written after every scenario, so a later crash keeps the finished ones.
        _write_text(args.out / "results.json", json.dumps(summary, indent=2) + "\n")
        print(f"[{mode}] best val acc {best['val_acc']:.4f} at epoch {best['epoch']}, {wall:.1f} s", flush=True)
    plot_learning_curves(summary["scenarios"], args.out / "learning_curves.png")
    _write_text(args.out / "results.md", results_markdown(summary))
    return summary


if __name__ == "__main__":
    try:
        main()
    except (PretrainedWeightsError, FileNotFoundError, ValueError) as err:
        # Missing weights or data are the user's to fix: say what, without a traceback.
        sys.exit(f"transfer_learning: {err}")
