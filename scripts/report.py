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
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightning_modules.reporting.readme import write_results_section
from lightning_modules.runs.errors import RunError
from lightning_modules.runs.record import git_commit
from lightning_modules.runs.storage import read_json, write_json

# The repository this tool works in: the steps run from its root and write into its reports/.
ROOT = Path(__file__).resolve().parent.parent
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


def run_steps(steps: list[tuple[str, list[str]]], timings_file: Path, title: str, merge: bool) -> int:
    """Run each step as its own process; one line and an updated timings file after each."""
    record: dict[str, Any] = {
        "run": title,
        "commit": git_commit() or "unknown",
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


def sizes(spec: dict[str, Any]) -> dict[str, Any]:
    """A digit network's spec without the key naming its kind (``name``, formerly ``kind``)."""
    return {k: v for k, v in spec.items() if k not in ("name", "kind")}


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
            if sizes(run["final"]["spec"]) != sizes(spec):
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


def write_readme_results() -> None:
    """The README's results section, rewritten from reports/ (``lightning_modules.reporting.readme``)."""
    try:
        write_results_section(
            ROOT / "README.md", ROOT / REPORTS, "`python scripts/report.py` (make report / make seeds)"
        )
    except RunError as err:
        raise SystemExit(f"report: {err}") from None
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
