"""Transfer learning on ants versus bees: fine-tune every layer versus train only a new last layer.

Runs both scenarios on a pretrained trunk (MobileNetV2 by default) whose last layer is
``customops.Linear`` and whose loss is customops' softmax loss (``ClassifierModule``), and
writes the run folder ``--out`` (default ``runs/transfer_learning/``) all at once when the run
ends: results.json (best validation accuracy, its epoch, wall time and history per scenario,
and the run record), results.md, learning_curves.png, visualize_<scenario>.png, and per
scenario its CSV (and TensorBoard) logs and checkpoints/{best,last}.ckpt.

    CUSTOMOPS_MIRROR=../shared/data python scripts/transfer_learning.py
    python scripts/transfer_learning.py --backbone resnet18 --data-root path/to/hymenoptera_data
    python scripts/transfer_learning.py --devices 2 --strategy ddp --accelerator cpu
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; no display on these machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lightning_modules import runs  # noqa: E402
from lightning_modules.classifier import ClassifierModule  # noqa: E402
from lightning_modules.data.hymenoptera import HymenopteraDataModule, denormalize  # noqa: E402
from lightning_modules.pretrained import BACKBONES  # noqa: E402
from lightning_modules.transfer import BN_STATS, MODES  # noqa: E402


def train_model(
    model: ClassifierModule,
    datamodule: HymenopteraDataModule,
    args: argparse.Namespace,
    folder: str | os.PathLike,
    **trainer_kwargs,
) -> tuple[ClassifierModule, list[dict[str, float]], dict]:
    """Train with Lightning in `folder`, validating every epoch (with --resume: continue from its last
    checkpoint); return the model restored to its best epoch, the history, and the trainer with the
    ranks' parameter digests.

    The best epoch is the first one with the highest validation accuracy; its weights come back
    from the checkpoint Lightning kept for it, loaded the standard way (``load_from_checkpoint``).
    The history is read back from the CSV log (on global rank zero; empty elsewhere).
    """
    folder = Path(folder)
    callbacks = [
        *runs.checkpoints(folder / "checkpoints", "val_acc", "max", args.ckpt_every_n_steps),
        *trainer_kwargs.pop("callbacks", []),
    ]
    trainer = runs.make_trainer(args, folder, callbacks, args.max_epochs, num_sanity_val_steps=0, **trainer_kwargs)
    with warnings.catch_warnings():
        # A frozen trunk stays in eval mode on purpose (its BatchNorm statistics are fixed).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        runs.fit(trainer, model, folder, args.resume, datamodule=datamodule)
    digests = runs.parameter_digests(model)
    best = callbacks[0]
    if not best.best_model_path:
        raise RuntimeError(f"train_model({folder.name}): no validation result, so no best epoch to restore")
    info = {"trainer": trainer, "digests": digests}
    if not runs.is_global_zero():
        return model, [], info
    restored = runs.load_module(ClassifierModule, best.best_model_path)
    return restored, runs.read_metrics(folder), info


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The history row with the highest validation accuracy (the first one on ties)."""
    return max(history, key=lambda row: (row["val_acc"], -row["epoch"]))


