"""Sweep the two-layer softmax net or the CNN on MNIST, choose on validation, report test accuracy.

    customops-digits fit --model cnn                          # -> ./runs/digit_classification/cnn/
    customops-digits fit --model softmax --quick              # the whole path on a slice
    customops-digits fit --model cnn --trainer.devices 2 --trainer.strategy ddp   # two processes
    customops-digits fit --out runs/digit_classification/cnn --resume   # continue an interrupted run
    customops-digits predict --ckpt runs/digit_classification/cnn/checkpoints/best.ckpt my_digit.png

Every candidate is trained with the same schedule on the 55k/5k split and scored on the
5k validation digits, by successive halving: all for ``--sweep_epochs``, then the best third
again for twice as many (``--halving``), and so on; the best of the last rung wins. The
winner is then trained again, from scratch, for ``--<model>.final_epochs`` (still choosing its
checkpoint on validation only), and only that model ever sees the 10k test digits (on
global rank zero), once: with ``--<model>.tta auto`` (the CNN's default) it is scored on the
validation digits plainly and with test-time augmentation (``lightning_modules.tta``), and
only the better way scores the test digits. Every training batch is distorted on the fly: random shifts, rotations,
scaling and elastic fields (Simard et al., 2003), one resampling of the whole batch.

Writes the run folder ``--out`` (default ``./runs/digit_classification/<model>/``) all at once
when the run ends: config.yaml (the resolved recipe, written first), results.json, sweep.md,
learning_curves.png, sweep.png, confusion_matrix.png, first_layer_filters.png (CNN), the final training's CSV (and
TensorBoard) logs and checkpoints/{best,last}.ckpt, and sweep/<candidate>/ for each candidate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from lightning_modules import prediction, tta
from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule
from lightning_modules.networks import pooled_size
from lightning_modules.paths import default_out
from lightning_modules.preprocessing import MNIST_PREPROCESSING
from lightning_modules.reporting import figures, reports
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

# Test-time augmentation (lightning_modules.tta): chosen on validation, or off.
TTAMode = Literal["auto", "off"]


@dataclass
class SoftmaxSweep:
    """The two-layer net's sweep (--softmax.<name>; used with --model softmax)."""

    hidden: list[PositiveInt] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    """hidden sizes swept"""
    final_epochs: NonNegativeInt = 40
    """epochs of the chosen size's final training, from scratch (0: keep the sweep's model)"""
    tta: TTAMode = "off"
    """test-time augmentation (see --cnn.tta)"""


@dataclass
class CNNSweep:
    """The CNN's sweep, every filter size with every hidden size (--cnn.<name>; used with --model cnn)."""

    hidden: list[PositiveInt] = field(default_factory=lambda: [64, 256, 512])
    """hidden sizes swept"""
    filter_sizes: list[PositiveInt] = field(default_factory=lambda: [3, 5, 7])
    """filter sizes k swept (k x k, valid convolution)"""
    filters: PositiveInt = 32
    """number of filters F"""
    final_epochs: NonNegativeInt = 30
    """epochs of the chosen size's final training, from scratch (0: keep the sweep's model)"""
    tta: TTAMode = "auto"
    """test-time augmentation: auto scores the final model on the validation digits plainly and by the mean
    softmax over the image and its four one-pixel shifts, and tests only the better (ties: plain); off: plain"""


@dataclass
class DigitsData(DataOptions):
    """MNIST (--data.<name>): 60k training digits split into train and validation, 10k test digits."""

    val_size: PositiveInt = 5000
    """training digits held out for validation"""
    train_subset: PositiveInt | None = None
    """keep only the first n training digits after the split (null: all)"""
    test_subset: PositiveInt | None = None
    """score only the first n test digits (null: all)"""


