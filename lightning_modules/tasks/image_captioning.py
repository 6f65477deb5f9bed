"""Image captioning on Flickr8k (or COCO-format captions) with hand-written RNN/LSTM and attention layers.

    # the homework's sanity check: overfit 100 training captions until the loss is < 0.1
    customops-captioning fit --overfit             # -> ./runs/image_captioning/overfit_rnn/
    # the whole pipeline on a few images of each split, in about a minute -> ./runs/image_captioning/quick_rnn/
    customops-captioning fit --quick
    # full run: train on train, validate on dev, BLEU on test  -> ./runs/image_captioning/<cell>/
    customops-captioning fit --cell transformer
    customops-captioning fit --cell lstm --trainer.devices 2 --trainer.strategy ddp --trainer.accelerator cpu
    customops-captioning fit --out runs/image_captioning/lstm --resume   # continue an interrupted run
    customops-captioning predict --ckpt runs/image_captioning/transformer/checkpoints/best.ckpt photo.jpg \
        --beam_size 3 --attention_map attention.png

The data folder is --data.root, else $CUSTOMOPS_MIRROR/flickr8k (or .../coco with --data.format coco).
Image features are extracted once (MobileNetV2, ImageNet weights), for the images the run uses only,
and cached under <--data.cache_dir>/features/. Each run writes its folder --out all at once when it
ends; its checkpoints hold the vocabulary, the image encoder and its preprocessing, so ``predict``
captions a photo from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from lightning_modules import prediction
from lightning_modules.caption_evaluation import DevBLEU, choose_decoding, generate, parse_decoding
from lightning_modules.captioners import CaptioningConfig, TransformerCaptioningConfig
from lightning_modules.captioning import CaptioningModule
from lightning_modules.data.captioning import CaptionDataModule, OverfitDataModule, caption_pairs
from lightning_modules.data.captions import CaptionSplit
from lightning_modules.paths import default_out
from lightning_modules.preprocessing import photo_resized_spec
from lightning_modules.pretrained import backbone as make_backbone
from lightning_modules.reporting import figures, reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.cli import (
    DataOptions,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    RunOptions,
    TrainerOptions,
)
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything

# The network's sizes are declared once, in CaptioningConfig and TransformerCaptioningConfig.
_SIZES = {f.name: f.default for f in dataclasses.fields(CaptioningConfig)}
_ATTENTION = {f.name: f.default for f in dataclasses.fields(TransformerCaptioningConfig)}


@dataclass
class RecurrentOptions:
    """The RNN and LSTM captioners (--recurrent.<name>; used with --cell rnn or lstm)."""

    wordvec_dim: PositiveInt = _SIZES["wordvec_dim"]
    """word embedding size"""
    hidden_dim: PositiveInt = _SIZES["hidden_dim"]
    """recurrent state size"""
    lr: PositiveFloat = 2e-3
    """learning rate"""
    dropout: Probability = 0.3
    """dropout on word vectors and on hidden states before the vocabulary layer"""
    label_smoothing: Probability = 0.0
    """label smoothing of the training loss: each target is (1 - eps) one-hot + eps / vocabulary size"""


@dataclass
class AttentionOptions:
    """The attention captioner, a Transformer decoder over the 7x7 feature grid (--transformer.<name>;
    used with --cell transformer)."""

    model_dim: PositiveInt = _ATTENTION["model_dim"]
    """width of the decoder"""
    num_heads: PositiveInt = _ATTENTION["num_heads"]
    """attention heads (model_dim must be divisible by it)"""
    num_layers: PositiveInt = _ATTENTION["num_layers"]
    """decoder layers"""
    ffn_dim: PositiveInt = _ATTENTION["ffn_dim"]
    """hidden width of each feed-forward block"""
    lr: PositiveFloat = 5e-4
    """learning rate"""
    dropout: Probability = 0.3
    """residual, embedding and attention-output dropout"""
    label_smoothing: Probability = 0.0
    """label smoothing of the training loss: each target is (1 - eps) one-hot + eps / vocabulary size"""


@dataclass
class CaptioningData(DataOptions):
    """The captions and their image features (--data.<name>)."""

    format: Literal["flickr8k", "coco"] = "flickr8k"
    """the caption files' layout"""
    backbone: Literal["mobilenet_v2", "resnet18"] = "mobilenet_v2"
    """the image encoder whose features the captioners read"""
    trunk: Literal["customops", "native"] = "customops"
    """the encoder's layers: customops' (torchvision's network through customops.convert) or torch.nn's
    own (native, for comparison); the feature cache keeps the two apart"""
    weights: Literal["imagenet", "none"] = "imagenet"
    """the encoder's weights (none: random, for smoke tests only)"""
    image_size: PositiveInt = 224
    """images are resized to this square before the encoder"""
    min_count: PositiveInt = 5
    """words rarer than this in the training captions become <UNK>"""
    max_words: PositiveInt = 16
    """training captions are cut to this many words"""
    images: dict[str, PositiveInt] | None = None
    """only these splits, each cut to its first n images ({"train": 100}); null: every split whole"""


