"""Each task's Markdown report, written from the results its run produced.

- ``digits_sweep``: the MNIST sweep (``sweep.md``);
- ``transfer_results``: both transfer-learning scenarios (``results.md``);
- ``training_benchmark``: customops networks against their torch.nn twins (``benchmark.md``);
- ``captioning_readme``, ``caption_samples``, ``overfit_report``: the captioners' report, sample
  captions and overfit check; ``bleu_table``: the BLEU table, written here once (the README's
  results section uses it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_modules.reporting.tables import table

CAPTIONER_NAMES = {"rnn": "vanilla RNN", "lstm": "LSTM", "transformer": "attention (Transformer decoder)"}


# --------------------------------------------------------------------------- MNIST


def describe_digit_net(spec: dict[str, Any]) -> str:
    """A digit network's sizes in words: "hidden 512" or "32 filters 7x7, hidden 512"."""
    if "filters" not in spec:
        return f"hidden {spec['hidden']}"
    return f"{spec['filters']} filters {spec['kernel_size']}x{spec['kernel_size']}, hidden {spec['hidden']}"


def _distortions(cfg: dict[str, Any]) -> str:
    return (
        f"shifts of up to {cfg['max_shift']} px, rotations of up to {cfg.get('max_rotation', 0)} degrees, "
        f"scaling by up to {cfg.get('max_scale', 0)}, elastic alpha {cfg.get('elastic_alpha', 0)} px, "
        f"sigma {cfg.get('elastic_sigma', 0)} px"
    )


def tta_sentence(block: dict[str, Any]) -> str:
    """results.json's "tta" block in words: both validation accuracies and what scored the test digits."""
    if block["mode"] == "off":
        return f"Test-time augmentation off: the test digits scored plainly (val {100 * block['val_acc_plain']:.2f}%)."
    return (
        f"Test-time augmentation ({block['views']}) chosen on validation: val accuracy "
        f"{100 * block['val_acc_plain']:.2f}% plain, {100 * block['val_acc_tta']:.2f}% with TTA (ties: plain); "
        f"the test digits were scored once, {'with TTA' if block['chosen'] == 'tta' else 'plainly'}."
    )


def digits_sweep(results: dict[str, Any]) -> str:
    """``sweep.md``: every candidate of the sweep, the choice, and the final training's accuracy."""
    cfg, chosen, final = results["config"], results["chosen"]["spec"], results["final"]
    halving = (
        f"Successive halving: every candidate trains {cfg['sweep_epochs']} epoch(s); the best third by "
        f"validation accuracy (rounded up) trains again from scratch for {cfg.get('halving', 1)} times as many "
        "epochs, while that leaves more than one; the choice is the best of the last rung."
        if cfg.get("halving", 1) > 1
        else f"Every candidate trains {cfg['sweep_epochs']} epoch(s)."
    )
    cnn = results["model"] == "cnn"
    header = (["filters", "k", "hidden"] if cnn else ["hidden"]) + ["val acc (%)", "epochs", "rung", "wall (s)"]
    rows = []
    for r in results["candidates"]:
        s = r["spec"]
        sizes = [s["filters"], s["kernel_size"], s["hidden"]] if cnn else [s["hidden"]]
        mark = " **(chosen)**" if s == chosen else ""
        rows.append([*sizes, f"{100 * r['val_acc']:.2f}{mark}", r["epochs"], r.get("rung", 0), f"{r['wall_s']:.0f}"])
    run = results["run"]
    lines = [
        f"# MNIST {results['model']}: sweep on the 5,000 validation digits",
        "",
        f"{halving} {cfg['optimizer']}, {cfg['scheduler']} schedule, peak lr {cfg['lr']}, "
        f"weight decay {cfg['weight_decay']}, batch {cfg['batch_size']}, training digits distorted "
        f"({_distortions(cfg)}).",
        "",
        *table(header, "r" * len(header), rows),
        "",
        f"Chosen on validation: **{describe_digit_net(chosen)}**. Retrained from scratch for {final['epochs']} "
        f"epochs, {cfg['scheduler']} schedule (checkpoint of epoch {final['best_epoch']} kept, chosen on "
        f"validation): val accuracy **{100 * final['val_acc']:.2f}%**, test accuracy "
        f"**{100 * results['test_acc']:.2f}%** on the {results['test_size']:,} test digits.",
        "",
        *([tta_sentence(results["tta"]), ""] if results.get("tta") else []),
        f"Wall time: sweep {results['sweep_wall_s']:.0f} s, final training {final['wall_s']:.0f} s, "
        f"total {results['total_wall_s']:.0f} s on {run['world_size']} x {run['device']} ({run['precision']}).",
    ]
    return "\n".join(lines) + "\n"


