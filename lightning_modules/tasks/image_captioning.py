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
import json
import math
import random
import textwrap
from pathlib import Path

import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader
from torchmetrics.text import BLEUScore

from lightning_modules import runs
from lightning_modules.captioning import CaptioningConfig, CaptioningModule, TransformerCaptioningConfig
from lightning_modules.data.common import ShardedDataModule
from lightning_modules.data.flickr8k import (
    CaptionDataModule,
    CaptionPairs,
    CaptionSplit,
    Vocabulary,
    caption_pairs,
    tokenize,
)

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
    p.add_argument("--image-size", type=runs.positive_int, default=224)
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
    p.add_argument("--overfit-captions", type=runs.positive_int, default=100)
    p.add_argument("--overfit-target", type=runs.positive_float, default=0.1)
    p.add_argument("--overfit-steps-per-epoch", type=runs.positive_int, default=10)
    p.add_argument(
        "--max-epochs",
        "--epochs",
        type=runs.positive_int,
        default=None,
        help=f"default {RECIPE['full']['max_epochs']} (full run), {QUICK['max_epochs']} (quick), "
        f"{RECIPE['overfit']['max_epochs']} (overfit)",
    )
    p.add_argument("--max-minutes", type=runs.positive_float, default=20.0, help="training time limit (full run)")
    p.add_argument(
        "--lr",
        type=runs.positive_float,
        default=None,
        help=f"default {RECIPE['full']['lr']} (full run), {RECIPE['overfit']['lr']} (overfit)",
    )
    p.add_argument("--lr-gamma", type=runs.positive_float, default=0.85, help="learning-rate decay per epoch")
    p.add_argument("--weight-decay", type=runs.nonnegative_float, default=0.0)
    p.add_argument(
        "--dropout",
        type=runs.probability,
        default=None,
        help=f"default {RECIPE['full']['dropout']} (full run), {RECIPE['overfit']['dropout']} (overfit)",
    )
    p.add_argument("--wordvec-dim", type=runs.positive_int, default=sizes["wordvec_dim"])
    p.add_argument("--hidden-dim", type=runs.positive_int, default=sizes["hidden_dim"])
    p.add_argument("--model-dim", type=runs.positive_int, default=attention["model_dim"], help="transformer width")
    p.add_argument("--num-heads", type=runs.positive_int, default=attention["num_heads"], help="transformer heads")
    p.add_argument("--num-layers", type=runs.positive_int, default=attention["num_layers"], help="decoder layers")
    p.add_argument("--ffn-dim", type=runs.positive_int, default=attention["ffn_dim"], help="feed-forward width")
    p.add_argument("--min-count", type=runs.positive_int, default=5, help="words rarer than this in train become <UNK>")
    p.add_argument(
        "--max-words", type=runs.positive_int, default=16, help="training captions are cut to this many words"
    )
    p.add_argument("--max-length", type=runs.positive_int, default=20, help="longest generated caption")
    p.add_argument(
        "--decodings",
        type=_decodings,
        default=None,
        help="decodings compared on dev (the best BLEU-4 is reported on test): greedy, beamK, "
        "beamK-lpA (beam K, finished captions ranked by log-prob / length**A); "
        "default greedy,beam3,beam5,beam5-lp1",
    )
    p.add_argument(
        "--samples", type=runs.nonnegative_int, default=None, help="captioned images shown per split (default 6)"
    )
    p.add_argument(
        "--limit-train-batches",
        type=runs.batch_limit,
        default=1.0,
        help="fraction in (0, 1] or number (> 1) of training batches per epoch (default: all)",
    )
    runs.add_run_args(p, batch_size=128)
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
    args.out = args.out or runs.default_out("image_captioning", name)
    return args


# --------------------------------------------------------------------------- evaluation