@dataclass
class CaptioningTrainer(TrainerOptions):
    """Lightning Trainer options (--trainer.<name>); the captioners clip their gradients."""

    gradient_clip_val: NonNegativeFloat | None = 5.0
    """clip the gradients to this norm (or value, see gradient_clip_algorithm); null: no clipping"""


@dataclass(kw_only=True)
class CaptioningRecipe(RunOptions):
    """Train a captioner on image features, choose the decoding on dev, score BLEU on test."""

    cell: Literal["rnn", "lstm", "transformer"] = "rnn"
    """rnn / lstm: pooled image features; transformer: attention over the 7x7 feature grid"""
    recurrent: RecurrentOptions = field(default_factory=RecurrentOptions)
    transformer: AttentionOptions = field(default_factory=AttentionOptions)
    max_epochs: PositiveInt = 12
    """epochs"""
    max_minutes: PositiveFloat | None = None
    """a guard, not part of the recipe: a training still running after this many minutes ends with an error
    (nothing published, the last checkpoint kept for --resume); null: no limit"""
    lr_gamma: PositiveFloat = 0.85
    """learning-rate decay per epoch"""
    weight_decay: NonNegativeFloat = 0.0
    """Adam's weight decay"""
    max_length: PositiveInt = 20
    """longest generated caption"""
    select_by: Literal["val_loss", "val_bleu4"] = "val_loss"
    """the kept checkpoint: the epoch of the lowest dev loss, or of the highest dev BLEU-4 of greedy captions
    (decoded after every epoch)"""
    decodings: list[str] = field(default_factory=lambda: ["greedy", "beam3", "beam5", "beam5-lp1"])
    """decodings compared on dev (the best BLEU-4 is reported on test): greedy, beamK, beamK-lpA (beam K,
    finished captions ranked by log-prob / length**A)"""
    samples: NonNegativeInt = 6
    """captioned images shown per split"""
    overfit: bool = False
    """overfit a few training captions until the loss is below overfit_target (features of those images only)"""
    overfit_captions: PositiveInt = 100
    """captions (one per image) of the overfit check"""
    overfit_target: PositiveFloat = 0.1
    """the overfit check's target loss"""
    overfit_steps_per_epoch: PositiveInt = 10
    """full-batch steps per epoch of the overfit check"""
    quick: bool = False
    """the whole pipeline on the first 100 / 20 / 20 train / dev / test images, 2 epochs, decodings greedy
    and beam3: a smoke test; options given explicitly still win"""
    data: CaptioningData = field(default_factory=CaptioningData)
    trainer: CaptioningTrainer = field(default_factory=CaptioningTrainer)

    def __post_init__(self) -> None:
        if self.overfit and self.quick:
            raise ValueError("--overfit and --quick are two different runs: choose one")
        if self.cell == "transformer" and self.transformer.model_dim % self.transformer.num_heads:
            raise ValueError(
                f"--transformer.model_dim {self.transformer.model_dim} must be divisible by "
                f"--transformer.num_heads {self.transformer.num_heads}"
            )
        for name in self.decodings:
            parse_decoding(name)  # a ValueError naming --decodings

    @property
    def net(self) -> RecurrentOptions | AttentionOptions:
        """The chosen captioner's options."""
        return self.transformer if self.cell == "transformer" else self.recurrent

    @property
    def images(self) -> dict[str, int] | None:
        """The images whose features are extracted: only those the run uses."""
        return {"train": self.overfit_captions} if self.overfit else self.data.images