def describe_captioner(spec: dict[str, Any]) -> str:
    """A captioner's sizes in words: "wordvec 256, hidden 512" or "width 256, 4 heads, 2 layers, ffn 1024"."""
    if "model_dim" in spec:
        return (
            f"width {spec['model_dim']}, {spec['num_heads']} heads, {spec['num_layers']} layers, ffn {spec['ffn_dim']}"
        )
    return f"wordvec {spec['wordvec_dim']}, hidden {spec['hidden_dim']}"


# The twin each network timed by the training step is timed against (the captioners':
# lightning_modules.captioner_twins).
CAPTIONER_TWINS = {
    "rnn": "nn.RNN + nn.Embedding + nn.Linear + F.cross_entropy",
    "lstm": "nn.LSTM + nn.Embedding + nn.Linear + F.cross_entropy",
    "transformer": "nn.TransformerDecoder (post-norm) + nn.Embedding + nn.Linear + F.cross_entropy",
    "mobilenet_v2": "torchvision's MobileNetV2 features (the native trunk)",
}
STEP_NETS = {**CAPTIONER_NAMES, "mobilenet_v2": "MobileNetV2 fine-tuning"}


def describe_step_net(row: dict[str, Any]) -> str:
    """A row of training steps in words: the network, its sizes, batch and precision."""
    spec = row["spec"]
    if row["model"] == "mobilenet_v2":
        sizes = f"{spec['image_size']}x{spec['image_size']}, BatchNorm statistics frozen, {spec['weights']} weights"
    else:
        sizes = describe_captioner(spec)
    return f"{STEP_NETS[row['model']]}, {sizes}, batch {row['batch_size']}, {row.get('precision', '')}".rstrip(", ")


def _ms(block: dict[str, Any], impl: str) -> str:
    return f"{1000 * block[f'median_{impl}_s']:.1f}, {1000 * block[f'min_{impl}_s']:.1f}"