@dataclass(kw_only=True)
class DigitsRecipe(RunOptions):
    """Sweep a digit network on MNIST by successive halving, retrain the choice, test it once."""

    model: Literal["softmax", "cnn"]
    """the two-layer softmax net (fc-relu-fc) or the CNN (conv-relu-pool-fc-relu-fc)"""
    softmax: SoftmaxSweep = field(default_factory=SoftmaxSweep)
    cnn: CNNSweep = field(default_factory=CNNSweep)
    sweep_epochs: PositiveInt = 1
    """epochs of every candidate in the sweep's first rung (the same schedule for all)"""
    halving: PositiveInt = 2
    """successive halving: the best third trains again, from scratch, for this many times the epochs, while
    that leaves more than one (1: every candidate for sweep_epochs only)"""
    lr: PositiveFloat = 2e-3
    """peak learning rate"""
    weight_decay: NonNegativeFloat = 0.05
    """weight decay"""
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    """optimizer"""
    scheduler: Literal["onecycle", "cosine", "constant", "step"] = "onecycle"
    """learning-rate schedule"""
    max_shift: NonNegativeInt = 2
    """random shift of training images, in pixels (0: none)"""
    max_rotation: NonNegativeFloat = 8.0
    """random rotation of training images, in degrees (0: none)"""
    max_scale: NonNegativeFloat = 0.08
    """random scaling of training images by a factor in [1 - s, 1 + s] (0: none)"""
    elastic_alpha: NonNegativeFloat = 24.0
    """elastic distortion of training images: displacement scale in pixels (0: none)"""
    elastic_sigma: PositiveFloat = 5.5
    """elastic distortion: smoothness of the displacement field, in pixels"""
    # Off by default: under the one-cycle schedule the best epochs are the last, low-lr ones.
    patience: NonNegativeInt = 0
    """final training: early-stop after this many epochs without a better val accuracy (0: off)"""
    impl: Literal["custom", "torch"] = "custom"
    """customops layers or their torch.nn twins"""
    quick: bool = False
    """the whole path on a slice (2k train, 1k test digits, 2+3 epochs, a small grid): a smoke test;
    options given explicitly still win"""
    data: DigitsData = field(default_factory=DigitsData)

    def __post_init__(self) -> None:
        if self.model == "cnn":
            for k in self.cnn.filter_sizes:
                try:
                    pooled_size(MNIST_PREPROCESSING["size"], k)
                except ValueError as err:
                    raise ValueError(f"--cnn.filter_sizes: {err}") from None

    @property
    def grid(self) -> SoftmaxSweep | CNNSweep:
        """The chosen model's sweep."""
        return self.softmax if self.model == "softmax" else self.cnn


# --quick: the whole path on a slice of the data, in well under two minutes on 2 CPU cores.
QUICK = {
    "sweep_epochs": 2,
    "softmax": {"hidden": [32, 64, 128, 256, 512, 2048], "final_epochs": 3},
    "cnn": {"hidden": [64, 256], "filter_sizes": [3, 5, 7], "filters": 8, "final_epochs": 3},
    "data": {"train_subset": 2000, "test_subset": 1000},
}


@dataclass
class DigitsPredict:
    """Classify digit images of any size or colour, converted as MNIST's digits were."""

    ckpt: Path
    """a digit classifier's checkpoint (best.ckpt of a fit)"""
    json: Path | None = None
    """also write the predictions to this JSON file"""


def candidates(args: DigitsRecipe) -> list[dict[str, Any]]:
    """The sweep grid as network specs (``models`` keys and their configs)."""
    if args.model == "softmax":
        return [{"name": "two_layer_net", "impl": args.impl, "hidden": h} for h in args.softmax.hidden]
    return [
        {"name": "conv_net", "impl": args.impl, "filters": args.cnn.filters, "kernel_size": k, "hidden": h}
        for k, h in itertools.product(args.cnn.filter_sizes, args.cnn.hidden)
    ]


def candidate_name(spec: dict[str, Any]) -> str:
    """A candidate's folder name: hidden512 or f32-k7-hidden512."""
    if "filters" not in spec:
        return f"hidden{spec['hidden']}"
    return f"f{spec['filters']}-k{spec['kernel_size']}-hidden{spec['hidden']}"


