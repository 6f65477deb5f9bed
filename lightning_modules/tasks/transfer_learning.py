"""Transfer learning on ants versus bees: fine-tune every layer versus train only a new last layer.

Runs both scenarios on a pretrained trunk (MobileNetV2 by default) converted to customops layers
(``--trunk native``: torchvision's own layers, for comparison), whose last layer is
``customops.Linear`` and whose loss is customops' softmax loss (``ClassifierModule``), and
writes the run folder ``--out`` (default ``./runs/transfer_learning/``) all at once when the run
ends: config.yaml (the resolved recipe, written first), results.json (the trunk, best validation accuracy,
its epoch, wall time and history per scenario, and the run record), results.md,
learning_curves.png, visualize_<scenario>.png, and per scenario its CSV (and TensorBoard) logs and
checkpoints/{best,last}.ckpt (self-contained: they load without the pretrained-weights package).

    CUSTOMOPS_MIRROR=../shared/data customops-transfer fit
    customops-transfer fit --backbone resnet18 --data.root path/to/hymenoptera_data
    customops-transfer fit --trunk native        # torchvision's own layers in the trunk, for comparison
    customops-transfer fit --trainer.devices 2 --trainer.strategy ddp --trainer.accelerator cpu
    customops-transfer predict --ckpt runs/transfer_learning/finetune/checkpoints/best.ckpt photo.jpg
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_modules import prediction
from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.hymenoptera import HymenopteraDataModule
from lightning_modules.paths import default_out
from lightning_modules.preprocessing import denormalize, photo_eval_spec
from lightning_modules.reporting import figures, reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.cli import DataOptions, NonNegativeInt, PositiveFloat, PositiveInt, Probability, RunOptions
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything


def train_model(
    model: ClassifierModule,
    datamodule: HymenopteraDataModule,
    args: TransferRecipe,
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


@dataclass
class TransferData(DataOptions):
    """hymenoptera_data (--data.<name>): 245 training and 153 validation images of ants and bees."""

    batch_size: PositiveInt = 32
    """training batch size per device"""
    num_workers: NonNegativeInt = 2
    """data-loader worker processes per device"""
    image_size: PositiveInt = 224
    """crop size fed to the network"""
    augment: bool = True
    """the tutorial's random crops and flips of the training images (false: centre crops, exactly
    repeatable runs)"""


@dataclass(kw_only=True)
class TransferRecipe(RunOptions):
    """Freeze a pretrained trunk and train a new last layer, then fine-tune every layer from it."""

    backbone: Literal["mobilenet_v2", "resnet18", "small_cnn"] = "mobilenet_v2"
    """the pretrained trunk (small_cnn: a small random stand-in, for smoke tests)"""
    trunk: Literal["customops", "native"] = "customops"
    """the trunk's layers: customops' hand-written ones (torchvision's network through customops.convert)
    or torch.nn's own (native, for comparison); the same weights either way"""
    weights: Literal["imagenet", "none"] = "imagenet"
    """the trunk's initial weights; none trains from a random trunk (on purpose only)"""
    scenarios: list[Literal["freeze", "finetune"]] = field(default_factory=lambda: ["freeze", "finetune"])
    """the scenarios, each once (freeze runs first when finetune_init is freeze)"""
    finetune_init: Literal["freeze", "pretrained"] = "freeze"
    """finetune's new last layer starts from the freeze scenario's best one (linear probe, then fine-tune)
    or from random weights"""
    max_epochs: PositiveInt = 12
    """epochs per scenario"""
    lr: PositiveFloat = 1e-5
    """learning rate of the pretrained trunk (finetune; it starts from the probe's head)"""
    head_lr: PositiveFloat = 1e-2
    """learning rate of the new last layer (both scenarios)"""
    momentum: Probability = 0.9
    """SGD momentum"""
    bn_stats: Literal["pretrained", "update"] = "pretrained"
    """finetune: keep the BatchNorm running statistics (pretrained) or re-estimate them (update)"""
    step_size: PositiveInt = 7
    """epochs between learning-rate drops"""
    gamma: PositiveFloat = 0.1
    """learning-rate drop factor"""
    data: TransferData = field(default_factory=TransferData)

    def __post_init__(self) -> None:
        if self.backbone == "small_cnn" and self.weights != "none":
            raise ValueError("--backbone small_cnn has no pretrained weights: pass --weights none")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError(f"scenarios: each scenario once, got {' '.join(self.scenarios)}")
        if "finetune" in self.scenarios and self.finetune_init == "freeze":
            if "freeze" not in self.scenarios:
                raise ValueError(
                    "finetune_init freeze starts fine-tuning from the freeze scenario's last layer: "
                    "run both (--scenarios [freeze,finetune]) or pass --finetune_init pretrained"
                )
            self.scenarios = sorted(self.scenarios, key=lambda m: m == "finetune")  # freeze first


@dataclass
class TransferPredict:
    """Classify one's own photos with a transfer-learning checkpoint (ants or bees)."""

    ckpt: Path
    """a scenario's checkpoint (<out>/<scenario>/checkpoints/best.ckpt of a fit)"""
    json: Path | None = None
    """also write the predictions to this JSON file"""


def scenario_module(mode: str, args: TransferRecipe, datamodule: HymenopteraDataModule) -> ClassifierModule:
    """The ClassifierModule of one scenario: SGD with a step schedule; the new head learns at --head-lr."""
    spec = {
        "name": f"transfer_{args.backbone}",
        "weights": args.weights,
        "num_classes": len(datamodule.classes),
        "mode": mode,
        "bn_stats": args.bn_stats if mode == "finetune" else "pretrained",
        "trunk": args.trunk,
    }
    # Frozen: only the head has trainable parameters, so its learning rate is the only one.
    lr = args.lr if mode == "finetune" else args.head_lr
    return ClassifierModule(
        spec,
        lr=lr,
        head_lr=args.head_lr,
        preprocessing=photo_eval_spec(datamodule.image_size, datamodule.resize),
        classes=datamodule.classes,
        optimizer="sgd",
        momentum=args.momentum,
        nesterov=False,
        scheduler="step",
        step_size=args.step_size,
        gamma=args.gamma,
    )


def make_datamodule(args: TransferRecipe) -> HymenopteraDataModule:
    datamodule = HymenopteraDataModule(
        args.data.root,
        args.data.cache_dir,
        batch_size=args.data.batch_size,
        num_workers=args.data.num_workers,
        image_size=args.data.image_size,
        augment=args.data.augment,
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


def run_scenarios(args: TransferRecipe, datamodule: HymenopteraDataModule, work: Path, clock) -> tuple[dict, dict]:
    """Each scenario in turn (freeze first, so fine-tuning can start from its best head); returns the
    scenarios' summaries and the run record (rank zero's; empty elsewhere)."""
    scenarios, run_record = {}, None
    probe: dict[str, torch.Tensor] | None = None  # the freeze scenario's best last layer
    for mode in args.scenarios:
        seed_everything(args.seed)
        scenario_clock = record.Stopwatch()
        module = scenario_module(mode, args, datamodule)
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
        title = f"{mode} ({args.backbone}, {args.trunk} trunk), best epoch {summary['best_epoch']}: "
        title += f"val acc {summary['best_val_acc']:.3f}"
        visualize_model(model, datamodule, work / f"visualize_{mode}.png", title=title)
        echo(f"[{mode}] best val acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}, {wall:.1f} s")
    return scenarios, run_record


def fit(args: TransferRecipe) -> dict:
    """Both scenarios, published in ``args.out`` when they end."""
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, args.resume) as run:
        command_line.save_run_config(args, run.work)
        datamodule = make_datamodule(args)
        scenarios, run_record = run_scenarios(args, datamodule, run.work, clock)
        if not is_global_zero():
            return {}
        summary = {
            "backbone": args.backbone,
            "trunk": args.trunk,
            "weights": args.weights,
            "data_root": str(datamodule.data_path),
            "train_images": len(datamodule.train_set),
            "val_images": len(datamodule.val_set),
            "classes": datamodule.classes,
            "seed": args.seed,
            "batch_size": args.data.batch_size,
            "image_size": args.data.image_size,
            "augment": args.data.augment,
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


def predict_images(options: TransferPredict, images: list[Path]) -> list[dict[str, Any]]:
    """One line per photo: its class and the probability the network gives it."""
    return prediction.classify(options.ckpt, images, options.json)


PROGRAM = command_line.Program(
    prog="customops-transfer",
    description=__doc__.split("\n\n")[0],
    recipe=TransferRecipe,
    fit=fit,
    predict_options=TransferPredict,
    predict=predict_images,
    default_out=lambda recipe: default_out("transfer_learning"),
)


def main(argv: list[str] | None = None) -> Any:
    """``fit`` or ``predict`` with `argv` (default: the process's arguments)."""
    return PROGRAM.run(argv)


def cli() -> None:
    """The console command: main() with the process's arguments; missing weights or data end in one line."""
    command_line.main(main, "transfer_learning")


if __name__ == "__main__":
    cli()
