"""The README's results section, written from a folder of published results (``reports/``).

Every number in it comes from a JSON file under that folder; the links point into it, relative to
the README beside it. ``write_results_section`` replaces what stands between the README's
``<!-- results:begin -->`` and ``<!-- results:end -->`` lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_modules.reporting.reports import CAPTIONER_NAMES, CAPTIONER_TWINS, bleu_table, describe_step_net
from lightning_modules.reporting.tables import pct, table
from lightning_modules.runs.errors import RunError
from lightning_modules.runs.storage import read_json, write_text

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# The classic results the README sets ours beside (test accuracy on MNIST, validation on ants/bees,
# BLEU-4 on Flickr8k), with where each comes from.
ANCHORS = {
    "softmax": [
        ("2-layer MLP, 800 hidden units (LeCun et al.'s table)", 98.4),
        ("same, with elastic distortions (Simard et al., 2003)", 99.3),
    ],
    "cnn": [
        ("LeNet-5 (LeCun et al., 1998)", 99.05),
        ("Keras mnist_cnn example", 99.25),
        ("CNN with elastic distortions (Simard et al., 2003)", 99.6),
    ],
    "finetune": [("PyTorch transfer-learning tutorial, ResNet-18", 93.5)],
    "freeze": [("PyTorch transfer-learning tutorial, ResNet-18", 94.8)],
    "captioning": [
        ("NeuralTalk (Karpathy and Fei-Fei)", 0.160),
        ("Show, Attend and Tell, soft attention", 0.195),
        ("Show, Attend and Tell, hard attention", 0.213),
    ],
}
DIGIT_NETS = {"softmax": "two-layer net (fc-relu-fc)", "cnn": "CNN (conv-relu-pool-fc-relu-fc)"}


def mean_std(block: dict[str, Any] | None) -> str:
    if not block:
        return "(not run yet: `make seeds`)"
    return f"**{100 * block['mean']:.2f}% ± {100 * block['std']:.2f}** (n = {len(block['seeds'])})"


def _chosen_size(spec: dict[str, Any]) -> str:
    if "filters" not in spec:
        return f"{spec['hidden']} hidden"
    return f"{spec['filters']} filters {spec['kernel_size']}x{spec['kernel_size']}, {spec['hidden']} hidden"


def _anchors(key: str) -> str:
    return "; ".join(f"{a} {v}%" for a, v in ANCHORS[key])


def _err(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0e}"


def check_section(check: dict[str, Any]) -> list[str]:
    """The op check's compatibility table (``python -m customops.check --json``).

    Tables written before the float16/bfloat16 parity column existed render without it.
    """
    rows = check["rows"]
    low = any("err16" in r for r in rows)
    return [
        "### The ops are correct",
        "",
        "`python -m customops.check` puts every op through the same checks and prints one compatibility "
        f"table ([reports/benchmarks/check_cpu.json](reports/benchmarks/check_cpu.json), {check['device']}, "
        f"autocast {', '.join(check['autocast'])}, compile backend {check['compile_backend']}):",
        "",
        *table(
            ["op", "gradcheck", "gradgradcheck", "batched grad", "error vs torch, f64 / f32"]
            + (["f16 / bf16"] if low else [])
            + ["torch.func", "autocast", "torch.compile"],
            "l" * (9 if low else 8),
            (
                [
                    f"`{r['op']}`",
                    r["gradcheck"],
                    r["gradgrad"],
                    r["batched"],
                    f"{_err(r['err64'])} / {_err(r['err32'])}",
                ]
                + ([f"{_err(r.get('err16'))} / {_err(r.get('errbf16'))}"] if low else [])
                + [r["func"], r["autocast"], r["compile"]]
                for r in rows
            ),
        ),
        "",
    ]


def bench_section(bench: dict[str, Any]) -> list[str]:
    """Each op against its native twin, eager and compiled (``python -m customops.bench --json``)."""
    compiled = "compiled_ratio" in bench["rows"][0]
    header = ["op", "custom ms", "native ms", "eager ratio"]
    if compiled:
        header += ["compiled custom ms", "compiled native ms", "compiled ratio"]

    def cells(r: dict[str, Any]) -> list[str]:
        out = [r["name"], f"{r['custom_ms']:.3f}", f"{r['native_ms']:.3f}", f"{r['ratio']:.2f}x"]
        if compiled:
            out += [f"{r['compiled_custom_ms']:.3f}", f"{r['compiled_native_ms']:.3f}", f"{r['compiled_ratio']:.2f}x"]
        return out

    geomean = ["**geometric mean**", "", "", f"**{bench['geomean']:.2f}x**"]
    if compiled:
        geomean += ["", "", f"**{bench['compiled_geomean']:.2f}x**"]
    return [
        "### Speed against the native twins (forward + backward)",
        "",
        "`python -m customops.bench` times each op and its native twin in the same process, interleaved "
        f"([reports/benchmarks/ops_cpu.json](reports/benchmarks/ops_cpu.json), {bench['device']}, "
        f"{bench['threads']} threads); ratio = custom / native, eager and with both sides under "
        "`torch.compile` (inductor):",
        "",
        *table(header, "lrrr" + ("rrr" if compiled else ""), [*map(cells, bench["rows"]), geomean]),
        "",
    ]


def _digits_recipe(cfg: dict[str, Any]) -> str:
    return (
        f"Recipe: AdamW, {cfg['scheduler']} schedule, peak lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
        f"batch {cfg['batch_size']}; every training batch distorted on the fly (shifts of up to "
        f"{cfg['max_shift']} px, rotations up to {cfg.get('max_rotation', 0)} degrees, scaling by up to "
        f"{cfg.get('max_scale', 0)}, elastic field alpha {cfg.get('elastic_alpha', 0)} px, sigma "
        f"{cfg.get('elastic_sigma', 0)} px)."
    )


VIEWS_IN_WORDS = (
    "the final model is scored on the validation digits plainly and by the mean of its softmax over the image "
    "and its four one-pixel shifts (zero-filled); the better way (ties: plain) scores the test digits, once"
)


def _tta_cell(block: dict[str, Any] | None) -> str:
    if not block:
        return "plain"
    if block["mode"] == "off":
        return "plain (TTA off)"
    return (
        f"{'TTA' if block['chosen'] == 'tta' else 'plain'} (val {pct(block['val_acc_plain'])} plain, "
        f"{pct(block['val_acc_tta'])} TTA)"
    )


def digits_section(digits: dict[str, dict[str, Any]], speed: dict[str, Any] | None) -> list[str]:
    """MNIST: the chosen sizes, test accuracy per seed and its mean, the recipe, the training speed."""
    # Results that record their test-time augmentation say how the test digits were scored.
    tta = any("tta" in res for res in digits.values())
    rows = []
    for m, res in digits.items():
        spec = res["chosen"]["spec"]
        rows.append(
            [DIGIT_NETS[m], _chosen_size(spec), res["final"]["epochs"], pct(res["test_acc"])]
            + ([_tta_cell(res.get("tta"))] if tta else [])
            + [mean_std(res.get("seed_study")), _anchors(m)]
        )
    header = ["network", "chosen", "epochs", "test acc, seed 0"]
    header += ["test scored (chosen on val)"] if tta else []
    header += ["test acc, mean ± std over seeds", "anchors"]
    out = [
        "### MNIST ([softmax net](reports/digit_classification/softmax/sweep.md), "
        "[CNN](reports/digit_classification/cnn/sweep.md))",
        "",
        "Sizes chosen on the 5,000 validation digits by successive halving; the chosen size retrained from "
        "scratch with the full recipe; the 10,000 test digits scored once per run. The seed study "
        "retrains the chosen size with seeds 1 and 2 (seed 0 is the publishing run); mean ± sample "
        "standard deviation:",
        "",
        *table(header, "llrr" + ("l" if tta else "") + "rl", rows),
        "",
        _digits_recipe(digits["cnn"]["config"]),
    ]
    if tta:
        out += ["", f"Test-time augmentation: {VIEWS_IN_WORDS}."]
    if digits["softmax"].get("seed_study"):
        out.append("")
        for m, res in digits.items():
            study = res["seed_study"]
            scored = study.get("tta_chosen") or [None] * len(study["test_acc"])
            vals = ", ".join(pct(v) + (" (TTA)" if how == "tta" else "") for v, how in zip(study["test_acc"], scored))
            out.append(
                f"- {DIGIT_NETS[m].split(' (')[0]}, test accuracy per seed {res['seed_study']['seeds']}: {vals}."
            )
        out.append("")
    out += speed_lines(speed)
    return [
        *out,
        "",
        *table(
            ["", "softmax net", "CNN"],
            "lll",
            [
                ["learning curves"]
                + [f"![](reports/digit_classification/{m}/learning_curves.png)" for m in ("softmax", "cnn")],
                ["test confusion matrix"]
                + [f"![](reports/digit_classification/{m}/confusion_matrix.png)" for m in ("softmax", "cnn")],
            ],
        ),
        "",
    ]


def speed_lines(speed: dict[str, Any] | None) -> list[str]:
    """The training benchmark: the MNIST nets' epoch ratios in a sentence and, where the benchmark timed
    them, the captioners' training-step ratios (eager and compiled) in a table."""
    rows = (speed or {}).get("results", [])
    out = []
    parts = [f"{x['model']} {x['ratio']:.2f}x" for x in rows if "ratio" in x]
    if parts:
        out.append(
            f"One training epoch of each customops network against its identical torch.nn twin "
            f"(median of {speed['repeats']} interleaved epochs, [benchmark]"
            f"(reports/digit_classification/benchmark/benchmark.md)): {', '.join(parts)}."
        )
    steps = [x for x in rows if "eager" in x]
    if steps:
        compiled = any(x.get("compiled") for x in steps)
        out += [
            "",
            f"A training step of each captioner (and of MobileNetV2 fine-tuning) against its torch.nn twin (the same "
            f"sizes, initial weights and batches; on {speed['steps']['device']}; median of {speed['repeats']} "
            f"interleaved repeats, warm-up" + (" and compilation" if compiled else "") + " excluded), custom / torch:",
            "",
            *table(
                ["network", "torch.nn twin", "eager", *(["compiled (both)"] if compiled else [])],
                "llr" + ("r" if compiled else ""),
                [
                    [describe_step_net(x), f"`{CAPTIONER_TWINS[x['model']]}`", f"{x['eager']['ratio']:.2f}x"]
                    + ([f"{x['compiled']['ratio']:.2f}x" if x.get("compiled") else "not run"] if compiled else [])
                    for x in steps
                ],
            ),
        ]
    return out