def train(
    spec: dict[str, Any], args: DigitsRecipe, dm: MNISTDataModule, epochs: int, folder: Path, final: bool = False
) -> dict[str, Any]:
    """Train one candidate from a fresh seed in `folder`, keeping its best epoch (with --resume:
    continue it). Runs on every rank (see ``training.fit_best``)."""
    seed_everything(args.seed)
    module = ClassifierModule(
        spec,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        scheduler=args.scheduler,
        preprocessing=MNIST_PREPROCESSING,
        classes=[str(d) for d in range(10)],
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


def successive_halving(args: DigitsRecipe, dm: MNISTDataModule, folder: Path) -> list[dict[str, Any]]:
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


def make_datamodule(args: DigitsRecipe) -> MNISTDataModule:
    return MNISTDataModule(
        root=args.data.root,
        cache_dir=args.data.cache_dir,
        batch_size=args.data.batch_size,
        val_size=args.data.val_size,
        max_shift=args.max_shift,
        max_rotation=args.max_rotation,
        max_scale=args.max_scale,
        elastic_alpha=args.elastic_alpha,
        elastic_sigma=args.elastic_sigma,
        train_subset=args.data.train_subset,
        test_subset=args.data.test_subset,
        seed=args.seed,
    )


def choose(args: DigitsRecipe, dm: MNISTDataModule, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sweep's rows and the chosen candidate (the best of the last rung; first of equals: the
    smaller, earlier one). One candidate (a seed study's rerun of a chosen size) is not swept."""
    if len(candidates(args)) == 1 and args.grid.final_epochs:
        return [], {"spec": candidates(args)[0], "val_acc": float("nan")}
    rows = successive_halving(args, dm, work / "sweep")
    top = max(r["rung"] for r in rows)
    best = max((r for r in rows if r["rung"] == top), key=lambda r: r["val_acc"])
    echo(f"[chosen] {reports.describe_digit_net(best['spec'])} (val acc {100 * best['val_acc']:.2f}%)")
    return rows, best


VIEWS = "the image and its four one-pixel shifts (zero-filled), mean of the softmax"


def choose_tta(args: DigitsRecipe, dm: MNISTDataModule, model: ClassifierModule, device) -> dict[str, Any]:
    """results.json's "tta": the final model's validation accuracy plainly and (with --<model>.tta auto)
    with test-time augmentation, and the way chosen on validation to score the test digits."""
    loader = DataLoader(dm.val_set, batch_size=dm.eval_batch_size)
    plain, _, _ = tta.accuracy(model, loader, False, dm.fill, device)
    if args.grid.tta == "off":
        return {"mode": "off", "val_acc_plain": plain, "chosen": "plain"}
    augmented, _, _ = tta.accuracy(model, loader, True, dm.fill, device)
    chosen = tta.choose(plain, augmented)
    echo(f"[tta] val acc {100 * plain:.2f}% plain, {100 * augmented:.2f}% with TTA: {chosen} chosen")
    return {"mode": "auto", "val_acc_plain": plain, "val_acc_tta": augmented, "chosen": chosen, "views": VIEWS}


def test(args: DigitsRecipe, dm: MNISTDataModule, final: dict[str, Any], work: Path):
    """The chosen model's test accuracy, on all the test digits on rank zero (not the data module's
    loader, which shards by rank), scored once, the way chosen on validation (``choose_tta``); the
    model, the TTA block, the accuracy, the number of test digits and the confusion matrix."""
    model = training.load_module(ClassifierModule, final["ckpt_path"])
    device = final["trainer"].strategy.root_device
    choice = choose_tta(args, dm, model, device)
    dm.setup("test")
    loader = DataLoader(dm.test_set, batch_size=dm.eval_batch_size)
    test_acc, preds, labels = tta.accuracy(model, loader, choice["chosen"] == "tta", dm.fill, device)
    how = " (TTA)" if choice["chosen"] == "tta" else ""
    echo(f"[test] {reports.describe_digit_net(final['spec'])}: test acc {100 * test_acc:.2f}%{how}")
    title = f"MNIST {args.model}: test confusion matrix ({100 * test_acc:.2f}% correct{how})"
    cm = figures.plot_confusion(preds, labels, title, work / "confusion_matrix.png")
    return model, choice, test_acc, len(labels), cm


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


def flat_config(args: DigitsRecipe) -> dict[str, Any]:
    """results.json's "config": the recipe as one flat dict, the chosen model's sweep merged in."""
    config = command_line.flat(args, skip=("softmax", "cnn"))
    grid = {"filter_sizes": None, "filters": None, **command_line.flat(args.grid)}  # none of a softmax net's
    sizes = {k: grid[k] for k in ("hidden", "filter_sizes", "filters", "final_epochs")}
    return {"model": args.model, **sizes, **config}


def fit(args: DigitsRecipe) -> dict[str, Any]:
    """The sweep, the final training and the test, published in ``args.out`` when they end."""
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, args.resume) as run:
        command_line.save_run_config(args, run.work)
        dm = make_datamodule(args)
        rows, best = choose(args, dm, run.work)
        sweep_wall = clock()
        epochs = args.grid.final_epochs
        final = train(best["spec"], args, dm, epochs, run.work, final=True) if epochs else best
        if not is_global_zero():
            return {}  # the other ranks have done their share: training
        # The test digits are used once, by the chosen model only.
        model, choice, test_acc, test_size, cm = test(args, dm, final, run.work)
        results = {
            "model": args.model,
            "run": record.run_record(args, final["trainer"], clock(), final["digests"]),
            "config": flat_config(args),
            "split": {"train": len(dm.train_set), "val": len(dm.val_set), "split_seed": dm.split_seed},
            "candidates": [public(r) for r in rows],
            "chosen": {"spec": best["spec"], "sweep_val_acc": best["val_acc"] if rows else None},
            "final": public(final),
            "tta": choice,
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


def predict_images(options: DigitsPredict, images: list[Path]) -> list[dict[str, Any]]:
    """One line per image: its digit and the probability the network gives it."""
    return prediction.classify(options.ckpt, images, options.json)


PROGRAM = command_line.Program(
    prog="customops-digits",
    description=__doc__.split("\n\n")[0],
    recipe=DigitsRecipe,
    fit=fit,
    predict_options=DigitsPredict,
    predict=predict_images,
    default_out=lambda recipe: default_out("digit_classification", recipe.model),
    presets={"quick": QUICK},
)


def main(argv: list[str] | None = None) -> Any:
    """``fit`` or ``predict`` with `argv` (default: the process's arguments)."""
    return PROGRAM.run(argv)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "digit_classification")


if __name__ == "__main__":
    cli()
