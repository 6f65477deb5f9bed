"""Image captioning on Flickr8k (or COCO-format captions) with hand-written RNN/LSTM layers.

    # the homework's sanity check: overfit 100 training captions until the loss is < 0.1
    python scripts/image_captioning.py --overfit             # -> runs/image_captioning/overfit_rnn/
    # the whole pipeline on a few images of each split, in about a minute -> runs/image_captioning/quick_rnn/
    python scripts/image_captioning.py --quick
    # full run: train on train, validate on dev, BLEU on test  -> runs/image_captioning/<cell>/
    python scripts/image_captioning.py --cell rnn
    python scripts/image_captioning.py --cell lstm --devices 2 --strategy ddp --accelerator cpu
    python scripts/image_captioning.py --cell lstm --resume   # continue an interrupted run

The data folder is --data-root, else $CUSTOMOPS_MIRROR/flickr8k (or .../coco with --format coco).
Image features are extracted once (MobileNetV2, ImageNet weights), for the images the run uses
only, and cached under <--cache-dir>/features/. Each run writes its folder --out all at once when it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

import torch
from pytorch_lightning.callbacks import EarlyStopping

from lightning_modules.caption_evaluation import evaluate, generate, parse_decoding
from lightning_modules.captioning import CaptioningConfig, CaptioningModule, TransformerCaptioningConfig
from lightning_modules.data.captioning import CaptionDataModule, OverfitDataModule, caption_pairs
from lightning_modules.data.captions import CaptionSplit
from lightning_modules.paths import default_out
from lightning_modules.reporting import figures, reports
from lightning_modules.runs import cli as command_line
from lightning_modules.runs import record, storage, training
from lightning_modules.runs.ranks import echo, is_global_zero, seed_everything

# The network's sizes are declared once, in CaptioningConfig and TransformerCaptioningConfig;
# these are the training recipe's (the attention captioner's where it differs).
RECIPE = {
    "full": {"lr": 2e-3, "dropout": 0.3, "max_epochs": 12},
    "overfit": {"lr": 5e-3, "dropout": 0.0, "max_epochs": 2000},
    "full_transformer": {"lr": 5e-4, "dropout": 0.3, "max_epochs": 12},
    "overfit_transformer": {"lr": 1e-3, "dropout": 0.0, "max_epochs": 2000},
}
# --quick: the whole pipeline (features, training, every decoding, BLEU, figures) on the first
# images of each split, in about a minute on 2 CPU cores; options given explicitly still win.
QUICK = {"images": {"train": 100, "dev": 20, "test": 20}, "max_epochs": 2, "decodings": "greedy,beam3", "samples": 2}


def _decodings(text: str) -> str:
    for name in text.split(","):
        try:
            parse_decoding(name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("--decodings: ")) from None
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Every option checked here, before any data is read or any feature extracted."""
    sizes = {f.name: f.default for f in dataclasses.fields(CaptioningConfig)}
    attention = {f.name: f.default for f in dataclasses.fields(TransformerCaptioningConfig)}
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--format", default="flickr8k", choices=["flickr8k", "coco"])
    p.add_argument("--backbone", default="mobilenet_v2", choices=["mobilenet_v2", "resnet18"])
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    p.add_argument("--image-size", type=command_line.positive_int, default=224)
    p.add_argument(
        "--cell",
        default=sizes["cell"],
        choices=["rnn", "lstm", "transformer"],
        help="rnn / lstm: pooled image features; transformer: attention over the 7x7 feature grid",
    )
    p.add_argument(
        "--overfit",
        action="store_true",
        help="overfit 100 training captions until loss < 0.1 (features of those images only)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"the whole pipeline on the first {QUICK['images']} images of each split, "
        f"{QUICK['max_epochs']} epochs, decodings {QUICK['decodings']}: a smoke test",
    )
    p.add_argument("--overfit-captions", type=command_line.positive_int, default=100)
    p.add_argument("--overfit-target", type=command_line.positive_float, default=0.1)
    p.add_argument("--overfit-steps-per-epoch", type=command_line.positive_int, default=10)
    p.add_argument(
        "--max-epochs",
        "--epochs",
        type=command_line.positive_int,
        default=None,
        help=f"default {RECIPE['full']['max_epochs']} (full run), {QUICK['max_epochs']} (quick), "
        f"{RECIPE['overfit']['max_epochs']} (overfit)",
    )
    p.add_argument(
        "--max-minutes", type=command_line.positive_float, default=20.0, help="training time limit (full run)"
    )
    p.add_argument(
        "--lr",
        type=command_line.positive_float,
        default=None,
        help=f"default {RECIPE['full']['lr']} (full run), {RECIPE['overfit']['lr']} (overfit)",
    )
    p.add_argument("--lr-gamma", type=command_line.positive_float, default=0.85, help="learning-rate decay per epoch")
    p.add_argument("--weight-decay", type=command_line.nonnegative_float, default=0.0)
    p.add_argument(
        "--dropout",
        type=command_line.probability,
        default=None,
        help=f"default {RECIPE['full']['dropout']} (full run), {RECIPE['overfit']['dropout']} (overfit)",
    )
    p.add_argument("--wordvec-dim", type=command_line.positive_int, default=sizes["wordvec_dim"])
    p.add_argument("--hidden-dim", type=command_line.positive_int, default=sizes["hidden_dim"])
    p.add_argument(
        "--model-dim", type=command_line.positive_int, default=attention["model_dim"], help="transformer width"
    )
    p.add_argument(
        "--num-heads", type=command_line.positive_int, default=attention["num_heads"], help="transformer heads"
    )
    p.add_argument(
        "--num-layers", type=command_line.positive_int, default=attention["num_layers"], help="decoder layers"
    )
    p.add_argument("--ffn-dim", type=command_line.positive_int, default=attention["ffn_dim"], help="feed-forward width")
    p.add_argument(
        "--min-count", type=command_line.positive_int, default=5, help="words rarer than this in train become <UNK>"
    )
    p.add_argument(
        "--max-words", type=command_line.positive_int, default=16, help="training captions are cut to this many words"
    )
    p.add_argument("--max-length", type=command_line.positive_int, default=20, help="longest generated caption")
    p.add_argument(
        "--decodings",
        type=_decodings,
        default=None,
        help="decodings compared on dev (the best BLEU-4 is reported on test): greedy, beamK, "
        "beamK-lpA (beam K, finished captions ranked by log-prob / length**A); "
        "default greedy,beam3,beam5,beam5-lp1",
    )
    p.add_argument(
        "--samples",
        type=command_line.nonnegative_int,
        default=None,
        help="captioned images shown per split (default 6)",
    )
    p.add_argument(
        "--limit-train-batches",
        type=command_line.batch_limit,
        default=1.0,
        help="fraction in (0, 1] or number (> 1) of training batches per epoch (default: all)",
    )
    command_line.add_run_args(p, batch_size=128)
    args = p.parse_args(argv)
    if args.overfit and args.quick:
        p.error("--overfit and --quick are two different runs: choose one")
    if args.cell == "transformer" and args.model_dim % args.num_heads:
        p.error(f"--model-dim {args.model_dim} must be divisible by --num-heads {args.num_heads}")
    mode = ("overfit" if args.overfit else "full") + ("_transformer" if args.cell == "transformer" else "")
    quick = QUICK if args.quick else {}
    for key, default in (
        ("lr", RECIPE[mode]["lr"]),
        ("dropout", RECIPE[mode]["dropout"]),
        ("max_epochs", quick.get("max_epochs", RECIPE[mode]["max_epochs"])),
        ("decodings", quick.get("decodings", "greedy,beam3,beam5,beam5-lp1")),
        ("samples", quick.get("samples", 6)),
    ):
        if getattr(args, key) is None:
            setattr(args, key, default)
    # The images whose features are extracted: only those the run uses.
    args.images = {"train": args.overfit_captions} if args.overfit else dict(QUICK["images"]) if args.quick else None
    name = f"overfit_{args.cell}" if args.overfit else f"quick_{args.cell}" if args.quick else args.cell
    args.out = args.out or default_out("image_captioning", name)
    return args


