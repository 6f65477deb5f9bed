"""The publishing run: every check, benchmark and training whose numbers the README shows.

    python scripts/report.py              # make report: every step, then the README's results
    python scripts/report.py --seeds      # the seed study (after make report), one step at a time
    python scripts/report.py --seeds --jobs 2   # make seeds: two steps at once, one thread each on 2 CPUs
    python scripts/report.py --list       # the steps and their commands, nothing run
    python scripts/report.py --only transfer captioning_rnn   # some steps (timings merged)
    python scripts/report.py --summary    # only rewrite the README's results from reports/

Each step is a separate process (the same commands one can type), run from the repository
root into ``reports/``; each publishes its folder all at once when it succeeds. After each step
one line gives its wall time, and ``reports/timings.json`` (``reports/seed_study/timings.json``
for the seed study) is rewritten with every step so far. The first step that fails (or is
stopped: SIGTERM or SIGINT to the driver is passed on to the running step) ends the run with its
exit status, before the README is touched; the steps before it stay published.

The seed study retrains the sizes the publishing run chose (read from its results.json), with
the same recipe and seeds 1 and 2, each a complete run (its own initialisation, batch order and
augmentation; the checkpoint chosen on validation; MNIST's test digits scored once), into
``reports/seed_study/``. Seed 0 is the publishing run itself. It then adds a ``seed_study``
block (seeds, values, mean, sample standard deviation) to each published results.json: MNIST's
test accuracy, the transfer scenarios' best validation accuracy, the captioners' test BLEU-4 (each
seed's decoding chosen on its own dev scores) beside that decoding's dev BLEU-4.

``--jobs N`` runs N steps at once, each with cpu_count / N threads; the timings file records each
step's threads and the steps it ran beside.

The README's results section (between its ``<!-- results:begin -->`` and
``<!-- results:end -->`` lines) is then written from the JSON files under ``reports/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightning_modules.reporting.readme import write_results_section
from lightning_modules.runs.cli import CONFIG_NAME
from lightning_modules.runs.errors import RunError
from lightning_modules.runs.record import git_commit
from lightning_modules.runs.storage import read_json, write_json

# The repository this tool works in: the steps run from its root and write into its reports/.
ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path("reports")
SEEDS = (0, 1, 2)
CAPTIONERS = ("rnn", "lstm", "transformer")

# (name, command after the Python interpreter). The order is the order they run in.
QUIET = ["--trainer.enable_progress_bar", "false"]


def _fit(script: str, *options: str, out: str) -> list[str]:
    return [f"scripts/{script}.py", "fit", *options, *QUIET, "--out", out]


STEPS: list[tuple[str, list[str]]] = [
    ("check", ["-m", "customops.check", "--json", "reports/benchmarks/check_cpu.json"]),
    ("bench", ["-m", "customops.bench", "--json", "reports/benchmarks/ops_cpu.json"]),
    ("digits_softmax", _fit("digit_classification", "--model", "softmax", out="reports/digit_classification/softmax")),
    ("digits_cnn", _fit("digit_classification", "--model", "cnn", out="reports/digit_classification/cnn")),
    (
        "training_speed",
        _fit("benchmark_training", "--repeats", "2", out="reports/digit_classification/benchmark"),
    ),
    ("transfer", _fit("transfer_learning", out="reports/transfer_learning")),
]
for _cell in ("rnn", "lstm", "transformer"):
    if _cell != "lstm":
        STEPS.append(
            (
                f"captioning_overfit_{_cell}",
                _fit("image_captioning", "--overfit", "--cell", _cell, out=f"reports/image_captioning/overfit_{_cell}"),
            )
        )
    STEPS.append(
        (
            f"captioning_{_cell}",
            _fit(
                "image_captioning",
                *("--cell", _cell, "--trainer.precision", "bf16-mixed"),
                out=f"reports/image_captioning/{_cell}",
            ),
        )
    )

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


@contextlib.contextmanager
def passing_on_signals(processes: Callable[[], list[subprocess.Popen]]) -> Iterator[list[int]]:
    """For the block, SIGTERM or SIGINT reaching this driver is passed on to `processes()` (the steps
    running at that moment, each in its own session, so that a Ctrl-C reaches it once, from here),
    which stop cleanly; yields the list of the signals received."""
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        for proc in processes():
            proc.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_status(code: int, received: list[int]) -> int:
    """A step's exit status: 128 + n where signal n ended it, or where the driver received n and
    passed it on (even if the step had just finished)."""
    if code < 0:  # ended by a signal it did not handle
        code = 128 - code
    return 128 + received[0] if received and code == 0 else code


def run_step(argv: list[str]) -> int:
    """One step as its own process; its exit status (``_exit_status``). A signal to the driver is
    passed on to it (``passing_on_signals``); the driver then stops too."""
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    with passing_on_signals(lambda: [proc]) as received:
        code = proc.wait()
    return _exit_status(code, received)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def run_steps(steps: list[tuple[str, list[str]]], timings_file: Path, title: str, merge: bool, jobs: int = 1) -> int:
    """Run each step as its own process; one line and an updated timings file after each.

    With `jobs` > 1, that many steps run at once, each with ``os.cpu_count() // jobs`` threads
    (``OMP_NUM_THREADS``), its output in ``runs/report_logs/<step>.log``; each step's timing says with
    which steps it ran. A result does not depend on this: the recipes are fixed in epochs.
    """
    record: dict[str, Any] = {
        "run": title,
        "commit": git_commit() or "unknown",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(),
        "steps": [],
    }
    if jobs > 1:
        record["jobs"] = jobs
    old = read_json(timings_file) if merge else None
    if old:  # --only: the other steps keep their last timing
        record["steps"] = [s for s in old.get("steps", []) if s["name"] not in {n for n, _ in steps}]
    if jobs > 1:
        return _run_at_once(steps, timings_file, record, jobs)
    start = time.perf_counter()
    status = 0
    for i, (name, command) in enumerate(steps, 1):
        argv = [sys.executable, *command]
        print(f"[report] {i}/{len(steps)} {name}: {shlex.join(['python', *command])}", flush=True)
        t0 = time.perf_counter()
        status = run_step(argv)
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


# Where --jobs > 1 puts each step's output (git-ignored, beside the programs' own runs/).
LOGS = Path("runs") / "report_logs"


def _run_at_once(steps: list[tuple[str, list[str]]], timings_file: Path, record: dict[str, Any], jobs: int) -> int:
    """run_steps with `jobs` steps at once, in order; after a failure or a signal no new step starts,
    those running end (a signal is passed on to each)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    (ROOT / LOGS).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pending = list(enumerate(steps, 1))
    running: dict[str, dict[str, Any]] = {}  # name -> its process, log, start, and the steps seen beside it
    status = 0
    with passing_on_signals(lambda: [job["proc"] for job in running.values()]) as received:
        while pending or running:
            if received and status == 0:
                status = 128 + received[0]
            if status:
                pending.clear()  # after a failure no new step starts
            while pending and len(running) < jobs:
                _start_step(*pending.pop(0), len(steps), running, env)
            time.sleep(0.2)
            for name, job in list(running.items()):
                code = job["proc"].poll()
                if code is None:
                    continue
                del running[name]
                code = _exit_status(code, received)
                _record_step(name, job, code, record, timings_file, threads, start, len(steps))
                if code != 0 and status == 0:
                    status = code
    if status:
        print(
            f"[report] stopped after a failure; the steps that succeeded are published, timings in {timings_file}",
            flush=True,
        )
        return status
    summary = ", ".join(f"{s['name']} {s['seconds'] / 60:.1f}" for s in record["steps"])
    print(
        f"[report] done in {record['wall_s'] / 60:.1f} min, {jobs} steps at once (minutes per step: {summary})",
        flush=True,
    )
    return status


