"""The publishing run: every check, benchmark and training whose numbers the README shows.

    python scripts/report.py              # make report: every step, then the README's results
    python scripts/report.py --seeds      # make seeds: the seed study (after make report)
    python scripts/report.py --list       # the steps and their commands, nothing run
    python scripts/report.py --only transfer captioning_rnn   # some steps (timings merged)
    python scripts/report.py --summary    # only rewrite the README's results from reports/

Each step is a separate process (the same commands one can type), run from the repository
root into ``reports/``; each publishes its folder all at once when it succeeds. After each step
one line gives its wall time, and ``reports/timings.json`` (``reports/seed_study/timings.json``
for the seed study) is rewritten with every step so far. The first step that fails ends the
run with its exit status; the steps before it stay published.

The seed study retrains the sizes the publishing run chose (read from its results.json), with
the same recipe and seeds 1 and 2, each a complete run (its own initialisation, batch order and
augmentation; the checkpoint chosen on validation; MNIST's test digits scored once), into
``reports/seed_study/``. Seed 0 is the publishing run itself. It then adds a ``seed_study``
block (seeds, values, mean, sample standard deviation) to each published results.json.

The README's results section (between its ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines) is then written from the JSON files under ``reports/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightning_modules import runs

ROOT = Path(__file__).resolve().parents[2]
REPORTS = Path("reports")
SEEDS = (0, 1, 2)

# (name, command after the Python interpreter). The order is the order they run in.
STEPS: list[tuple[str, list[str]]] = [
    ("check", ["-m", "customops.check", "--json", "reports/benchmarks/check_cpu.json"]),
    ("bench", ["-m", "customops.bench", "--json", "reports/benchmarks/ops_cpu.json"]),
    (
        "digits_softmax",
        [
            "scripts/digit_classification.py",
            "--model",
            "softmax",
            "--no-progress",
            "--out",
            "reports/digit_classification/softmax",
        ],
    ),
    (
        "digits_cnn",
        [
            "scripts/digit_classification.py",
            "--model",
            "cnn",
            "--no-progress",
            "--out",
            "reports/digit_classification/cnn",
        ],
    ),
    (
        "training_speed",
        [
            "scripts/benchmark_training.py",
            "--repeats",
            "2",
            "--no-progress",
            "--out",
            "reports/digit_classification/benchmark",
        ],
    ),
    ("transfer", ["scripts/transfer_learning.py", "--no-progress", "--out", "reports/transfer_learning"]),
    (
        "captioning_overfit_rnn",
        [
            "scripts/image_captioning.py",
            "--overfit",
            "--cell",
            "rnn",
            "--no-progress",
            "--out",
            "reports/image_captioning/overfit_rnn",
        ],
    ),
    (
        "captioning_rnn",
        [
            "scripts/image_captioning.py",
            "--cell",
            "rnn",
            "--precision",
            "bf16-mixed",
            "--no-progress",
            "--out",
            "reports/image_captioning/rnn",
        ],
    ),
    (
        "captioning_lstm",
        [
            "scripts/image_captioning.py",
            "--cell",
            "lstm",
            "--precision",
            "bf16-mixed",
            "--no-progress",
            "--out",
            "reports/image_captioning/lstm",
        ],
    ),
    (
        "captioning_overfit_transformer",
        [
            "scripts/image_captioning.py",
            "--overfit",
            "--cell",
            "transformer",
            "--no-progress",
            "--out",
            "reports/image_captioning/overfit_transformer",
        ],
    ),
    (
        "captioning_transformer",
        [
            "scripts/image_captioning.py",
            "--cell",
            "transformer",
            "--precision",
            "bf16-mixed",
            "--no-progress",
            "--out",
            "reports/image_captioning/transformer",
        ],
    ),
]

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


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, obj)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_steps(steps: list[tuple[str, list[str]]], timings_file: Path, title: str, merge: bool) -> int:
    """Run each step as its own process; one line and an updated timings file after each."""
    record: dict[str, Any] = {
        "run": title,
        "commit": runs.git_commit() or "unknown",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "steps": [],
    }
    old = read_json(timings_file) if merge else None
    if old:  # --only: the other steps keep their last timing
        record["steps"] = [s for s in old.get("steps", []) if s["name"] not in {n for n, _ in steps}]
    start = time.perf_counter()
    status = 0
    for i, (name, command) in enumerate(steps, 1):
        argv = [sys.executable, *command]
        print(f"[report] {i}/{len(steps)} {name}: {shlex.join(['python', *command])}", flush=True)
        t0 = time.perf_counter()
        status = subprocess.run(argv, cwd=ROOT).returncode
        seconds = time.perf_counter() - t0
        record["steps"].append(
            {
                "name": name,
                "command": shlex.join(["python", *command]),
                "seconds": round(seconds, 1),
                "status": "ok" if status == 0 else f"failed ({status})",
            }
        )
        record["total_s"] = round(sum(s["seconds"] for s in record["steps"]), 1)
        record["wall_s"] = round(time.perf_counter() - start, 1)
        write_json(timings_file, record)
        print(
            f"[report] {i}/{len(steps)} {name}: {seconds / 60:.1f} min, "
            f"{'ok' if status == 0 else f'FAILED (exit status {status})'}; {record['wall_s'] / 60:.1f} min so far",
            flush=True,
        )
        if status != 0:
            print(
                f"[report] stopped at {name}; the steps before it are published, timings in {timings_file}", flush=True
            )
            return status
    summary = ", ".join(f"{s['name']} {s['seconds'] / 60:.1f}" for s in record["steps"])
    print(f"[report] done in {record['wall_s'] / 60:.1f} min (minutes per step: {summary})", flush=True)
    return status


# --------------------------------------------------------------------------- seed study


def seed_steps(seeds: list[int]) -> list[tuple[str, list[str]]]:
    """The seed study's runs: the published runs' recipes with other seeds (seed 0 is the publishing run)."""
    steps = []
    for model in ("softmax", "cnn"):
        published = read_json(ROOT / REPORTS / "digit_classification" / model / "results.json")
        if published is None:
            raise SystemExit(
                f"report --seeds: reports/digit_classification/{model}/results.json is missing: run make report first"
            )
        cfg, spec = published["config"], published["chosen"]["spec"]
        recipe = [
            "--model",
            model,
            "--hidden",
            str(spec["hidden"]),
            "--final-epochs",
            str(cfg["final_epochs"]),
            "--lr",
            str(cfg["lr"]),
            "--weight-decay",
            str(cfg["weight_decay"]),
            "--optimizer",
            cfg["optimizer"],
            "--scheduler",
            cfg["scheduler"],
            "--max-shift",
            str(cfg["max_shift"]),
            "--max-rotation",
            str(cfg["max_rotation"]),
            "--max-scale",
            str(cfg["max_scale"]),
            "--elastic-alpha",
            str(cfg["elastic_alpha"]),
            "--elastic-sigma",
            str(cfg["elastic_sigma"]),
            "--batch-size",
            str(cfg["batch_size"]),
            "--val-size",
            str(cfg["val_size"]),
            "--impl",
            cfg["impl"],
        ]
        if model == "cnn":
            recipe += ["--filters", str(spec["filters"]), "--filter-sizes", str(spec["kernel_size"])]
        for seed in seeds:
            if seed != published["config"]["seed"]:
                steps.append(
                    (
                        f"seed_{model}_{seed}",
                        [
                            "scripts/digit_classification.py",
                            *recipe,
                            "--seed",
                            str(seed),
                            "--no-progress",
                            "--out",
                            f"reports/seed_study/{model}/seed{seed}",
                        ],
                    )
                )
    transfer = read_json(ROOT / REPORTS / "transfer_learning" / "results.json")
    if transfer is None:
        raise SystemExit("report --seeds: reports/transfer_learning/results.json is missing: run make report first")
    for seed in seeds:
        if seed != transfer["seed"]:
            steps.append(
                (
                    f"seed_transfer_{seed}",
                    [
                        "scripts/transfer_learning.py",
                        "--seed",
                        str(seed),
                        "--no-progress",
                        "--out",
                        f"reports/seed_study/transfer_learning/seed{seed}",
                    ],
                )
            )
    return steps


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _seed_runs(path: Path, published_seed: int, folder: str, seeds: list[int]) -> list[tuple[dict, str]]:
    """(results, folder) of each seed: the published run (results.json at `path`) for its own seed, the
    seed study's run in ``<folder>/seed<k>`` for the others."""
    found = []
    for seed in seeds:
        if seed == published_seed:
            found.append((read_json(path), str(path.parent.relative_to(ROOT))))
            continue
        run = read_json(ROOT / folder / f"seed{seed}" / "results.json")
        if run is None:
            raise SystemExit(f"report --seeds: {folder}/seed{seed}/results.json is missing")
        found.append((run, f"{folder}/seed{seed}"))
    return found