def _trunk_words(transfer: dict[str, Any]) -> str:
    """How the trunk ran, from results.json's "trunk" (nothing for a run that does not record it)."""
    trunk = transfer.get("trunk")
    if trunk is None:
        return ""
    return " (its layers converted to customops)" if trunk == "customops" else " (torch.nn's own layers)"


def transfer_section(transfer: dict[str, Any]) -> list[str]:
    """Ants vs bees: each scenario's best validation accuracy, per seed and its mean."""
    study = transfer.get("seed_study")
    rows = []
    for mode, res in transfer["scenarios"].items():
        block = {"seeds": study["seeds"], **study[mode]} if study else None
        best = f"{pct(res['best_val_acc'])} ({res['best_val_correct']}, epoch {res['best_epoch']})"
        rows.append([mode, best, mean_std(block), _anchors(mode)])
    out = [
        "### Transfer learning, ants vs bees ([report](reports/transfer_learning/results.md))",
        "",
        f"ImageNet-pretrained {transfer['backbone']}{_trunk_words(transfer)} with a new customops `Linear` head "
        "and the customops "
        f"softmax loss; {transfer['train_images']} training and {transfer['val_images']} validation images; "
        "the best validation epoch of each run, as the tutorial reports (there is no test split). "
        "Fine-tuning starts from the freeze scenario's best head (linear probe, then fine-tune).",
        "",
        *table(["scenario", "best val acc, seed 0 (epoch)", "mean ± std over seeds", "anchor"], "lrrl", rows),
    ]
    if study:
        out.append("")
        for mode in transfer["scenarios"]:
            out.append(
                f"- {mode}, best val accuracy per seed {study['seeds']}: "
                f"{', '.join(pct(v) for v in study[mode]['val_acc'])}."
            )
    return [*out, "", "![transfer learning curves](reports/transfer_learning/learning_curves.png)", ""]