def _start_step(
    i: int, step: tuple[str, list[str]], total: int, running: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    name, command = step
    log = (ROOT / LOGS / f"{name}.log").open("w")
    print(f"[report] {i}/{total} {name}: {shlex.join(['python', *command])} (log: {LOGS / name}.log)", flush=True)
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C reaches it once, passed on from here
    )
    for other in running.values():
        other["with"].add(name)
    running[name] = {"i": i, "command": command, "proc": proc, "log": log, "t0": time.perf_counter()}
    running[name]["with"] = set(running) - {name}


def _record_step(
    name: str,
    job: dict[str, Any],
    code: int,
    record: dict[str, Any],
    timings_file: Path,
    threads: int,
    start: float,
    total: int,
) -> None:
    """A finished step's timing into the record (written at once) and its line on the console."""
    job["log"].close()
    seconds = time.perf_counter() - job["t0"]
    record["steps"].append(
        {
            "name": name,
            "command": shlex.join(["python", *job["command"]]),
            "seconds": round(seconds, 1),
            "status": "ok" if code == 0 else f"failed ({code})",
            "threads": threads,
            "ran_at_once_with": sorted(job["with"]),
            "started_s": round(job["t0"] - start, 1),
        }
    )
    record["total_s"] = round(sum(s["seconds"] for s in record["steps"]), 1)
    record["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(timings_file, record)
    print(
        f"[report] {job['i']}/{total} {name}: {seconds / 60:.1f} min, "
        f"{'ok' if code == 0 else f'FAILED (exit status {code}), see {LOGS / name}.log'}; "
        f"{record['wall_s'] / 60:.1f} min so far",
        flush=True,
    )


# --------------------------------------------------------------------------- seed study


def published_config(folder: Path, results: dict[str, Any], legacy: dict[str, Any]) -> str:
    """The published run's recipe for ``--config``: its saved config.yaml; for a run published before
    runs saved one, its results.json "config" block (the same resolved options) as inline JSON."""
    saved = folder / CONFIG_NAME
    if saved.is_file():
        return str(saved.relative_to(ROOT))
    return json.dumps(legacy)


def _legacy_digits(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """A results.json "config" block of the flat flags as the nested recipe they set."""
    top = ("lr", "weight_decay", "optimizer", "scheduler", "max_shift", "max_rotation", "max_scale")
    top += ("elastic_alpha", "elastic_sigma", "impl", "sweep_epochs", "halving", "patience")
    return {
        "model": model,
        **{k: cfg[k] for k in top if k in cfg},
        model: {"final_epochs": cfg["final_epochs"]},
        "data": {k: cfg[k] for k in ("batch_size", "val_size") if k in cfg},
    }


def seed_steps(seeds: list[int]) -> list[tuple[str, list[str]]]:
    """The seed study's runs: each published run's saved recipe (config.yaml) with another seed, the
    chosen size alone (seed 0 is the publishing run)."""
    steps = []
    for model in ("softmax", "cnn"):
        folder = ROOT / REPORTS / "digit_classification" / model
        published = read_json(folder / "results.json")
        if published is None:
            raise SystemExit(
                f"report --seeds: reports/digit_classification/{model}/results.json is missing: run make report first"
            )
        cfg, spec = published["config"], published["chosen"]["spec"]
        recipe = ["--config", published_config(folder, published, _legacy_digits(cfg, model))]
        recipe += [f"--{model}.hidden", f"[{spec['hidden']}]"]
        if model == "cnn":
            recipe += ["--cnn.filters", str(spec["filters"]), "--cnn.filter_sizes", f"[{spec['kernel_size']}]"]
        for seed in seeds:
            if seed != cfg["seed"]:
                out = f"reports/seed_study/{model}/seed{seed}"
                steps.append(
                    (f"seed_{model}_{seed}", _fit("digit_classification", *recipe, "--seed", str(seed), out=out))
                )
    folder = ROOT / REPORTS / "transfer_learning"
    transfer = read_json(folder / "results.json")
    if transfer is None:
        raise SystemExit("report --seeds: reports/transfer_learning/results.json is missing: run make report first")
    recipe = ["--config", published_config(folder, transfer, {})] if (folder / CONFIG_NAME).is_file() else []
    for seed in seeds:
        if seed != transfer["seed"]:
            out = f"reports/seed_study/transfer_learning/seed{seed}"
            steps.append((f"seed_transfer_{seed}", _fit("transfer_learning", *recipe, "--seed", str(seed), out=out)))
    for cell in CAPTIONERS:
        folder = ROOT / REPORTS / "image_captioning" / cell
        published = read_json(folder / "results.json")
        if published is None or cell not in published:
            raise SystemExit(
                f"report --seeds: reports/image_captioning/{cell}/results.json is missing: run make report first"
            )
        hparams = published[cell]["hparams"]
        recipe = ["--config", published_config(folder, published, _legacy_captioning(hparams))]
        for seed in seeds:
            if seed != hparams["seed"]:
                out = f"reports/seed_study/image_captioning/{cell}/seed{seed}"
                steps.append(
                    (f"seed_captioning_{cell}_{seed}", _fit("image_captioning", *recipe, "--seed", str(seed), out=out))
                )
    return steps


def _legacy_captioning(h: dict[str, Any]) -> dict[str, Any]:
    """A captioning results.json "hparams" block (the flat flags of a run published before runs saved their
    config.yaml) as the nested recipe it set; its time limit (a guard, not part of the recipe) left out."""
    net = (
        ("model_dim", "num_heads", "num_layers", "ffn_dim")
        if h["cell"] == "transformer"
        else ("wordvec_dim", "hidden_dim")
    )
    decodings = h["decodings"].split(",") if isinstance(h["decodings"], str) else h["decodings"]
    data = ("format", "backbone", "weights", "image_size", "min_count", "max_words", "batch_size", "images")
    return {
        "cell": h["cell"],
        **{k: h[k] for k in ("max_epochs", "lr_gamma", "weight_decay", "max_length", "samples") if k in h},
        "decodings": decodings,
        ("transformer" if h["cell"] == "transformer" else "recurrent"): {
            k: h[k] for k in ("lr", "dropout", "label_smoothing", *net) if k in h
        },
        "data": {k: h[k] for k in data if k in h},
        "trainer": {"precision": h["precision"]},
    }


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
        if any("tta" in run for run, _ in found):  # how each seed's test digits were scored
            published["seed_study"]["tta_chosen"] = [run.get("tta", {}).get("chosen", "plain") for run, _ in found]
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
    for cell in CAPTIONERS:
        path = ROOT / REPORTS / "image_captioning" / cell / "results.json"
        published = read_json(path)
        seed = published[cell]["hparams"]["seed"]
        found = _seed_runs(path, seed, f"reports/seed_study/image_captioning/{cell}", seeds)
        runs = [run[cell] for run, _ in found]
        test = [r["test_bleu"]["bleu4"] for r in runs]
        dev = [r["dev"][r["decoding_chosen_on_dev"]]["bleu4"] for r in runs]
        published[cell]["seed_study"] = {
            "seeds": list(seeds),
            "test_bleu4": test,
            **_stats(test),
            # the dev BLEU-4 of each seed's decoding, which dev chose
            "dev_bleu4": dev,
            "dev": _stats(dev),
            "decoding": [r["decoding_chosen_on_dev"] for r in runs],
            "epochs_run": [r["epochs_run"] for r in runs],
            "runs": [folder for _, folder in found],
        }
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
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="steps run at once, each with cpu_count / jobs threads and its output in runs/report_logs/ (default 1)",
    )
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
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
    title = "make seeds" if args.seeds else "make report"
    status = run_steps(steps, ROOT / timings, title, merge=bool(args.only), jobs=args.jobs)
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