PRESETS = {
    "overfit": {
        "max_epochs": 2000,
        "recurrent": {"lr": 5e-3, "dropout": 0.0, "label_smoothing": 0.0},
        "transformer": {"lr": 1e-3, "dropout": 0.0, "label_smoothing": 0.0},
    },
    # The whole pipeline (features, training, every decoding, BLEU, figures) on the first images of each
    # split, in about a minute on 2 CPU cores.
    "quick": {
        "max_epochs": 2,
        "decodings": ["greedy", "beam3"],
        "samples": 2,
        "data": {"images": {"train": 100, "dev": 20, "test": 20}},
    },
}


@dataclass
class CaptioningPredict:
    """Caption one's own photos with a captioning checkpoint (the image encoder is in it)."""

    ckpt: Path
    """a captioner's checkpoint (best.ckpt of a fit)"""
    beam_size: PositiveInt = 3
    """beam width (1: greedy decoding)"""
    length_penalty: NonNegativeFloat = 0.0
    """finished captions ranked by log-prob / length**length_penalty"""
    max_length: PositiveInt = 20
    """longest caption"""
    attention_map: Path | None = None
    """the attention captioner only: draw each word's cross-attention over the photo into this PNG (one
    picture per photo: <name>_<photo>.png when there are several)"""
    json: Path | None = None
    """also write the captions to this JSON file"""


def default_run_folder(recipe: CaptioningRecipe) -> Path:
    prefix = "overfit_" if recipe.overfit else "quick_" if recipe.quick else ""
    return default_out("image_captioning", prefix + recipe.cell)


# --------------------------------------------------------------------------- training


def make_module(args: CaptioningRecipe, dm: CaptionDataModule, features: torch.Tensor) -> CaptioningModule:
    """The captioner the options describe, sized by the vocabulary (its size and token ids) and the
    features ((M, channels) pooled, (M, positions, channels) for the attention captioner)."""
    # The encoder's own weights travel in the checkpoint too, so a photo is captioned from it alone.
    # Built before the seed is set, so that the captioner's initial weights do not depend on it.
    encoder, _ = make_backbone(
        args.data.backbone, None if args.data.weights == "none" else args.data.weights, args.data.trunk
    )
    encoder_state = encoder.state_dict()
    # Seeded here, not only at the start: extracting features (or finding them cached) must not
    # change the initial weights.
    seed_everything(args.seed)
    vocab = {"vocab_size": len(dm.vocab), **dm.vocab.token_ids()}
    if args.cell == "transformer":
        config = TransformerCaptioningConfig(
            **vocab,
            feature_dim=features.shape[2],
            positions=features.shape[1],
            model_dim=args.transformer.model_dim,
            num_heads=args.transformer.num_heads,
            num_layers=args.transformer.num_layers,
            ffn_dim=args.transformer.ffn_dim,
            dropout=args.transformer.dropout,
            label_smoothing=args.transformer.label_smoothing,
            max_length=max(args.data.max_words, args.max_length) + 1,
        )
    else:
        config = CaptioningConfig(
            **vocab,
            feature_dim=features.shape[1],
            wordvec_dim=args.recurrent.wordvec_dim,
            hidden_dim=args.recurrent.hidden_dim,
            cell=args.cell,
            dropout=args.recurrent.dropout,
            label_smoothing=args.recurrent.label_smoothing,
        )
    sizes = {k: v for k, v in dataclasses.asdict(config).items() if k != "cell"}
    module = CaptioningModule(
        args.cell,
        lr=args.net.lr,
        weight_decay=args.weight_decay,
        lr_gamma=1.0 if args.overfit else args.lr_gamma,
        vocabulary=dm.vocab.words,
        image_encoder={
            "backbone": args.data.backbone,
            "trunk": args.data.trunk,
            "weights": args.data.weights,
            "pooling": dm.pooling,
            "preprocessing": photo_resized_spec(args.data.image_size),
        },
        **sizes,
    )
    module.model.set_feature_stats(features)
    module.image_encoder_state = encoder_state
    return module


