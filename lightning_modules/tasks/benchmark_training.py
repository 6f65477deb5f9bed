"""Training speed: each customops network against its identical torch.nn twin, in one run.

    customops-benchmark-training fit                     # -> ./runs/benchmark_training/
    customops-benchmark-training fit --out reports/digit_classification/benchmark
    customops-benchmark-training fit --models '[lstm, transformer]' --compile false

**The MNIST nets** (``softmax``, ``cnn``): one training epoch each.

Both impls are trained by the same ClassifierModule (same customops loss, optimizer and
schedule) on the same MNISTDataModule (55k digits, random shifts), in one process, with
the runs interleaved (custom, torch, custom, torch, ...) so that drifts in machine load
hit both alike. The time of each run is that of its training epoch alone (validation is
off). Two ratios are reported, median(custom) / median(torch) and min(custom) / min(torch):
on a shared machine other processes can slow any single epoch, so look at both.

**The captioners** (``rnn``, ``lstm``, ``transformer``): training steps (``lightning_modules.step_timing``)
of the customops captioner against its torch.nn twin (``lightning_modules.captioner_twins``: ``nn.RNN`` /
``nn.LSTM`` + ``nn.Embedding`` + ``nn.Linear`` + ``F.cross_entropy``, or ``nn.TransformerDecoder``, from
the same initial weights), at the captioning recipe's sizes, dropout, learning rate, gradient clipping and
precision (``--caption_precision``, bf16-mixed),
on the same synthetic batches (image features and captions of the recipe's shapes: the time of a step
depends on the shapes, not on the values). Eager against eager, and with ``--compile`` (the default)
``torch.compile`` of each network against the other's; the warm-up steps (and compilation) are excluded.

**MobileNetV2 fine-tuning** (``mobilenet_v2``): training steps of the transfer task's fine-tune scenario
(TransferNet: the trunk, mean pooling, the customops head and softmax loss; BatchNorm statistics frozen)
on the customops trunk (``customops.convert`` of torchvision's MobileNetV2 features) against the native
trunk, from the same weights, on the same synthetic batches of 32 images of 224x224, eager and compiled.

The network sizes are options whose defaults are the sizes the published sweeps chose (README);
nothing is read from reports/. Writes config.yaml, benchmark.json and benchmark.md into the run
folder --out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

import customops as co
from lightning_modules import step_timing
from lightning_modules.captioner_twins import torch_twin
from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule
from lightning_modules.data.vocabulary import Vocabulary
from lightning_modules.models import build_model
from lightning_modules.paths import default_out
from lightning_modules.pretrained import backbone as make_backbone
from lightning_modules.reporting import reports
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
from lightning_modules.tasks.image_captioning import AttentionOptions, CaptioningTrainer, RecurrentOptions
from lightning_modules.transfer import TransferNet

DIGIT_NETS = ("softmax", "cnn")
CAPTIONERS = ("rnn", "lstm", "transformer")


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


def specs(args: BenchmarkRecipe) -> dict[str, dict[str, Any]]:
    return {
        "softmax": {"name": "two_layer_net", "hidden": args.softmax_hidden},
        "cnn": {
            "name": "conv_net",
            "filters": args.cnn_filters,
            "kernel_size": args.cnn_kernel_size,
            "hidden": args.cnn_hidden,
        },
    }


def one_epoch(spec: dict[str, Any], dm: MNISTDataModule, args: BenchmarkRecipe, limit_train_batches) -> float:
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


# ---------------------------------------------------------------- the captioners


def captioner_spec(args: BenchmarkRecipe, cell: str) -> tuple[dict[str, Any], float]:
    """The captioner the captioning recipe trains with --cell `cell` (its sizes, dropout and label smoothing
    from the recipe's defaults), as a model spec, and the recipe's learning rate."""
    if cell == "transformer":
        o: Any = AttentionOptions()
        sizes = {k: getattr(o, k) for k in ("model_dim", "num_heads", "num_layers", "ffn_dim")}
    else:
        o = RecurrentOptions()
        sizes = {k: getattr(o, k) for k in ("wordvec_dim", "hidden_dim")}
    spec = {"name": f"{cell}_captioner", "vocab_size": args.caption_vocab_size, **sizes, "dropout": o.dropout}
    return {**spec, "label_smoothing": o.label_smoothing}, o.lr


def caption_batches(
    model: nn.Module, batch_size: int, words: int, count: int, seed: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` synthetic (features, captions) batches of the shapes `model` trains on: features (N, F) or
    (N, P, F) standard normal, captions (N, words + 2) ``<START> w.. <END> <NULL>..`` of 1..`words`
    random words, the first caption of each batch the longest (as in a real batch of the recipe's size)."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    shape = (batch_size, c.positions, c.feature_dim) if hasattr(c, "positions") else (batch_size, c.feature_dim)
    out = []
    for _ in range(count):
        features = torch.randn(shape, generator=gen)
        lengths = torch.randint(1, words + 1, (batch_size,), generator=gen)
        lengths[0] = words
        captions = torch.randint(Vocabulary.unk_id + 1, c.vocab_size, (batch_size, words + 2), generator=gen)
        captions[:, 0] = Vocabulary.start_id
        position = torch.arange(words + 2)  # (L,)
        captions[position == lengths[:, None] + 1] = Vocabulary.end_id
        captions[position > lengths[:, None] + 1] = Vocabulary.null_id
        out.append((features.to(device), captions.to(device)))
    return out


def step_device(args: BenchmarkRecipe) -> torch.device:
    """Where the captioners' steps run: the GPU when --trainer.accelerator asks for it (or is auto and one
    is there), else the CPU."""
    accelerator = args.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def captioner_row(args: BenchmarkRecipe, cell: str, device: torch.device) -> dict[str, Any]:
    """Training steps of the customops captioner against its torch.nn twin, eager (and compiled)."""
    spec, lr = captioner_spec(args, cell)
    clip = CaptioningTrainer().gradient_clip_val
    row: dict[str, Any] = {"model": cell, "spec": spec, "batch_size": args.caption_batch_size}
    row |= {"words": args.caption_words, "steps": args.steps, "warmup_steps": args.warmup_steps, "lr": lr}
    row["precision"] = args.caption_precision
    batches = None
    for mode in ("eager", "compiled") if args.compile else ("eager",):
        compiled = mode == "compiled"
        if compiled:
            torch._dynamo.reset()  # each network compiled afresh, none hitting another's cache limit
        seed_everything(args.seed)
        custom = build_model(spec).to(device)
        twin = torch_twin(custom).to(device)  # the same initial weights
        if batches is None:
            batches = caption_batches(
                custom, args.caption_batch_size, args.caption_words, args.steps, args.seed, device
            )
        precision = args.caption_precision
        steps = {
            impl: step_timing.training_step(net, lr, clip, compiled, precision, device)
            for impl, net in (("custom", custom), ("torch", twin))
        }
        row[mode] = step_timing.compare(
            steps, batches, args.repeats, args.warmup_steps, device, echo, label=f"{cell} {mode}"
        )
    return row


# ---------------------------------------------------------------- MobileNetV2 fine-tuning


class _FineTuneLoss(nn.Module):
    """The transfer task's fine-tune step as one module: TransferNet's scores, the customops softmax loss."""

    def __init__(self, net: TransferNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return co.softmax_loss(self.net(images), labels)


def finetune_pair(weights: str | None, num_classes: int = 2) -> dict[str, nn.Module]:
    """MobileNetV2 fine-tuning on the customops trunk (``customops.convert`` of torchvision's features) and
    on the native trunk: the same weights, the same customops head and loss, BatchNorm statistics frozen
    (the transfer task's fine-tune scenario)."""
    features, width = make_backbone("mobilenet_v2", weights, "native")  # torchvision's layers
    native = TransferNet(features, width, num_classes, freeze_bn_stats=True)
    custom = TransferNet(co.convert(features), width, num_classes, freeze_bn_stats=True)
    custom.head.load_state_dict(native.head.state_dict())
    return {"custom": _FineTuneLoss(custom), "torch": _FineTuneLoss(native)}


def trunk_row(args: BenchmarkRecipe, device: torch.device) -> dict[str, Any]:
    """Fine-tuning steps of MobileNetV2 on the customops trunk against the native trunk, eager (and compiled)."""
    weights = None if args.trunk_weights == "none" else args.trunk_weights
    N, S = args.trunk_batch_size, args.trunk_image_size
    gen = torch.Generator().manual_seed(args.seed)
    batches = [
        (torch.randn(N, 3, S, S, generator=gen).to(device), torch.randint(0, 2, (N,), generator=gen).to(device))
        for _ in range(args.trunk_steps)
    ]
    spec = {"name": "mobilenet_v2", "weights": args.trunk_weights, "image_size": S, "bn_stats": "frozen"}
    row: dict[str, Any] = {"model": "mobilenet_v2", "spec": spec, "batch_size": N, "steps": args.trunk_steps}
    row |= {"warmup_steps": args.warmup_steps, "lr": args.trunk_lr, "precision": "32-true"}
    for mode in ("eager", "compiled") if args.compile else ("eager",):
        compiled = mode == "compiled"
        if compiled:
            torch._dynamo.reset()
        seed_everything(args.seed)
        nets = finetune_pair(weights)
        steps = {
            impl: step_timing.training_step(net.to(device), args.trunk_lr, None, compiled, "32-true", device)
            for impl, net in nets.items()
        }
        row[mode] = step_timing.compare(
            steps, batches, args.repeats, args.warmup_steps, device, echo, label=f"mobilenet_v2 {mode}"
        )
    return row


# ---------------------------------------------------------------- the recipe


@dataclass(kw_only=True)
class BenchmarkRecipe(RunOptions):
    """Time training of each customops network against its identical torch.nn twin."""

    models: list[Literal["softmax", "cnn", "rnn", "lstm", "transformer", "mobilenet_v2"]] = field(
        default_factory=lambda: [*DIGIT_NETS, *CAPTIONERS, "mobilenet_v2"]
    )
    """networks to time: the MNIST nets (an epoch each), the captioners and MobileNetV2 fine-tuning (training
    steps)"""
    softmax_hidden: PositiveInt = 2048
    """TwoLayerNet hidden units"""
    cnn_filters: PositiveInt = 32
    """ConvNet filters"""
    cnn_kernel_size: PositiveInt = 7
    """ConvNet filter size"""
    cnn_hidden: PositiveInt = 512
    """ConvNet hidden units"""
    repeats: PositiveInt = 3
    """epochs (MNIST nets) or repeats of --steps steps (captioners) timed per impl and network"""
    caption_vocab_size: PositiveInt = 2539
    """the captioners' vocabulary (Flickr8k's training words seen at least 5 times: 2,539)"""
    caption_batch_size: PositiveInt = 128
    """the captioners' training batch"""
    caption_words: PositiveInt = 16
    """the longest training caption, in words (the captioning recipe's --data.max_words)"""
    steps: PositiveInt = 4
    """captioners: training steps timed per repeat (the mean step of each repeat is one sample)"""
    warmup_steps: PositiveInt = 2
    """captioners: untimed steps of each network before the timed ones (with --compile, the first compiles)"""
    caption_precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "bf16-mixed"
    """captioners: the precision of their steps (the captioning recipes train in bf16-mixed)"""
    trunk_batch_size: PositiveInt = 32
    """mobilenet_v2: the fine-tuning batch (the transfer recipe's)"""
    trunk_image_size: PositiveInt = 224
    """mobilenet_v2: images are this square"""
    trunk_steps: PositiveInt = 2
    """mobilenet_v2: training steps timed per repeat"""
    trunk_lr: PositiveFloat = 1e-4
    """mobilenet_v2: Adam's learning rate"""
    trunk_weights: Literal["imagenet", "none"] = "imagenet"
    """mobilenet_v2: the trunk's weights (none: random, for smoke tests)"""
    compile: bool = True
    """captioners and mobilenet_v2: also time torch.compile of each network against the other's"""
    max_shift: NonNegativeInt = 2
    """random shift augmentation in pixels"""
    lr: PositiveFloat = 2e-3
    """peak learning rate"""
    weight_decay: NonNegativeFloat = 0.05
    """weight decay"""
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    """optimizer"""
    data: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        if self.resume:
            raise ValueError("--resume: the benchmark times whole epochs afresh; it has nothing to resume")


def digit_row(model: str, args: BenchmarkRecipe, dm: MNISTDataModule) -> dict[str, Any]:
    """One training epoch of the MNIST net against its torch.nn twin, interleaved."""
    base = specs(args)[model]
    both = {impl: {**base, "impl": impl} for impl in ("custom", "torch")}
    one_epoch(both["custom"], dm, args, 20)  # warm-up
    times: dict[str, list[float]] = {"custom": [], "torch": []}
    for _ in range(args.repeats):
        for impl in ("custom", "torch"):  # interleaved
            times[impl].append(one_epoch(both[impl], dm, args, args.trainer.limit_train_batches))
            echo(f"[{model}] {impl}: {times[impl][-1]:.2f} s")
    result = step_timing.summary(times)
    echo(f"[{model}] custom / torch = {step_timing.ratios_text(result)}")
    return {"model": model, "spec": base, "times_s": times, **result}


def fit(args: BenchmarkRecipe) -> dict[str, Any]:
    """The timed epochs and steps, published in ``args.out`` when they end."""
    clock = record.Stopwatch()
    with storage.RunFolder(args.out, resumable=False) as run:
        command_line.save_run_config(args, run.work)
        dm = None
        if any(m in DIGIT_NETS for m in args.models):
            dm = MNISTDataModule(
                root=args.data.root,
                cache_dir=args.data.cache_dir,
                batch_size=args.data.batch_size,
                max_shift=args.max_shift,
                seed=args.seed,
            )
        rows = []
        trainer = None
        for model in args.models:
            if model in DIGIT_NETS:
                rows.append(digit_row(model, args, dm))
                trainer = dm.trainer
            elif model == "mobilenet_v2":
                rows.append(trunk_row(args, step_device(args)))
            else:
                rows.append(captioner_row(args, model, step_device(args)))
        if not is_global_zero():
            return {}
        results = {
            "run": record.run_record(args, trainer, clock()),
            "config": {"optimizer": args.optimizer, "max_shift": args.max_shift},
            "batch_size": args.data.batch_size,
            "limit_train_batches": args.trainer.limit_train_batches,
            "repeats": args.repeats,
            "results": rows,
        }
        if dm is not None:
            results["train_digits"] = len(dm.train_set)
        if any(m not in DIGIT_NETS for m in args.models):
            results["steps"] = {
                "device": str(step_device(args)),
                "precision": args.caption_precision,
                "compile": args.compile,
            }
        markdown = reports.training_benchmark(results)
        storage.write_json(run.work / "benchmark.json", results)
        storage.write_text(run.work / "benchmark.md", markdown)
        echo(markdown.rstrip())
    return results


PROGRAM = command_line.Program(
    prog="customops-benchmark-training",
    description=__doc__.split("\n\n")[0],
    recipe=BenchmarkRecipe,
    fit=fit,
    default_out=lambda recipe: default_out("benchmark_training"),
)


def main(argv: list[str] | None = None) -> Any:
    """``fit`` with `argv` (default: the process's arguments)."""
    return PROGRAM.run(argv)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "benchmark_training")


if __name__ == "__main__":
    cli()