# --------------------------------------------------------------------------- training


def make_module(args, dm: CaptionDataModule, features: torch.Tensor) -> CaptioningModule:
    """The captioner the options describe, sized by the vocabulary (its size and token ids) and the
    features ((M, channels) pooled, (M, positions, channels) for the attention captioner)."""
    # Seeded here, not only at the start: extracting features (or finding them cached) must not
    # change the initial weights.
    seed_everything(args.seed)
    vocab = {"vocab_size": len(dm.vocab), **dm.vocab.token_ids()}
    if args.cell == "transformer":
        config = TransformerCaptioningConfig(
            **vocab,
            feature_dim=features.shape[2],
            positions=features.shape[1],
            model_dim=args.model_dim,
            num_heads=args.num_heads,
            num_layers=args.num_layers,
            ffn_dim=args.ffn_dim,
            dropout=args.dropout,
            max_length=max(args.max_words, args.max_length) + 1,
        )
    else:
        config = CaptioningConfig(
            **vocab,
            feature_dim=features.shape[1],
            wordvec_dim=args.wordvec_dim,
            hidden_dim=args.hidden_dim,
            cell=args.cell,
            dropout=args.dropout,
        )
    sizes = {k: v for k, v in dataclasses.asdict(config).items() if k != "cell"}
    module = CaptioningModule(
        args.cell,
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_gamma=1.0 if args.overfit else args.lr_gamma,
        **sizes,
    )
    module.model.set_feature_stats(features)
    return module


