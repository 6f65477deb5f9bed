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
import os
from pathlib import Path

import torch

from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.hymenoptera import HymenopteraDataModule, denormalize
from lightning_modules.paths import default_out
from lightning_modules.pretrained import BACKBONES
from lightning_modules.reporting import figures, reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything
from lightning_modules.transfer import BN_STATS, MODES


def train_model(
    model: ClassifierModule,
    datamodule: HymenopteraDataModule,
    args: argparse.Namespace,
    folder: str | os.PathLike,
    **trainer_kwargs,
) -> tuple[ClassifierModule, list[dict[str, float]], training.FitResult]:
    """Train with Lightning in `folder`, keeping the best epoch (``training.fit_best``; with --resume:
    continue from its last checkpoint); return the model restored to its best epoch, the history,
    and the fit's result (trainer, the ranks' parameter digests).

    The best epoch's weights come back from the checkpoint Lightning kept for it, loaded the standard
    way (``load_from_checkpoint``), on global rank zero; the other ranks keep their model and get an
    empty history.
    """
    callbacks = trainer_kwargs.pop("callbacks", [])
    fitted = training.fit_best(
        model,
        datamodule,
        args,
        folder,
        args.max_epochs,
        "val_acc",
        "max",
        callbacks,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    if not is_global_zero():
        return model, [], fitted
    return training.load_module(ClassifierModule, fitted.best_path), fitted.history, fitted


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
    return figures.prediction_grid(
        denormalize(images), [classes[p] for p in predicted], [classes[t] for t in labels], path, title
    )


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
    parser.add_argument(
        "--max-epochs", "--epochs", type=command_line.positive_int, default=12, help="epochs per scenario"
    )
    parser.add_argument(
        "--image-size", type=command_line.positive_int, default=224, help="crop size fed to the network"
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train on centre crops, without random crops and flips (exactly repeatable runs)",
    )
    parser.add_argument(
        "--lr",
        type=command_line.positive_float,
        default=1e-5,
        help="learning rate of the pretrained trunk (finetune; it starts from the probe's head)",
    )
    parser.add_argument(
        "--head-lr", type=command_line.positive_float, default=1e-2, help="learning rate of the new last layer (both)"
    )
    parser.add_argument("--momentum", type=command_line.probability, default=0.9, help="SGD momentum")
    parser.add_argument(
        "--bn-stats",
        choices=BN_STATS,
        default="pretrained",
        help="finetune: keep BatchNorm running statistics (pretrained) or re-estimate them (update)",
    )
    parser.add_argument(
        "--step-size", type=command_line.positive_int, default=7, help="epochs between learning-rate drops"
    )
    parser.add_argument("--gamma", type=command_line.positive_float, default=0.1, help="learning-rate drop factor")
    command_line.add_run_args(parser, batch_size=32, num_workers=2)
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
    args.out = args.out or default_out("transfer_learning")
    return args


def scenario_module(mode: str, args: argparse.Namespace, num_classes: int) -> ClassifierModule:
    """The ClassifierModule of one scenario: SGD with a step schedule; the new head learns at --head-lr."""
    spec = {
        "name": f"transfer_{args.backbone}",
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


def make_datamodule(args: argparse.Namespace) -> HymenopteraDataModule:
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
    return datamodule


def scenario_summary(mode: str, args, model, history, fitted, wall: float, val_images: int) -> dict:
    """What results.json keeps of one scenario."""
    best = training.best_row(history, "val_acc", "max")
    return {
        "best_val_acc": best["val_acc"],
        "best_val_correct": f"{round(best['val_acc'] * val_images)}/{val_images}",
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "wall_time_s": round(wall, 1),
        "trunk_lr": args.lr if mode == "finetune" else None,
        "head_init": "freeze scenario's best" if mode == "finetune" and args.finetune_init == "freeze" else "random",
        "head_lr": args.head_lr,
        "bn_stats": args.bn_stats if mode == "finetune" else "pretrained",
        "momentum": args.momentum,
        "step_size": args.step_size,
        "gamma": args.gamma,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameter_digest_per_rank": fitted.digests,
        "history": history,
    }


def run_scenarios(args: argparse.Namespace, datamodule: HymenopteraDataModule, work: Path, clock) -> tuple[dict, dict]:
    """Each scenario in turn (freeze first, so fine-tuning can start from its best head); returns the
    scenarios' summaries and the run record (rank zero's; empty elsewhere)."""
    scenarios, run_record = {}, None
    probe: dict[str, torch.Tensor] | None = None  # the freeze scenario's best last layer
    for mode in args.scenarios:
        seed_everything(args.seed)
        scenario_clock = record.Stopwatch()
        module = scenario_module(mode, args, len(datamodule.classes))
        if mode == "finetune" and args.finetune_init == "freeze":
            module.net.head.load_state_dict(probe)
        model, history, fitted = train_model(module, datamodule, args, work / mode)
        if mode == "freeze":
            # Rank zero restored the best epoch; every rank starts fine-tuning from its head.
            head = {k: v.detach().cpu().clone() for k, v in model.net.head.state_dict().items()}
            probe = fitted.trainer.strategy.broadcast(head, src=0)
        wall = scenario_clock()
        if not is_global_zero():
            continue  # the other ranks have done their share: training
        run_record = record.run_record(args, fitted.trainer, clock(), fitted.digests)
        scenarios[mode] = summary = scenario_summary(mode, args, model, history, fitted, wall, len(datamodule.val_set))
        title = f"{mode} ({args.backbone}), best epoch {summary['best_epoch']}: val acc {summary['best_val_acc']:.3f}"
        visualize_model(model, datamodule, work / f"visualize_{mode}.png", title=title)
        echo(f"[{mode}] best val acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}, {wall:.1f} s")
    return scenarios, run_record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, args.resume) as run:
        datamodule = make_datamodule(args)
        scenarios, run_record = run_scenarios(args, datamodule, run.work, clock)
        if not is_global_zero():
            return {}
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
            "scenarios": scenarios,
            "total_wall_time_s": round(clock(), 1),
            "run": run_record,
        }
        storage.write_json(run.work / "results.json", summary)
        figures.plot_curves(
            {m: r["history"] for m, r in summary["scenarios"].items()},
            [("loss", "mean cross-entropy"), ("acc", "accuracy")],
            run.work / "learning_curves.png",
        )
        storage.write_text(run.work / "results.md", reports.transfer_results(summary))
    return summary


def cli() -> None:
    """The console command: main() with the process's arguments; missing weights or data end in one line."""
    command_line.main(main, "transfer_learning")


if __name__ == "__main__":
    cli()