def generate(
    model,
    features: torch.Tensor,
    vocab: Vocabulary,
    max_length: int,
    beam_size: int,
    length_penalty: float,
    batch_size: int = 256,
) -> list[str]:
    """Captions for features (M, F), decoded to strings."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in features.split(batch_size):
        ids = model.sample(chunk.to(device), max_length, beam_size, length_penalty)  # (B, max_length)
        out.extend(vocab.decode(row) for row in ids.tolist())
    return out


def corpus_bleu(hypotheses: list[str], split: CaptionSplit) -> dict[str, float]:
    """Corpus BLEU-1..4 against all reference captions, both sides tokenized alike."""
    refs = [[" ".join(tokenize(c)) for c in caps] for caps in split.captions]
    # Computed by one process over the whole split: no syncing with other ranks.
    return {f"bleu{n}": float(BLEUScore(n_gram=n, sync_on_compute=False)(hypotheses, refs)) for n in range(1, 5)}


def parse_decoding(name: str) -> tuple[int, float]:
    """ "greedy" -> (1, 0.0); "beam5" -> (5, 0.0); "beam5-lp0.7" -> (5, 0.7)."""
    if name == "greedy":
        return 1, 0.0
    try:
        beam, _, lp = name.removeprefix("beam").partition("-lp")
        if not name.startswith("beam") or int(beam) < 1 or not math.isfinite(float(lp or 0.0)):
            raise ValueError
        return int(beam), float(lp or 0.0)
    except ValueError:
        raise ValueError(
            f"--decodings: cannot read {name!r}; use greedy, beamK (K >= 1) or beamK-lpA (A a finite number)"
        ) from None


def evaluate(model, features, split, vocab, args, decodings: list[str] | None = None) -> dict:
    """BLEU of each decoding (default: every one of --decodings) on one split."""
    result = {}
    for name in decodings or args.decodings.split(","):
        beam, penalty = parse_decoding(name)
        clock = runs.Stopwatch()
        hyps = generate(model, features, vocab, args.max_length, beam, penalty)
        result[name] = {
            **corpus_bleu(hyps, split),
            "mean_words": sum(len(h.split()) for h in hyps) / len(hyps),
            "seconds": clock(),
        }
        result[name]["captions"] = hyps
    return result


# --------------------------------------------------------------------------- figures and reports


def learning_curves(folder: Path, png: Path, title: str) -> dict[str, list[float]]:
    """Train and dev loss per epoch, read back from the run's CSV log, and their plot."""
    history = runs.read_metrics(folder)
    runs.plot_curves({"": history}, [("loss", "loss per caption (summed over words)")], png, title)
    return {key: [row[key] for row in history if key in row] for key in ("train_loss", "val_loss")}