def fit(args, module: CaptioningModule, folder: Path, callbacks, **fit_kwargs):
    """Fit in `folder` (with --resume: from its last checkpoint); returns the trainer, seconds and digests."""
    trainer = training.make_trainer(
        args,
        folder,
        callbacks,
        args.max_epochs,
        gradient_clip_val=5.0,
        limit_train_batches=args.limit_train_batches,
        num_sanity_val_steps=0,
        **({"max_time": {"minutes": args.max_minutes}} if not args.overfit else {}),
        **({"limit_val_batches": 0} if args.overfit else {}),
    )
    clock = record.Stopwatch()
    training.fit(trainer, module, folder, args.resume, **fit_kwargs)
    return trainer, clock(), record.parameter_digests(module)


def feature_report(dm: CaptionDataModule) -> dict:
    """Each split's feature extraction: backbone, images, seconds, device, threads, from the cache or not."""
    keys = ("backbone", "weights", "num_images", "seconds", "device", "threads", "cached")
    return {
        split: {k: meta[k] for k in keys if k in meta}
        | ({"images_per_s": round(meta["images_per_s"], 1)} if "images_per_s" in meta else {})
        for split, meta in dm.feature_meta.items()
    }


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
    trainer, seconds, digests = fit(args, module, work, callbacks, datamodule=data)
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
    echo({k: v for k, v in result.items() if k != "run"})
    storage.write_json(work / "results.json", {f"overfit_{args.cell}": result})
    storage.write_text(work / "README.md", reports.captioning_readme({f"overfit_{args.cell}": result}))
    return result


def evaluate_decodings(args, dm: CaptionDataModule, model) -> tuple[dict, str]:
    """Every decoding (greedy or beam) scored on dev; the best is then run once on test."""
    evals = {}
    if "dev" in dm.splits:
        decodings = args.decodings.split(",")
        evals["dev"] = evaluate(model, dm.features["dev"], dm.splits["dev"], dm.vocab, decodings, args.max_length)
    chosen = max(evals["dev"], key=lambda k: evals["dev"][k]["bleu4"]) if "dev" in evals else "greedy"
    if "test" in dm.splits:
        evals["test"] = evaluate(model, dm.features["test"], dm.splits["test"], dm.vocab, [chosen], args.max_length)
    return evals, chosen


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
    dm.vocab.save(work / "vocab.json")
    dm.vocab.save(work / "checkpoints" / "vocab.json")  # beside the model
    callbacks = training.checkpoints(work / "checkpoints", "val_loss", "min", args.ckpt_every_n_steps)
    trainer, train_seconds, digests = fit(args, module, work, callbacks, datamodule=dm)
    if not is_global_zero():
        return {}
    best = callbacks[0]
    history = training.read_metrics(work)
    title = f"Flickr8k captioning, {args.cell.upper()} (customops layers)"
    figures.plot_curves(
        {"": history},
        [("loss", "loss per caption (summed over words)")],
        work / f"learning_curves_{args.cell}.png",
        title,
    )
    model = training.load_module(CaptioningModule, best.best_model_path).model
    evals, chosen = evaluate_decodings(args, dm, model)
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
        "best_val_loss": float(best.best_model_score),
        "best_checkpoint_epoch": int(storage.load_checkpoint(best.best_model_path)["epoch"]),
        "epochs_run": trainer.current_epoch,
        "train_seconds": train_seconds,
        "curves": {key: [row[key] for row in history if key in row] for key in ("train_loss", "val_loss")},
        "test_examples": examples,
        "vocab_size": len(dm.vocab),
        "train_pairs": len(dm.pairs("train")),
        "feature_extraction": feature_report(dm),
        "hparams": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "run": record.run_record(args, trainer, train_seconds, digests),
    }
    storage.write_json(work / "results.json", {args.cell: result})
    storage.write_text(work / "README.md", reports.captioning_readme({args.cell: result}))
    echo({k: result[k] for k in ("test_bleu", "best_val_loss", "epochs_run", "train_seconds")})
    return result


def make_datamodule(args: argparse.Namespace) -> CaptionDataModule:
    """The data, set up: the vocabulary sizes the network, so it exists before the Trainer does."""
    dm = CaptionDataModule(
        args.data_root,
        args.format,
        args.backbone,
        None if args.weights == "none" else args.weights,
        args.cache_dir,
        args.image_size,
        args.min_count,
        args.max_words,
        args.batch_size,
        progress=not args.no_progress,
        seed=args.seed,
        images=args.images,
        pooling="grid" if args.cell == "transformer" else "mean",
    )
    dm.prepare_data()
    dm.setup()
    for split, meta in dm.feature_meta.items():
        how = "cached" if meta["cached"] else "extracted"
        echo(f"{split}: {meta['num_images']} images, features {how} (extraction took {meta['seconds']:.1f} s)")
    echo(f"vocabulary: {len(dm.vocab)} words (min count {args.min_count})")
    return dm


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seed_everything(args.seed)
    with storage.RunFolder(args.out, args.resume) as run:
        dm = make_datamodule(args)
        return run_overfit(args, dm, run.work) if args.overfit else run_full(args, dm, run.work)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    command_line.main(main, "image_captioning")


if __name__ == "__main__":
    cli()