def fit_captioner(args: CaptioningRecipe, module: CaptioningModule, folder: Path, callbacks, **fit_kwargs):
    """Fit in `folder` (with --resume: from its last checkpoint); returns the trainer, seconds and digests."""
    if args.max_minutes is not None:
        callbacks = [*callbacks, training.TimeLimit(args.max_minutes, folder / "checkpoints" / "last.ckpt")]
    trainer = training.make_trainer(
        args,
        folder,
        callbacks,
        args.max_epochs,
        num_sanity_val_steps=0,
        **({"limit_val_batches": 0} if args.overfit else {}),
    )
    clock = record.Stopwatch()
    training.fit(trainer, module, folder, args.resume, **fit_kwargs)
    return trainer, clock(), record.parameter_digests(module)


# --------------------------------------------------------------------------- the two runs


def run_overfit(args, dm: CaptionDataModule, work: Path) -> dict:
    """Train on a few captions (one per image, so each image has one right answer) until loss < target."""
    train = dm.splits["train"]
    n = min(args.overfit_captions, len(train))
    small = CaptionSplit(train.image_dir, train.names[:n], [caps[:1] for caps in train.captions[:n]])
    pairs = caption_pairs(dm.features["train"][:n], small, dm.vocab, dm.max_words)
    module = make_module(args, dm, pairs.features)
    stop = EarlyStopping(
        "train_loss", stopping_threshold=args.overfit_target, patience=10**6, check_on_train_epoch_end=True
    )
    callbacks = [stop]
    if args.ckpt_every_n_steps:
        callbacks += training.checkpoints(work / "checkpoints", "train_loss", "min", args.ckpt_every_n_steps)
    # Several full-batch steps per epoch: Lightning's per-epoch bookkeeping would otherwise
    # dominate the run time. The logged loss is the epoch's mean, so the target holds on average.
    data = OverfitDataModule(pairs, args.overfit_steps_per_epoch, args.seed)
    trainer, seconds, digests = fit_captioner(args, module, work, callbacks, datamodule=data)
    final_loss = float(trainer.callback_metrics["train_loss"])
    if not is_global_zero():
        return {}
    generated = generate(module.model, pairs.features, dm.vocab, args.max_length, 1, 0.0)
    wanted = [dm.vocab.decode(row[1:]) for row in pairs.captions.tolist()]
    result = {
        "captions": n,
        "final_loss": final_loss,
        "steps": trainer.global_step,
        "seconds": seconds,
        "exact_reproductions": sum(g == w for g, w in zip(generated, wanted)),
        "reached_target": final_loss < args.overfit_target,
        "run": record.run_record(args, trainer, seconds, digests),
    }
    rows = [(small.names[i], wanted[i], generated[i]) for i in range(min(n, 10))]
    storage.write_text(work / f"overfit_{args.cell}.md", reports.overfit_report(args.cell, result, rows))
    for i in range(min(n, 5)):
        echo(f"  target:    {wanted[i]}\n  generated: {generated[i]}")
    echo(
        f"[overfit] {n} captions: loss {final_loss:.4f} after {result['steps']} steps ({seconds:.0f} s), "
        f"{result['exact_reproductions']}/{n} reproduced exactly"
    )
    storage.write_json(work / "results.json", {f"overfit_{args.cell}": result})
    storage.write_text(work / "README.md", reports.captioning_readme({f"overfit_{args.cell}": result}))
    return result