@torch.no_grad()
def visualize_model(
    model: ClassifierModule,
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
        ax.set_title(
            f"predicted: {classes[pred]}\ntrue: {classes[true]}",
            color="tab:green" if pred == true else "tab:red",
            fontsize=10,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return runs.save_figure(fig, path, dpi=100)


def results_markdown(summary: dict) -> str:
    """A short Markdown table of the run, for the report folder."""
    lines = [
        "# Transfer learning on ants vs bees",
        "",
        f"Backbone `{summary['backbone']}` ({summary['weights']} weights), "
        f"{summary['train_images']} training / {summary['val_images']} validation images, "
        f"{summary['run']['world_size']} x {summary['run']['device']} ({summary['run']['precision']}), "
        f"seed {summary['seed']}.",
        f"Command: `{summary['run']['command']}`",
        "",
        "| scenario | best val acc | best epoch | epochs run | trunk lr | head lr | trainable params | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in summary["scenarios"].items():
        trunk_lr = r["trunk_lr"] if r["trunk_lr"] is not None else "frozen"
        lines.append(
            f"| {mode} | {r['best_val_acc']:.4f} ({r['best_val_correct']}) | {r['best_epoch']} "
            f"| {r['epochs_run']} | {trunk_lr} | "
            f"{r['head_lr']} | {r['trainable_parameters']:,} | {r['wall_time_s']:.1f} |"
        )
    lines += [
        "",
        f"Both scenarios together: {summary['total_wall_time_s']:.1f} s.",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    lines += [f"![{mode}](visualize_{mode}.png)" for mode in summary["scenarios"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--backbone", choices=BACKBONES, default="mobilenet_v2")
    parser.add_argument(
        "--weights",
        choices=("imagenet", "none"),
        default="imagenet",
        help="'none' trains from a random trunk (on purpose only)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=MODES,
        default=["freeze", "finetune"],
        help="run in this order (freeze first when --finetune-init freeze)",
    )
    parser.add_argument(
        "--finetune-init",
        choices=("freeze", "pretrained"),
        default="freeze",
        help="finetune's new last layer starts from the freeze scenario's best one (linear probe, "
        "then fine-tune) or from random weights",
    )
    parser.add_argument("--max-epochs", "--epochs", type=runs.positive_int, default=12, help="epochs per scenario")
    parser.add_argument("--image-size", type=runs.positive_int, default=224, help="crop size fed to the network")
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train on centre crops, without random crops and flips (exactly repeatable runs)",
    )
    parser.add_argument(
        "--lr",
        type=runs.positive_float,
        default=1e-5,
        help="learning rate of the pretrained trunk (finetune; it starts from the probe's head)",
    )
    parser.add_argument(
        "--head-lr", type=runs.positive_float, default=1e-2, help="learning rate of the new last layer (both)"
    )
    parser.add_argument("--momentum", type=runs.probability, default=0.9, help="SGD momentum")
    parser.add_argument(
        "--bn-stats",
        choices=BN_STATS,
        default="pretrained",
        help="finetune: keep BatchNorm running statistics (pretrained) or re-estimate them (update)",
    )
    parser.add_argument("--step-size", type=runs.positive_int, default=7, help="epochs between learning-rate drops")
    parser.add_argument("--gamma", type=runs.positive_float, default=0.1, help="learning-rate drop factor")
    runs.add_run_args(parser, batch_size=32, num_workers=2)
    args = parser.parse_args(argv)
    if len(set(args.scenarios)) != len(args.scenarios):
        parser.error(f"--scenarios: each scenario once, got {' '.join(args.scenarios)}")
    if "finetune" in args.scenarios and args.finetune_init == "freeze":
        if "freeze" not in args.scenarios:
            parser.error(
                "--finetune-init freeze starts fine-tuning from the freeze scenario's last layer: "
                "run both (--scenarios freeze finetune) or pass --finetune-init pretrained"
            )
        args.scenarios = sorted(args.scenarios, key=lambda m: m == "finetune")  # freeze first
    args.out = args.out or runs.default_out("transfer_learning")
    return args


def scenario_module(mode: str, args: argparse.Namespace, num_classes: int) -> ClassifierModule:
    """The ClassifierModule of one scenario: SGD with a step schedule; the new head learns at --head-lr."""
    spec = {
        "kind": "transfer",
        "backbone": args.backbone,
        "weights": args.weights,
        "num_classes": num_classes,
        "mode": mode,
        "bn_stats": args.bn_stats if mode == "finetune" else "pretrained",
    }
    # Frozen: only the head has trainable parameters, so its learning rate is the only one.
    lr = args.lr if mode == "finetune" else args.head_lr
    return ClassifierModule(
        spec,
        lr=lr,
        head_lr=args.head_lr,
        optimizer="sgd",
        momentum=args.momentum,
        nesterov=False,
        scheduler="step",
        step_size=args.step_size,
        gamma=args.gamma,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    clock = runs.Stopwatch()
    with runs.RunFolder(args.out, args.resume) as run:
        datamodule = HymenopteraDataModule(
            args.data_root,
            args.cache_dir,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            image_size=args.image_size,
            augment=not args.no_augment,
            seed=args.seed,
        )
        datamodule.prepare_data()  # finds the folder (or downloads it) before the ranks start
        datamodule.setup("fit")
        summary = {
            "backbone": args.backbone,
            "weights": args.weights,
            "data_root": str(datamodule.data_path),
            "train_images": len(datamodule.train_set),
            "val_images": len(datamodule.val_set),
            "classes": datamodule.classes,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "augment": not args.no_augment,
            "scenarios": {},
        }
        trainer_record = None
        probe: dict[str, torch.Tensor] | None = None  # the freeze scenario's best last layer
        for mode in args.scenarios:
            runs.seed_everything(args.seed)
            scenario_clock = runs.Stopwatch()
            module = scenario_module(mode, args, len(datamodule.classes))
            if mode == "finetune" and args.finetune_init == "freeze":
                module.net.head.load_state_dict(probe)
            model, history, info = train_model(module, datamodule, args, run.work / mode)
            if mode == "freeze":
                # Rank zero restored the best epoch; every rank starts fine-tuning from its head.
                head = {k: v.detach().cpu().clone() for k, v in model.net.head.state_dict().items()}
                probe = info["trainer"].strategy.broadcast(head, src=0)
            wall = scenario_clock()
            if not runs.is_global_zero():
                continue  # the other ranks have done their share: training
            trainer_record = runs.run_record(args, info["trainer"], clock(), info["digests"])
            best = best_epoch(history)
            summary["scenarios"][mode] = {
                "best_val_acc": best["val_acc"],
                "best_val_correct": f"{round(best['val_acc'] * len(datamodule.val_set))}/{len(datamodule.val_set)}",
                "best_epoch": best["epoch"],
                "epochs_run": len(history),
                "wall_time_s": round(wall, 1),
                "trunk_lr": args.lr if mode == "finetune" else None,
                "head_init": (
                    "freeze scenario's best" if mode == "finetune" and args.finetune_init == "freeze" else "random"
                ),
                "head_lr": args.head_lr,
                "bn_stats": args.bn_stats if mode == "finetune" else "pretrained",
                "momentum": args.momentum,
                "step_size": args.step_size,
                "gamma": args.gamma,
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "parameter_digest_per_rank": info["digests"],
                "history": history,
            }
            visualize_model(
                model,
                datamodule,
                run.work / f"visualize_{mode}.png",
                title=f"{mode} ({args.backbone}), best epoch {best['epoch']}: val acc {best['val_acc']:.3f}",
            )
            runs.echo(f"[{mode}] best val acc {best['val_acc']:.4f} at epoch {best['epoch']}, {wall:.1f} s")
        if not runs.is_global_zero():
            return {}
        summary["total_wall_time_s"] = round(clock(), 1)
        summary["run"] = trainer_record
        runs.write_json(run.work / "results.json", summary)
        runs.plot_curves(
            {m: r["history"] for m, r in summary["scenarios"].items()},
            [("loss", "mean cross-entropy"), ("acc", "accuracy")],
            run.work / "learning_curves.png",
        )
        runs.write_text(run.work / "results.md", results_markdown(summary))
    return summary


def cli() -> None:
    """The console command: main() with the process's arguments; missing weights or data end in one line."""
    runs.cli(main, "transfer_learning")


if __name__ == "__main__":
    cli()