def training_benchmark(results: dict[str, Any]) -> str:
    """``benchmark.md``: seconds per training epoch of each MNIST net and of its twin; milliseconds per
    training step of each captioner and of its twin, eager and compiled."""
    record, cfg = results["run"], results["config"]
    device = f"{record.get('world_size', 1)} x {record.get('device', '?')} ({record['cpu_threads']} threads)"
    epochs = [r for r in results["results"] if "times_s" in r]
    steps = [r for r in results["results"] if "eager" in r]
    lines = ["# Training speed: customops network / identical torch.nn twin", ""]
    if epochs:
        rows = []
        for r in epochs:
            s = r["spec"]
            net = "TwoLayerNet" if r["model"] == "softmax" else "ConvNet"
            rows.append(
                [
                    f"{net}, {describe_digit_net(s)}",
                    f"{r['median_custom_s']:.2f}, {r['min_custom_s']:.2f}",
                    f"{r['median_torch_s']:.2f}, {r['min_torch_s']:.2f}",
                    f"{r['ratio']:.3f}",
                    f"{r['ratio_min']:.3f}",
                ]
            )
        header = ["network", "custom s/epoch (median, min)", "torch twin s/epoch (median, min)", "ratio of medians"]
        lines += [
            "## One training epoch of each MNIST net",
            "",
            f"Same ClassifierModule (customops softmax loss, {cfg['optimizer']}, one-cycle), same MNISTDataModule "
            f"({results['train_digits']:,} digits, batch {results['batch_size']}, shifts of up to "
            f"{cfg['max_shift']} px), runs interleaved, {results['repeats']} epochs each, on {device}.",
            "",
            *table([*header, "ratio of minima"], "lrrrr", rows),
            "",
        ]
    if steps:
        how = results["steps"]
        rows = []
        for r in steps:
            for mode in ("eager", "compiled"):
                if block := r.get(mode):
                    rows.append(
                        [
                            describe_step_net(r),
                            f"`{CAPTIONER_TWINS[r['model']]}`",
                            mode,
                            _ms(block, "custom"),
                            _ms(block, "torch"),
                            f"{block['ratio']:.3f}",
                            f"{block['ratio_min']:.3f}",
                        ]
                    )
        first = steps[0]
        header = ["network", "torch.nn twin", "", "custom ms/step (median, min)", "twin ms/step (median, min)"]
        lines += [
            "## Training steps",
            "",
            "Each network against its twin from the same weights, on the same synthetic batches of the recipe's "
            "shapes (the time of a step depends on the shapes, not the values); the captioners with their recipe's "
            "sizes, dropout, learning rate, Adam and gradient clipping"
            + (f", captions of up to {first['words']} words" if "words" in first else "")
            + f"; on {how['device']} ({record['cpu_threads']} threads). {results['repeats']} interleaved repeats "
            f"of {first['steps']} steps after {first['warmup_steps']} warm-up steps"
            + (" (compiled: `torch.compile` of each network, compilation in the warm-up)" if how["compile"] else "")
            + ".",
            "",
            *table([*header, "ratio of medians", "ratio of minima"], "lllrrrr", rows),
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- transfer learning


def transfer_results(summary: dict[str, Any]) -> str:
    """``results.md``: both scenarios' best validation accuracy, epochs, learning rates and time."""
    run = summary["run"]
    rows = [
        [mode, f"{r['best_val_acc']:.4f} ({r['best_val_correct']})", r["best_epoch"], r["epochs_run"]]
        + [r["trunk_lr"] if r["trunk_lr"] is not None else "frozen", r["head_lr"]]
        + [f"{r['trainable_parameters']:,}", f"{r['wall_time_s']:.1f}"]
        for mode, r in summary["scenarios"].items()
    ]
    header = ["scenario", "best val acc", "best epoch", "epochs run", "trunk lr", "head lr", "trainable params"]
    lines = [
        "# Transfer learning on ants vs bees",
        "",
        f"Backbone `{summary['backbone']}` ({summary['weights']} weights{_trunk_note(summary)}), "
        f"{summary['train_images']} training / {summary['val_images']} validation images, "
        f"{run['world_size']} x {run['device']} ({run['precision']}), seed {summary['seed']}.",
        f"Command: `{run['command']}`",
        "",
        *table([*header, "wall time (s)"], "llllllll", rows),
        "",
        f"Both scenarios together: {summary['total_wall_time_s']:.1f} s.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        *(f"![{mode}](visualize_{mode}.png)" for mode in summary["scenarios"]),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- image captioning


def bleu_table(cells: dict[str, dict[str, Any]], anchors: Sequence[tuple[str, float]] = ()) -> list[str]:
    """Test BLEU of each captioner (results.json's block per cell), with the decoding chosen on dev,
    and optionally the BLEU-4 of published systems beside them."""
    # Results with a seed study (make seeds) add the mean and sample std of test BLEU-4 over the seeds.
    seeds = any("seed_study" in res for res in cells.values())
    rows = []
    for c, res in cells.items():
        b = res["test_bleu"]
        rows.append(
            [CAPTIONER_NAMES[c], res["decoding_chosen_on_dev"], f"{b['bleu1']:.3f}", f"{b['bleu2']:.3f}"]
            + [f"{b['bleu3']:.3f}", f"**{b['bleu4']:.3f}**"]
            + ([bleu_mean_std(res.get("seed_study"))] if seeds else [])
            + [f"{res['epochs_run']} ({res['best_checkpoint_epoch'] + 1})", f"{res['train_seconds'] / 60:.1f} min"]
        )
    blank = [""] if seeds else []
    rows += [[f"*anchor:* {name}", "", "", "", "", f"{value:.3f}", *blank, "", ""] for name, value in anchors]
    header = ["model", "decoding", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]
    header += ["BLEU-4, mean ± std over seeds"] if seeds else []
    return table([*header, "epochs (best)", "training time"], "llrrrr" + ("r" if seeds else "") + "rr", rows)


def bleu_mean_std(study: dict[str, Any] | None) -> str:
    """A captioner's seed study as "**0.195 ± 0.004** (n = 3)"."""
    if not study:
        return "(not run yet: `make seeds`)"
    return f"**{study['mean']:.3f} ± {study['std']:.3f}** (n = {len(study['seeds'])})"


def _dev_table(results: dict[str, Any], cells: list[str]) -> list[str]:
    decodings = list(results[cells[0]]["dev"])
    rows = [
        [CAPTIONER_NAMES[k]]
        + [f"{results[k]['dev'][d]['bleu4']:.3f}" if d in results[k]["dev"] else "" for d in decodings]
        for k in cells
    ]
    return table(["model", *decodings], "l" * (len(decodings) + 1), rows)


def _trunk_note(record: dict[str, Any]) -> str:
    """ ", on customops layers" or ", on torch.nn layers" from a record's "trunk" (nothing when it has none)."""
    trunk = record.get("trunk")
    return "" if trunk is None else ", on customops layers" if trunk == "customops" else ", on torch.nn layers"


def _feature_line(first: dict[str, Any], cell: str) -> str:
    fe = first["feature_extraction"]
    total = sum(v["seconds"] for v in fe.values())
    pooled = "the last feature map's grid of positions (float16)" if cell == "transformer" else "global-average pooled"
    train = fe["train"]
    return (
        f"Image features: {train['backbone']} ({train['weights']} weights{_trunk_note(train)}), {pooled}, "
        f"{sum(v['num_images'] for v in fe.values())} images extracted once in {total / 60:.1f} min on "
        f"{train['device']} with {train['threads']} threads ("
        + ", ".join(f"{s}: {v['seconds']:.0f} s" for s, v in fe.items())
        + "), then read from the cache. Timings are wall-clock on a machine whose cores other jobs may share."
    )


def captioning_readme(results: dict[str, Any]) -> str:
    """A captioning run folder's README.md: its results.json's headline numbers, figures, samples."""
    lines = [
        "# Image captioning on Flickr8k with customops layers: RNN, LSTM and attention (Transformer)",
        "",
        "Written from `results.json` (every number below is from that file).",
        "Corpus BLEU (torchmetrics `BLEUScore`) on the 1,000 test images against all five references,",
        "lower-cased and without punctuation on both sides; the decoding (greedy or beam) is chosen on dev.",
        "",
    ]
    cells = [k for k in CAPTIONER_NAMES if k in results]
    if cells:
        first = results[cells[0]]
        lines += [
            *bleu_table({k: results[k] for k in cells}),
            "",
            "Every decoding compared on dev (BLEU-4); the best is the one run on test:",
            "",
            *_dev_table(results, cells),
            "",
            _feature_line(first, cells[0]),
            f"Vocabulary: {first['vocab_size']} words; {first['train_pairs']} training (image, caption) pairs.",
            "",
        ]
    for k in CAPTIONER_NAMES:
        if f"overfit_{k}" in results:
            o = results[f"overfit_{k}"]
            lines.append(
                f"Overfit check ({CAPTIONER_NAMES[k]}): {o['captions']} training captions, loss {o['final_loss']:.3f} "
                f"after {o['steps']} steps ({o['seconds']:.0f} s), {o['exact_reproductions']}/{o['captions']} "
                f"reproduced exactly ([overfit_{k}.md](overfit_{k}.md))."
            )
    for k in cells:
        lines += [
            "",
            f"## {CAPTIONER_NAMES[k]}",
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
    return "\n".join(lines) + "\n"


def caption_samples(title: str, samples: list[tuple[str, str, list[str]]]) -> str:
    """A section of generated captions: (image name, generated caption, reference captions) each."""
    lines = [f"## {title}", ""]
    for name, caption, references in samples:
        lines += [f"**{name}**", "", f"- generated: *{caption}*"]
        lines += [f"- reference {k + 1}: {r}" for k, r in enumerate(references)]
        lines.append("")
    return "\n".join(lines)


def overfit_report(cell: str, result: dict[str, Any], rows: list[tuple[str, str, str]]) -> str:
    """``overfit_<cell>.md``: the final loss, how many captions come back exactly, the first few."""
    n = result["captions"]
    lines = [
        f"# Overfitting {n} training captions ({cell})",
        "",
        f"Final training loss {result['final_loss']:.4f} (mean of the last epoch) after {result['steps']} "
        f"full-batch steps ({result['seconds']:.1f} s); greedy decoding reproduces "
        f"{result['exact_reproductions']}/{n} captions exactly "
        "(the target is the caption cut to the vocabulary and --max-words, rare words as <UNK>).",
        "",
        *table(["image", "target", "generated"], "lll", rows),
    ]
    return "\n".join(lines) + "\n"