def write_samples(args, dm: CaptionDataModule, model, evals: dict, chosen: str, work: Path) -> list[dict]:
    """A few train and test images with their generated captions (Markdown and picture grids);
    returns the test ones for results.json."""
    rng = random.Random(args.seed)
    md = [f"# Generated captions: {args.cell.upper()}, {chosen} decoding", ""]
    examples = []
    for name in ("train", "test"):
        if name not in dm.splits:
            continue
        split = dm.splits[name]
        indices = sorted(rng.sample(range(len(split)), min(args.samples, len(split))))
        if name == "test":
            caps = [evals["test"][chosen]["captions"][i] for i in indices]
        else:
            caps = generate(model, dm.features[name][indices], dm.vocab, args.max_length, *parse_decoding(chosen))
        title = f"{name} images, {args.cell.upper()} ({chosen})"
        samples = [(split.names[i], c, split.captions[i]) for i, c in zip(indices, caps)]
        figures.caption_grid(
            [(split.paths[i], c, split.captions[i]) for i, c in zip(indices, caps)],
            work / f"samples_{args.cell}_{name}.png",
            title,
        )
        md.append(reports.caption_samples(title, samples))
        if name == "test":
            examples = [{"image": n, "generated": c, "references": r} for n, c, r in samples]
    storage.write_text(work / f"samples_{args.cell}.md", "\n".join(md) + "\n")
    return examples


def run_full(args, dm: CaptionDataModule, work: Path) -> dict:
    module = make_module(args, dm, dm.features["train"])
    dm.vocab.save(work / "vocab.json")  # the checkpoints hold it too
    if args.select_by == "val_bleu4":
        dev_bleu = DevBLEU(dm.features["dev"], dm.splits["dev"], dm.vocab, args.max_length)
        callbacks = [dev_bleu, *training.checkpoints(work / "checkpoints", "val_bleu4", "max", args.ckpt_every_n_steps)]
    else:
        callbacks = training.checkpoints(work / "checkpoints", "val_loss", "min", args.ckpt_every_n_steps)
    trainer, train_seconds, digests = fit_captioner(args, module, work, callbacks, datamodule=dm)
    if not is_global_zero():
        return {}
    best = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    history = training.read_metrics(work)
    title = f"Flickr8k captioning, {args.cell.upper()} (customops layers)"
    figures.plot_curves(
        {"": history},
        [("loss", "loss per caption (summed over words)")],
        work / f"learning_curves_{args.cell}.png",
        title,
    )
    model = training.load_module(CaptioningModule, best.best_model_path).model
    best_epoch = int(storage.load_checkpoint(best.best_model_path)["epoch"])
    kept = next((row for row in history if row["epoch"] == best_epoch + 1), {})
    evals, chosen = choose_decoding(model, dm, list(args.decodings), args.max_length)
    examples = write_samples(args, dm, model, evals, chosen, work)
    for split_eval in evals.values():
        for dec in split_eval.values():
            dec.pop("captions")
    result = {
        "cell": args.cell,
        "decoding_chosen_on_dev": chosen,
        "test_bleu": evals.get("test", {}).get(chosen),
        "dev": evals.get("dev"),
        "test": evals.get("test"),
        "selected_by": args.select_by,
        # The kept epoch's dev loss (and greedy dev BLEU-4, when it chose the epoch).
        "best_val_loss": kept.get("val_loss"),
        "best_val_bleu4": kept.get("val_bleu4"),
        "best_checkpoint_epoch": best_epoch,
        "epochs_run": trainer.current_epoch,
        "train_seconds": train_seconds,
        "curves": {key: [row[key] for row in history if key in row] for key in ("train_loss", "val_loss", "val_bleu4")},
        "test_examples": examples,
        "vocab_size": len(dm.vocab),
        "train_pairs": len(dm.pairs("train")),
        "feature_extraction": dm.feature_report(),
        # The recipe, flat, with the chosen captioner's options (lr, dropout, sizes) only.
        "hparams": {**command_line.flat(args, skip=("recurrent", "transformer")), **command_line.flat(args.net)},
        "run": record.run_record(args, trainer, train_seconds, digests),
    }
    storage.write_json(work / "results.json", {args.cell: result})
    storage.write_text(work / "README.md", reports.captioning_readme({args.cell: result}))
    bleu = " / ".join(f"{result['test_bleu'][f'bleu{n}']:.3f}" for n in range(1, 5)) if result["test_bleu"] else "-"
    echo(
        f"[test] {args.cell}, {chosen}: BLEU-1..4 {bleu}; kept epoch {result['best_checkpoint_epoch'] + 1} of "
        f"{result['epochs_run']} by {_kept_by(result)}, {train_seconds:.0f} s training"
    )
    return result