def seed_study(seeds: list[int]) -> None:
    """Add the ``seed_study`` blocks to the published results.json files, from the seed runs."""
    for model in ("softmax", "cnn"):
        path = ROOT / REPORTS / "digit_classification" / model / "results.json"
        published = read_json(path)
        spec = published["chosen"]["spec"]
        found = _seed_runs(path, published["config"]["seed"], f"reports/seed_study/{model}", seeds)
        for run, folder in found:
            if run["final"]["spec"] != spec:
                raise SystemExit(
                    f"report --seeds: {folder} trained {run['final']['spec']}, not the published "
                    f"choice {spec}: run make seeds again"
                )
        values = [run["test_acc"] for run, _ in found]
        published["seed_study"] = {
            "seeds": list(seeds),
            "test_acc": values,
            **_stats(values),
            "runs": [folder for _, folder in found],
            "spec": spec,
        }
        write_json(path, published)
    path = ROOT / REPORTS / "transfer_learning" / "results.json"
    published = read_json(path)
    found = _seed_runs(path, published["seed"], "reports/seed_study/transfer_learning", seeds)
    block: dict[str, Any] = {"seeds": list(seeds), "runs": [folder for _, folder in found]}
    for mode in published["scenarios"]:
        values = [run["scenarios"][mode]["best_val_acc"] for run, _ in found]
        block[mode] = {"val_acc": values, **_stats(values)}
    published["seed_study"] = block
    write_json(path, published)