def sample_grid(split: CaptionSplit, indices: list[int], captions: list[str], png: Path, title: str) -> None:
    """Each image with its generated caption above its reference captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.io import ImageReadMode, read_image

    cols = 3
    rows = math.ceil(len(indices) / cols)
    # Each image sits above its own text panel: the generated caption, then the references.
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(5 * cols, 6.8 * rows), squeeze=False, gridspec_kw={"height_ratios": [3, 1.6] * rows}
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, (i, cap) in enumerate(zip(indices, captions)):
        image_ax, text_ax = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        image_ax.imshow(read_image(str(split.paths[i]), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy())
        text_ax.text(
            0,
            1,
            textwrap.fill("generated: " + cap, 50),
            va="top",
            fontsize=10.5,
            fontweight="bold",
            transform=text_ax.transAxes,
        )
        refs = "\n".join(textwrap.fill("- " + r, 66) for r in split.captions[i])
        text_ax.text(0, 0.72, refs, va="top", fontsize=8, family="serif", transform=text_ax.transAxes)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    runs.save_figure(fig, png, dpi=80)


def sample_markdown(split: CaptionSplit, indices: list[int], captions: list[str], title: str) -> str:
    lines = [f"## {title}", ""]
    for i, cap in zip(indices, captions):
        lines += [f"**{split.names[i]}**", "", f"- generated: *{cap}*"]
        lines += [f"- reference {k + 1}: {r}" for k, r in enumerate(split.captions[i])]
        lines.append("")
    return "\n".join(lines)


def write_readme(out: Path) -> None:
    """reports/.../README.md: the headline numbers of results.json, its figures and a few test captions."""
    results = json.loads((out / "results.json").read_text())
    lines = [
        "# Image captioning on Flickr8k with customops layers: RNN, LSTM and attention (Transformer)",
        "",
        "Written by `scripts/image_captioning.py` from `results.json` (every number below is from that file).",
        "Corpus BLEU (torchmetrics `BLEUScore`) on the 1,000 test images against all five references,",
        "lower-cased and without punctuation on both sides; the decoding (greedy or beam) is chosen on dev.",
        "",
    ]
    cells = [k for k in ("rnn", "lstm", "transformer") if k in results]
    if cells:
        lines += [
            "| model | decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | best dev loss (epoch) | epochs | training time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for k in cells:
            r = results[k]
            b = r["test_bleu"]
            lines.append(
                f"| {k.upper()} | {r['decoding_chosen_on_dev']} | {b['bleu1']:.3f} | {b['bleu2']:.3f} "
                f"| {b['bleu3']:.3f} | **{b['bleu4']:.3f}** "
                f"| {r['best_val_loss']:.2f} ({r['best_checkpoint_epoch'] + 1}) | {r['epochs_run']} "
                f"| {r['train_seconds'] / 60:.1f} min |"
            )
        decodings = list(results[cells[0]]["dev"])
        lines += [
            "",
            "Every decoding compared on dev (BLEU-4); the best is the one run on test:",
            "",
            "| model | " + " | ".join(decodings) + " |",
            "|---|" + "---|" * len(decodings),
        ]
        for k in cells:
            row = " | ".join(
                f"{results[k]['dev'][d]['bleu4']:.3f}" if d in results[k]["dev"] else "" for d in decodings
            )
            lines.append(f"| {k.upper()} | {row} |")
        first = results[cells[0]]
        fe = first["feature_extraction"]
        total = sum(v["seconds"] for v in fe.values())
        pooled = (
            "the last feature map's grid of positions (float16)"
            if cells[0] == "transformer"
            else "global-average pooled"
        )
        lines += [
            "",
            f"Image features: {fe['train']['backbone']} ({fe['train']['weights']} weights), {pooled}, "
            f"{sum(v['num_images'] for v in fe.values())} images extracted once in {total / 60:.1f} min on "
            f"{fe['train']['device']} with {fe['train']['threads']} threads ("
            + ", ".join(f"{s}: {v['seconds']:.0f} s" for s, v in fe.items())
            + "), then read from the cache. "
            "Timings are wall-clock on a 2-core machine whose cores other jobs shared at times.",
            f"Vocabulary: {first['vocab_size']} words; {first['train_pairs']} training (image, caption) pairs.",
            "",
        ]
    for k in ("rnn", "lstm", "transformer"):
        if f"overfit_{k}" in results:
            o = results[f"overfit_{k}"]
            lines.append(
                f"Overfit check ({k.upper()}): {o['captions']} training captions, loss {o['final_loss']:.3f} "
                f"after {o['steps']} steps ({o['seconds']:.0f} s), {o['exact_reproductions']}/{o['captions']} "
                f"reproduced exactly ([overfit_{k}.md](overfit_{k}.md))."
            )
    for k in cells:
        lines += [
            "",
            f"## {k.upper()}",
            "",
            f"![learning curves](learning_curves_{k}.png)",
            "",
            f"Samples (train and test images, each caption under its five references): "
            f"[samples_{k}.md](samples_{k}.md). The same as picture grids, `samples_{k}_train.png` and "
            f"`samples_{k}_test.png`, are written beside this file but not committed: Flickr8k's "
            "licence does not allow redistributing its photos. Some test captions verbatim:",
            "",
        ]
        for ex in results[k].get("test_examples", [])[:4]:
            lines.append(f'- `{ex["image"]}`: *{ex["generated"]}* (a reference: "{ex["references"][0]}")')
    runs.write_text(out / "README.md", "\n".join(lines) + "\n")


def feature_report(dm: CaptionDataModule) -> dict:
    return {
        split: {
            k: meta[k]
            for k in ("backbone", "weights", "num_images", "seconds", "device", "threads", "cached")
            if k in meta
        }
        | ({"images_per_s": round(meta["images_per_s"], 1)} if "images_per_s" in meta else {})
        for split, meta in dm.feature_meta.items()
    }


# --------------------------------------------------------------------------- runs


class _Repeated(CaptionPairs):
    """The pairs `repeats` times over (index i is pair i % n), a whole batch per index list."""

    def __init__(self, pairs: CaptionPairs, repeats: int):
        super().__init__(pairs.features, pairs.image_index, pairs.captions)
        self.n, self.repeats = len(pairs.captions), repeats

    def __len__(self) -> int:
        return self.n * self.repeats

    def __getitem__(self, i):
        return super().__getitem__(torch.as_tensor(i) % self.n)


class _OverfitData(ShardedDataModule):
    """Full batches of the few overfit captions, `steps` per epoch; the ranks split each batch."""

    def __init__(self, pairs: CaptionPairs, steps: int, seed: int):
        super().__init__(seed=seed)
        self.pairs, self.steps = pairs, steps

    def train_dataloader(self) -> DataLoader:
        world, _ = self._ranks()
        data = _Repeated(self.pairs, self.steps)
        per_rank = max(1, len(self.pairs.captions) // world)
        return DataLoader(
            data,
            sampler=self.batch_sampler(len(data), per_rank, train=True),
            batch_size=None,
            generator=self.loader_generator(),
        )


def make_module(args, dm: CaptionDataModule, features: torch.Tensor) -> CaptioningModule:
    # Seeded here, not only at the start: extracting features (or finding them cached) must not
    # change the initial weights.
    runs.seed_everything(args.seed)
    if args.cell == "transformer":  # features (M, positions, channels)
        config = TransformerCaptioningConfig(
            len(dm.vocab),
            feature_dim=features.shape[2],
            positions=features.shape[1],
            model_dim=args.model_dim,
            num_heads=args.num_heads,
            num_layers=args.num_layers,
            ffn_dim=args.ffn_dim,
            dropout=args.dropout,
            max_length=max(args.max_words, args.max_length) + 1,
        )
    else:  # features (M, channels)
        config = CaptioningConfig(
            len(dm.vocab), features.shape[1], args.wordvec_dim, args.hidden_dim, args.cell, args.dropout
        )
    module = CaptioningModule(
        dataclasses.asdict(config),
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_gamma=1.0 if args.overfit else args.lr_gamma,
    )
    module.model.set_feature_stats(features)
    return module


def fit(args, module: CaptioningModule, folder: Path, callbacks, **fit_kwargs):
    """Fit in `folder` (with --resume: from its last checkpoint); returns the trainer, seconds and digests."""
    trainer = runs.make_trainer(
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
    clock = runs.Stopwatch()
    runs.fit(trainer, module, folder, args.resume, **fit_kwargs)
    return trainer, clock(), runs.parameter_digests(module)


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
        callbacks += runs.checkpoints(work / "checkpoints", "train_loss", "min", args.ckpt_every_n_steps)
    # Several full-batch steps per epoch: Lightning's per-epoch bookkeeping would otherwise
    # dominate the run time. The logged loss is the epoch's mean, so the target holds on average.
    trainer, seconds, digests = fit(
        args, module, work, callbacks, datamodule=_OverfitData(pairs, args.overfit_steps_per_epoch, args.seed)
    )
    final_loss = float(trainer.callback_metrics["train_loss"])
    if not runs.is_global_zero():
        return {}
    generated = generate(module.model, pairs.features, dm.vocab, args.max_length, 1, 0.0)
    wanted = [dm.vocab.decode(row[1:]) for row in pairs.captions.tolist()]
    matches = sum(g == w for g, w in zip(generated, wanted))
    lines = [
        f"# Overfitting {n} training captions ({args.cell})",
        "",
        f"Final training loss {final_loss:.4f} (mean of the last epoch) after {trainer.global_step} "
        f"full-batch steps ({seconds:.1f} s); "
        f"greedy decoding reproduces {matches}/{n} captions exactly "
        "(the target is the caption cut to the vocabulary and --max-words, rare words as <UNK>).",
        "",
        "| image | target | generated |",
        "|---|---|---|",
    ]
    lines += [f"| {small.names[i]} | {wanted[i]} | {generated[i]} |" for i in range(min(n, 10))]
    runs.write_text(work / f"overfit_{args.cell}.md", "\n".join(lines) + "\n")
    result = {
        "captions": n,
        "final_loss": final_loss,
        "steps": trainer.global_step,
        "seconds": seconds,
        "exact_reproductions": matches,
        "reached_target": final_loss < args.overfit_target,
        "run": runs.run_record(args, trainer, seconds, digests),
    }
    for i in range(min(n, 5)):
        runs.echo(f"  target:    {wanted[i]}\n  generated: {generated[i]}")
    runs.echo({k: v for k, v in result.items() if k != "run"})
    runs.write_json(work / "results.json", {f"overfit_{args.cell}": result})
    write_readme(work)
    return result


def run_full(args, dm: CaptionDataModule, work: Path) -> dict:
    module = make_module(args, dm, dm.features["train"])
    dm.vocab.save(work / "vocab.json")
    dm.vocab.save(work / "checkpoints" / "vocab.json")  # beside the model
    callbacks = runs.checkpoints(work / "checkpoints", "val_loss", "min", args.ckpt_every_n_steps)
    trainer, train_seconds, digests = fit(args, module, work, callbacks, datamodule=dm)
    if not runs.is_global_zero():
        return {}
    best = callbacks[0]
    curves = learning_curves(
        work, work / f"learning_curves_{args.cell}.png", f"Flickr8k captioning, {args.cell.upper()} (customops layers)"
    )
    module = runs.load_module(CaptioningModule, best.best_model_path)
    model = module.model

    # Every decoding (greedy or beam) is scored on dev; the best is then run once on test.
    evals = {}
    if "dev" in dm.splits:
        evals["dev"] = evaluate(model, dm.features["dev"], dm.splits["dev"], dm.vocab, args)
    chosen = max(evals["dev"], key=lambda k: evals["dev"][k]["bleu4"]) if "dev" in evals else "greedy"
    if "test" in dm.splits:
        evals["test"] = evaluate(model, dm.features["test"], dm.splits["test"], dm.vocab, args, [chosen])

    rng = random.Random(args.seed)
    md = [f"# Generated captions: {args.cell.upper()}, {chosen} decoding", ""]
    examples = []
    for split in ("train", "test"):
        if split not in dm.splits:
            continue
        indices = sorted(rng.sample(range(len(dm.splits[split])), min(args.samples, len(dm.splits[split]))))
        if split == "test":
            caps = [evals["test"][chosen]["captions"][i] for i in indices]
        else:
            caps = generate(model, dm.features[split][indices], dm.vocab, args.max_length, *parse_decoding(chosen))
        title = f"{split} images, {args.cell.upper()} ({chosen})"
        sample_grid(dm.splits[split], indices, caps, work / f"samples_{args.cell}_{split}.png", title)
        md.append(sample_markdown(dm.splits[split], indices, caps, title))
        if split == "test":
            examples = [
                {"image": dm.splits[split].names[i], "generated": c, "references": dm.splits[split].captions[i]}
                for i, c in zip(indices, caps)
            ]
    runs.write_text(work / f"samples_{args.cell}.md", "\n".join(md) + "\n")

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
        "best_checkpoint_epoch": int(runs.load_checkpoint(best.best_model_path)["epoch"]),
        "epochs_run": trainer.current_epoch,
        "train_seconds": train_seconds,
        "curves": curves,
        "test_examples": examples,
        "vocab_size": len(dm.vocab),
        "train_pairs": len(dm.pairs("train")),
        "feature_extraction": feature_report(dm),
        "hparams": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "run": runs.run_record(args, trainer, train_seconds, digests),
    }
    runs.write_json(work / "results.json", {args.cell: result})
    write_readme(work)
    runs.echo({k: result[k] for k in ("test_bleu", "best_val_loss", "epochs_run", "train_seconds")})
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    runs.seed_everything(args.seed)
    with runs.RunFolder(args.out, args.resume) as run:
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
        # The vocabulary sizes the network, so the data is set up before the Trainer exists.
        dm.prepare_data()
        dm.setup()
        for split, meta in dm.feature_meta.items():
            how = "cached" if meta["cached"] else "extracted"
            runs.echo(f"{split}: {meta['num_images']} images, features {how} (extraction took {meta['seconds']:.1f} s)")
        runs.echo(f"vocabulary: {len(dm.vocab)} words (min count {args.min_count})")
        return run_overfit(args, dm, run.work) if args.overfit else run_full(args, dm, run.work)


def cli() -> None:
    """The console command: main() with the process's arguments (its results are for callers in Python)."""
    runs.cli(main, "image_captioning")


if __name__ == "__main__":
    cli()