def make_datamodule(args: CaptioningRecipe) -> CaptionDataModule:
    """The data, set up: the vocabulary sizes the network, so it exists before the Trainer does."""
    d = args.data
    dm = CaptionDataModule(
        d.root,
        d.format,
        d.backbone,
        None if d.weights == "none" else d.weights,
        d.cache_dir,
        d.image_size,
        d.min_count,
        d.max_words,
        d.batch_size,
        progress=args.trainer.enable_progress_bar,
        seed=args.seed,
        images=args.images,
        pooling="grid" if args.cell == "transformer" else "mean",
        trunk=d.trunk,
    )
    dm.prepare_data()
    dm.setup()
    for split, meta in dm.feature_meta.items():
        how = "cached" if meta["cached"] else "extracted"
        echo(f"{split}: {meta['num_images']} images, features {how} (extraction took {meta['seconds']:.1f} s)")
    echo(f"vocabulary: {len(dm.vocab)} words (min count {d.min_count})")
    return dm


def fit(args: CaptioningRecipe) -> dict:
    """The overfit check or the full run, published in ``args.out`` when it ends."""
    seed_everything(args.seed)
    with storage.RunFolder(args.out, args.resume) as run:
        command_line.save_run_config(args, run.work)
        dm = make_datamodule(args)
        return run_overfit(args, dm, run.work) if args.overfit else run_full(args, dm, run.work)


def predict_images(options: CaptioningPredict, images: list[Path]) -> list[dict[str, Any]]:
    """One line per photo: its caption; the attention captioner's word-by-word attention drawn on request."""
    return prediction.caption(
        options.ckpt,
        images,
        beam_size=options.beam_size,
        length_penalty=options.length_penalty,
        max_length=options.max_length,
        attention_map=options.attention_map,
        json_path=options.json,
    )


PROGRAM = command_line.Program(
    prog="customops-captioning",
    description=__doc__.split("\n\n")[0],
    recipe=CaptioningRecipe,
    fit=fit,
    predict_options=CaptioningPredict,
    predict=predict_images,
    default_out=default_run_folder,
    presets=PRESETS,
)


def _kept_by(result: dict[str, Any]) -> str:
    """How the kept epoch was chosen, with its score: "val_loss 44.85" or "val_bleu4 0.182 (val_loss 44.85)"."""
    loss = f"val_loss {result['best_val_loss']:.2f}"
    if result["selected_by"] == "val_bleu4":
        return f"val_bleu4 {result['best_val_bleu4']:.3f} ({loss})"
    return loss


def main(argv: list[str] | None = None) -> Any:
    """``fit`` or ``predict`` with `argv` (default: the process's arguments)."""
    return PROGRAM.run(argv)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "image_captioning")


if __name__ == "__main__":
    cli()