def captioning_section(cells: dict[str, dict[str, Any]], overfit: dict[str, dict[str, Any]]) -> list[str]:
    """Flickr8k: BLEU of each captioner beside the anchors, the feature pass, the overfit check."""
    out = [
        "### Image captioning on Flickr8k ([RNN](reports/image_captioning/rnn/README.md), "
        "[LSTM](reports/image_captioning/lstm/README.md), "
        "[attention](reports/image_captioning/transformer/README.md))",
        "",
        "Corpus BLEU on the 1,000 test images against all five references, with the decoding chosen on dev"
        + (
            "; the seed study reruns each captioner's recipe with seeds 1 and 2 (seed 0 is the publishing run), "
            "each a complete run choosing its own decoding on dev and scoring test once:"
            if any(res.get("seed_study") for res in cells.values())
            else ":"
        ),
        "",
        *bleu_table(cells, anchors=ANCHORS["captioning"]),
    ]
    studied = {c: res["seed_study"] for c, res in cells.items() if res.get("seed_study")}
    if studied:
        out.append("")
        for c, study in studied.items():
            per_seed = ", ".join(
                f"{t:.3f} ({how}, dev {d:.3f})"
                for t, d, how in zip(study["test_bleu4"], study["dev_bleu4"], study["decoding"], strict=True)
            )
            out.append(
                f"- {CAPTIONER_NAMES[c]}, test BLEU-4 per seed {study['seeds']} (decoding chosen on dev, its dev "
                f"BLEU-4): {per_seed}; dev mean {study['dev']['mean']:.3f} ± {study['dev']['std']:.3f}."
            )
    # Each split's metadata is that of the pass that built its cache (the first run to need it).
    fe = next(iter(cells.values()))["feature_extraction"]
    if fe:
        n = sum(v["num_images"] for v in fe.values())
        s = sum(v["seconds"] for v in fe.values())
        out += [
            "",
            f"MobileNetV2 features of {n:,} images extracted in {s / 60:.1f} min ({n / s:.0f} images/s, "
            f"{next(iter(fe.values()))['threads']} threads), pooled for the RNN/LSTM and as the 7x7 grid "
            "for the attention captioner, from one pass; later runs read the cache.",
        ]
    over = [
        f"{CAPTIONER_NAMES[c]}: loss {o['final_loss']:.3f} after {o['steps']} steps, "
        f"{o['exact_reproductions']}/{o['captions']} captions reproduced exactly"
        for c, o in overfit.items()
    ]
    if over:
        out += ["", "Overfit check (100 training captions): " + "; ".join(over) + "."]
    return [
        *out,
        "",
        "![attention captioner's learning curves]"
        "(reports/image_captioning/transformer/learning_curves_transformer.png)",
        "",
    ]