# --------------------------------------------------------------------------- the README's results


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def mean_std(block: dict[str, Any] | None) -> str:
    if not block:
        return "(not run yet: `make seeds`)"
    return f"**{100 * block['mean']:.2f}% ± {100 * block['std']:.2f}** (n = {len(block['seeds'])})"


def results_markdown() -> str:
    """The README's results section, from the JSON files under reports/."""
    r = ROOT / REPORTS
    out: list[str] = []
    timings = read_json(r / "timings.json")
    seeds_timings = read_json(r / "seed_study" / "timings.json")

    check = read_json(r / "benchmarks" / "check_cpu.json")
    if check:
        out += [
            "### The ops are correct",
            "",
            "`python -m customops.check` puts every op through the same checks and prints one compatibility "
            f"table ([reports/benchmarks/check_cpu.json](reports/benchmarks/check_cpu.json), {check['device']}, "
            f"autocast {', '.join(check['autocast'])}, compile backend {check['compile_backend']}):",
            "",
            "| op | gradcheck | gradgradcheck | batched grad | error vs torch, f64 / f32 | torch.func | autocast | "
            "torch.compile |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in check["rows"]:
            out.append(
                f"| `{row['op']}` | {row['gradcheck']} | {row['gradgrad']} | {row['batched']} | "
                f"{row['err64']:.0e} / {row['err32']:.0e} | {row['func']} | {row['autocast']} | {row['compile']} |"
            )
        out.append("")
    bench = read_json(r / "benchmarks" / "ops_cpu.json")
    if bench:
        compiled = "compiled_ratio" in bench["rows"][0]
        out += [
            "### Speed against the native twins (forward + backward)",
            "",
            "`python -m customops.bench` times each op and its native twin in the same process, interleaved "
            f"([reports/benchmarks/ops_cpu.json](reports/benchmarks/ops_cpu.json), {bench['device']}, "
            f"{bench['threads']} threads); ratio = custom / native, eager and with both sides under "
            "`torch.compile` (inductor):",
            "",
            "| op | custom ms | native ms | eager ratio |"
            + (" compiled custom ms | compiled native ms | compiled ratio |" if compiled else ""),
            "|---|---:|---:|---:|" + ("---:|---:|---:|" if compiled else ""),
        ]
        for row in bench["rows"]:
            line = f"| {row['name']} | {row['custom_ms']:.3f} | {row['native_ms']:.3f} | {row['ratio']:.2f}x |"
            if compiled:
                line += (
                    f" {row['compiled_custom_ms']:.3f} | {row['compiled_native_ms']:.3f} | "
                    f"{row['compiled_ratio']:.2f}x |"
                )
            out.append(line)
        out.append(
            f"| **geometric mean** | | | **{bench['geomean']:.2f}x** |"
            + (f" | | **{bench['compiled_geomean']:.2f}x** |" if compiled else "")
        )
        out.append("")

    digits = {m: read_json(r / "digit_classification" / m / "results.json") for m in ("softmax", "cnn")}
    if all(digits.values()):
        names = {"softmax": "two-layer net (fc-relu-fc)", "cnn": "CNN (conv-relu-pool-fc-relu-fc)"}
        out += [
            "### MNIST ([softmax net](reports/digit_classification/softmax/sweep.md), "
            "[CNN](reports/digit_classification/cnn/sweep.md))",
            "",
            "Sizes chosen on the 5,000 validation digits by successive halving; the chosen size retrained from "
            "scratch with the full recipe; the 10,000 test digits scored once per run. The seed study "
            "retrains the chosen size with seeds 1 and 2 (seed 0 is the publishing run); mean ± sample "
            "standard deviation:",
            "",
            "| network | chosen | epochs | test acc, seed 0 | test acc, mean ± std over seeds | anchors |",
            "|---|---|---:|---:|---:|---|",
        ]
        for m, res in digits.items():
            spec = res["chosen"]["spec"]
            size = (
                f"{spec['hidden']} hidden"
                if m == "softmax"
                else f"{spec['filters']} filters {spec['kernel_size']}x{spec['kernel_size']}, {spec['hidden']} hidden"
            )
            anchors = "; ".join(f"{a} {v}%" for a, v in ANCHORS[m])
            out.append(
                f"| {names[m]} | {size} | {res['final']['epochs']} | {pct(res['test_acc'])} | "
                f"{mean_std(res.get('seed_study'))} | {anchors} |"
            )
        cfg = digits["cnn"]["config"]
        out += [
            "",
            f"Recipe: AdamW, {cfg['scheduler']} schedule, peak lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
            f"batch {cfg['batch_size']}; every training batch distorted on the fly (shifts of up to "
            f"{cfg['max_shift']} px, rotations up to {cfg.get('max_rotation', 0)} degrees, scaling by up to "
            f"{cfg.get('max_scale', 0)}, elastic field alpha {cfg.get('elastic_alpha', 0)} px, sigma "
            f"{cfg.get('elastic_sigma', 0)} px).",
        ]
        if digits["softmax"].get("seed_study"):
            out.append("")
            for m, res in digits.items():
                vals = ", ".join(pct(v) for v in res["seed_study"]["test_acc"])
                out.append(f"- {names[m].split(' (')[0]}, test accuracy per seed {res['seed_study']['seeds']}: {vals}.")
            out.append("")
        speed = read_json(r / "digit_classification" / "benchmark" / "benchmark.json")
        if speed:
            parts = [f"{x['model']} {x['ratio']:.2f}x" for x in speed["results"] if "ratio" in x]
            if parts:
                out.append(
                    f"One training epoch of each customops network against its identical torch.nn twin "
                    f"(median of {speed['repeats']} interleaved epochs, [benchmark]"
                    f"(reports/digit_classification/benchmark/benchmark.md)): {', '.join(parts)}."
                )
        out += [
            "",
            "| | softmax net | CNN |",
            "|---|---|---|",
            "| learning curves | ![](reports/digit_classification/softmax/learning_curves.png) | "
            "![](reports/digit_classification/cnn/learning_curves.png) |",
            "| test confusion matrix | ![](reports/digit_classification/softmax/confusion_matrix.png) | "
            "![](reports/digit_classification/cnn/confusion_matrix.png) |",
            "",
        ]

    transfer = read_json(r / "transfer_learning" / "results.json")
    if transfer:
        study = transfer.get("seed_study")
        out += [
            "### Transfer learning, ants vs bees ([report](reports/transfer_learning/results.md))",
            "",
            f"ImageNet-pretrained {transfer['backbone']} with a new customops `Linear` head and the customops "
            f"softmax loss; {transfer['train_images']} training and {transfer['val_images']} validation images; "
            "the best validation epoch of each run, as the tutorial reports (there is no test split). "
            "Fine-tuning starts from the freeze scenario's best head (linear probe, then fine-tune).",
            "",
            "| scenario | best val acc, seed 0 (epoch) | mean ± std over seeds | anchor |",
            "|---|---:|---:|---|",
        ]
        for mode, res in transfer["scenarios"].items():
            block = {"seeds": study["seeds"], **study[mode]} if study else None
            anchors = "; ".join(f"{a} {v}%" for a, v in ANCHORS[mode])
            out.append(
                f"| {mode} | {pct(res['best_val_acc'])} ({res['best_val_correct']}, epoch {res['best_epoch']}) | "
                f"{mean_std(block)} | {anchors} |"
            )
        if study:
            out.append("")
            for mode in transfer["scenarios"]:
                out.append(
                    f"- {mode}, best val accuracy per seed {study['seeds']}: "
                    f"{', '.join(pct(v) for v in study[mode]['val_acc'])}."
                )
        out += ["", "![transfer learning curves](reports/transfer_learning/learning_curves.png)", ""]

    cells = {c: read_json(r / "image_captioning" / c / "results.json") for c in ("rnn", "lstm", "transformer")}
    cells = {c: v[c] for c, v in cells.items() if v and c in v}
    if cells:
        names = {"rnn": "vanilla RNN", "lstm": "LSTM", "transformer": "attention (Transformer decoder)"}
        out += [
            "### Image captioning on Flickr8k ([RNN](reports/image_captioning/rnn/README.md), "
            "[LSTM](reports/image_captioning/lstm/README.md), "
            "[attention](reports/image_captioning/transformer/README.md))",
            "",
            "Corpus BLEU on the 1,000 test images against all five references, with the decoding chosen on dev:",
            "",
            "| model | decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | epochs (best) | training time |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c, res in cells.items():
            b = res["test_bleu"]
            out.append(
                f"| {names[c]} | {res['decoding_chosen_on_dev']} | {b['bleu1']:.3f} | {b['bleu2']:.3f} | "
                f"{b['bleu3']:.3f} | **{b['bleu4']:.3f}** | {res['epochs_run']} ({res['best_checkpoint_epoch'] + 1}) "
                f"| {res['train_seconds'] / 60:.1f} min |"
            )
        for name, value in ANCHORS["captioning"]:
            out.append(f"| *anchor:* {name} | | | | | {value:.3f} | | |")
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
        over = []
        for c in ("rnn", "transformer"):
            o = read_json(r / "image_captioning" / f"overfit_{c}" / "results.json")
            if o and f"overfit_{c}" in o:
                o = o[f"overfit_{c}"]
                over.append(
                    f"{names[c]}: loss {o['final_loss']:.3f} after {o['steps']} steps, "
                    f"{o['exact_reproductions']}/{o['captions']} captions reproduced exactly"
                )
        if over:
            out += ["", "Overfit check (100 training captions): " + "; ".join(over) + "."]
        out += [
            "",
            "![attention captioner's learning curves]"
            "(reports/image_captioning/transformer/learning_curves_transformer.png)",
            "",
        ]

    if timings:
        out += [
            "### Where the time goes",
            "",
            f"`make report` as one command ([reports/timings.json](reports/timings.json), commit "
            f"`{timings['commit'][:12]}`, {timings['machine']['cpus']} CPUs): "
            f"**{timings.get('wall_s', timings.get('total_s', 0)) / 60:.1f} min** in all.",
            "",
            "| step | minutes | command |",
            "|---|---:|---|",
        ]
        out += [f"| {s['name']} | {s['seconds'] / 60:.1f} | `{s['command']}` |" for s in timings["steps"]]
        if seeds_timings:
            out += [
                "",
                f"`make seeds` ([reports/seed_study/timings.json](reports/seed_study/timings.json)): "
                f"{seeds_timings.get('wall_s', 0) / 60:.1f} min for "
                f"{len(seeds_timings['steps'])} runs.",
            ]
        out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def write_readme_results() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"report: README.md has no {BEGIN} ... {END} section to write the results into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = (
        "\n<!-- Written by `python scripts/report.py` (make report / make seeds) from reports/; "
        "edits here are overwritten. -->\n\n" + results_markdown() + "\n"
    )
    runs.write_text(readme, head + BEGIN + body + END + tail)
    print("[report] README.md: results section rewritten from reports/", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", action="store_true", help="the seed study (make seeds), after the publishing run")
    p.add_argument("--seed-list", type=int, nargs="+", default=list(SEEDS), help="seeds of the study (default 0 1 2)")
    p.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps")
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    p.add_argument("--summary", action="store_true", help="only rewrite the README's results section")
    args = p.parse_args(argv)
    if args.summary:
        write_readme_results()
        return 0
    steps = seed_steps(args.seed_list) if args.seeds else STEPS
    if args.only:
        unknown = sorted(set(args.only) - {n for n, _ in steps})
        if unknown:
            p.error(f"--only: no step {', '.join(unknown)}; the steps: {', '.join(n for n, _ in steps)}")
        steps = [s for s in steps if s[0] in args.only]
    if args.list:
        for name, command in steps:
            print(f"{name}: {shlex.join(['python', *command])}")
        return 0
    timings = REPORTS / ("seed_study/timings.json" if args.seeds else "timings.json")
    status = run_steps(steps, ROOT / timings, "make seeds" if args.seeds else "make report", merge=bool(args.only))
    if status:
        return status
    if args.seeds:
        seed_study(args.seed_list)
    write_readme_results()
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