def timings_section(timings: dict[str, Any], seeds_timings: dict[str, Any] | None) -> list[str]:
    """Each step of the publishing run, its minutes and command."""
    out = [
        "### Where the time goes",
        "",
        f"`make report` as one command ([reports/timings.json](reports/timings.json), commit "
        f"`{timings['commit'][:12]}`, {timings['machine']['cpus']} CPUs): "
        f"**{timings.get('wall_s', timings.get('total_s', 0)) / 60:.1f} min** in all.",
        "",
        *table(
            ["step", "minutes", "command"],
            "lrl",
            ([s["name"], f"{s['seconds'] / 60:.1f}", f"`{s['command']}`"] for s in timings["steps"]),
        ),
    ]
    if seeds_timings:
        out += [
            "",
            f"`make seeds` ([reports/seed_study/timings.json](reports/seed_study/timings.json)): "
            f"{seeds_timings.get('wall_s', 0) / 60:.1f} min for "
            f"{len(seeds_timings['steps'])} runs.",
        ]
    return [*out, ""]


def results_section(reports: str | Path) -> str:
    """The README's results section, from the JSON files under `reports` (sections whose files are
    missing are left out)."""
    r = Path(reports)
    out: list[str] = []
    if check := read_json(r / "benchmarks" / "check_cpu.json"):
        out += check_section(check)
    if bench := read_json(r / "benchmarks" / "ops_cpu.json"):
        out += bench_section(bench)
    digits = {m: read_json(r / "digit_classification" / m / "results.json") for m in ("softmax", "cnn")}
    if all(digits.values()):
        out += digits_section(digits, read_json(r / "digit_classification" / "benchmark" / "benchmark.json"))
    if transfer := read_json(r / "transfer_learning" / "results.json"):
        out += transfer_section(transfer)
    cells = {c: read_json(r / "image_captioning" / c / "results.json") for c in CAPTIONER_NAMES}
    cells = {c: v[c] for c, v in cells.items() if v and c in v}
    if cells:
        overfit = {
            c: read_json(r / "image_captioning" / f"overfit_{c}" / "results.json") for c in ("rnn", "transformer")
        }
        overfit = {c: o[f"overfit_{c}"] for c, o in overfit.items() if o and f"overfit_{c}" in o}
        out += captioning_section(cells, overfit)
    if timings := read_json(r / "timings.json"):
        out += timings_section(timings, read_json(r / "seed_study" / "timings.json"))
    return "\n".join(out)


def write_results_section(readme: str | Path, reports: str | Path, written_by: str) -> Path:
    """Replace the README's results section (between BEGIN and END) with ``results_section(reports)``."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise RunError(f"{readme} has no {BEGIN} ... {END} section to write the results into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = f"\n<!-- Written by {written_by} from reports/; edits here are overwritten. -->\n\n"
    return write_text(readme, head + BEGIN + body + results_section(reports) + "\n" + END + tail)
