"""scripts/report.py, the publishing-run driver: its steps and their outputs, timings, stopping at the
first failure (a step a signal stopped included; SIGTERM passed on to the running step), the seed study
(recipes, mean and std, a mismatched size refused), the README's results."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
from pathlib import Path

import pytest

from lightning_modules.reporting.readme import BEGIN, END
from lightning_modules.tasks import image_captioning
from lightning_modules.tasks.digit_classification import PROGRAM
from scripts import report
from tests.helpers import ROOT


def test_report_lists_every_step_and_each_writes_into_reports():
    names = [n for n, _ in report.STEPS]
    assert len(names) == len(set(names))
    for name, command in report.STEPS:
        out = command[command.index("--out") + 1] if "--out" in command else command[command.index("--json") + 1]
        assert out.startswith("reports/"), name
        target = command[0] if command[0] != "-m" else command[1]
        assert (ROOT / target).is_file() or target.startswith("customops."), name
    # The Makefile's report target is this driver, and seeds its --seeds.
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/report.py\n" in makefile and "scripts/report.py --seeds" in makefile


def test_report_times_each_step_and_stops_at_the_first_failure(tmp_path, capsys):
    timings = tmp_path / "timings.json"
    steps = [("fine", ["-c", "pass"]), ("broken", ["-c", "raise SystemExit(3)"]), ("never", ["-c", "pass"])]
    assert report.run_steps(steps, timings, "test", merge=False) == 3
    saved = json.loads(timings.read_text())
    assert [s["name"] for s in saved["steps"]] == ["fine", "broken"]
    assert saved["steps"][0]["status"] == "ok" and saved["steps"][1]["status"] == "failed (3)"
    assert all(s["seconds"] >= 0 for s in saved["steps"])
    out = capsys.readouterr().out
    assert (
        "[report] 1/3 fine:" in out
        and "FAILED (exit status 3)" in out
        and "never" not in out.split("stopped")[0][-200:]
    )


def _fake_reports(root: Path) -> None:
    def put(rel: str, obj) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))

    cfg = {
        "final_epochs": 30,
        "lr": 0.002,
        "weight_decay": 0.05,
        "optimizer": "adamw",
        "scheduler": "onecycle",
        "max_shift": 2,
        "max_rotation": 10.0,
        "max_scale": 0.1,
        "elastic_alpha": 34.0,
        "elastic_sigma": 6.0,
        "batch_size": 128,
        "val_size": 5000,
        "impl": "custom",
        "seed": 0,
    }
    for model, spec, acc in (
        ("softmax", {"kind": "softmax", "impl": "custom", "hidden": 2048}, 0.992),
        ("cnn", {"kind": "cnn", "impl": "custom", "filters": 32, "kernel_size": 7, "hidden": 512}, 0.995),
    ):
        put(
            f"reports/digit_classification/{model}/results.json",
            {"config": cfg, "chosen": {"spec": spec}, "final": {"spec": spec, "epochs": 30}, "test_acc": acc},
        )
        for seed, delta in ((1, 0.001), (2, -0.001)):
            put(
                f"reports/seed_study/{model}/seed{seed}/results.json",
                {
                    "config": {**cfg, "seed": seed},
                    "chosen": {"spec": spec},
                    "final": {"spec": spec},
                    "test_acc": acc + delta,
                },
            )

    def scen(a, b):
        return {
            "finetune": {"best_val_acc": a, "best_val_correct": "", "best_epoch": 1},
            "freeze": {"best_val_acc": b, "best_val_correct": "", "best_epoch": 1},
        }

    put(
        "reports/transfer_learning/results.json",
        {"seed": 0, "backbone": "mobilenet_v2", "train_images": 244, "val_images": 153, "scenarios": scen(0.96, 0.97)},
    )
    put("reports/seed_study/transfer_learning/seed1/results.json", {"seed": 1, "scenarios": scen(0.95, 0.98)})
    put("reports/seed_study/transfer_learning/seed2/results.json", {"seed": 2, "scenarios": scen(0.97, 0.97)})
    for cell, bleu4 in (("rnn", 0.165), ("lstm", 0.179), ("transformer", 0.196)):
        put(f"reports/image_captioning/{cell}/results.json", {cell: _captioner(cell, 0, bleu4, "beam3")})
        for seed, delta, decoding in ((1, 0.002, "beam5"), (2, -0.004, "greedy")):
            put(
                f"reports/seed_study/image_captioning/{cell}/seed{seed}/results.json",
                {cell: _captioner(cell, seed, bleu4 + delta, decoding)},
            )


def _captioner(cell: str, seed: int, bleu4: float, decoding: str) -> dict:
    """A captioning results.json's block, as runs published before config.yaml wrote it (flat hparams,
    with the 20-minute time limit that recipes no longer set)."""
    sizes = {"wordvec_dim": 256, "hidden_dim": 512, "model_dim": 256, "num_heads": 4, "num_layers": 2, "ffn_dim": 1024}
    hparams = {"format": "flickr8k", "backbone": "mobilenet_v2", "weights": "imagenet", "image_size": 224}
    hparams |= {"cell": cell, "max_epochs": 12, "max_minutes": 20.0, "lr": 5e-4 if cell == "transformer" else 2e-3}
    hparams |= {"lr_gamma": 0.85, "weight_decay": 0.0, "dropout": 0.3, **sizes, "min_count": 5, "max_words": 16}
    hparams |= {"max_length": 20, "decodings": "greedy,beam3,beam5,beam5-lp1", "samples": 6, "seed": seed}
    hparams |= {"precision": "bf16-mixed", "batch_size": 128, "images": None, "out": f"reports/image_captioning/{cell}"}
    bleu = {"bleu1": 0.6, "bleu2": 0.4, "bleu3": 0.3, "bleu4": bleu4}
    return {
        "cell": cell,
        "decoding_chosen_on_dev": decoding,
        "test_bleu": bleu,
        "dev": {d: {**bleu, "bleu4": bleu4 - gap} for d, gap in (("greedy", 0.01), ("beam3", 0.002), ("beam5", 0.003))},
        "epochs_run": 12,
        "best_checkpoint_epoch": 10,
        "train_seconds": 400.0,
        "feature_extraction": None,
        "hparams": hparams,
    }


def test_seed_study_runs_the_published_recipe_and_writes_mean_and_std(tmp_path, monkeypatch):
    _fake_reports(tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    steps = dict(report.seed_steps([0, 1, 2]))
    assert sorted(steps) == [
        "seed_captioning_lstm_1",
        "seed_captioning_lstm_2",
        "seed_captioning_rnn_1",
        "seed_captioning_rnn_2",
        "seed_captioning_transformer_1",
        "seed_captioning_transformer_2",
        "seed_cnn_1",
        "seed_cnn_2",
        "seed_softmax_1",
        "seed_softmax_2",
        "seed_transfer_1",
        "seed_transfer_2",
    ]  # seed 0 is the publishing run
    # A captioner's seed run: its published recipe (here the flat hparams of a run without config.yaml), in
    # epochs, without the time limit it was published with.
    attention = steps["seed_captioning_transformer_2"]
    assert attention[:2] == ["scripts/image_captioning.py", "fit"]
    assert attention[attention.index("--out") + 1] == "reports/seed_study/image_captioning/transformer/seed2"
    _, recipe = image_captioning.PROGRAM.parse(attention[1:])
    assert (recipe.cell, recipe.max_epochs, recipe.max_minutes, recipe.seed) == ("transformer", 12, None, 2)
    assert (recipe.transformer.lr, recipe.transformer.dropout, recipe.transformer.ffn_dim) == (5e-4, 0.3, 1024)
    assert recipe.decodings == ["greedy", "beam3", "beam5", "beam5-lp1"] and recipe.trainer.precision == "bf16-mixed"
    assert (recipe.data.max_words, recipe.data.batch_size, recipe.lr_gamma) == (16, 128, 0.85)
    _, rnn = image_captioning.PROGRAM.parse(steps["seed_captioning_rnn_1"][1:])
    assert (rnn.cell, rnn.recurrent.lr, rnn.recurrent.hidden_dim, rnn.seed) == ("rnn", 2e-3, 512, 1)
    cnn = steps["seed_cnn_2"]
    assert cnn[:2] == ["scripts/digit_classification.py", "fit"]
    for flag, value in (
        ("--cnn.hidden", "[512]"),
        ("--cnn.filter_sizes", "[7]"),
        ("--cnn.filters", "32"),
        ("--seed", "2"),
        ("--out", "reports/seed_study/cnn/seed2"),
    ):
        assert cnn[cnn.index(flag) + 1] == value, flag
    # The rest of the recipe comes from the published run (here its results.json: no config.yaml).
    _, recipe = PROGRAM.parse(cnn[1:])  # the program accepts it
    assert (recipe.cnn.hidden, recipe.cnn.filter_sizes, recipe.cnn.final_epochs) == ([512], [7], 30)
    assert (recipe.elastic_alpha, recipe.max_rotation, recipe.seed) == (34.0, 10.0, 2)
    # With the run's saved config.yaml, that file is the recipe.
    saved = tmp_path / "reports/digit_classification/cnn/config.yaml"
    saved.write_text("model: cnn\nlr: 0.001\ncnn:\n  final_epochs: 5\n")
    cnn = dict(report.seed_steps([0, 1, 2]))["seed_cnn_1"]
    assert cnn[cnn.index("--config") + 1] == "reports/digit_classification/cnn/config.yaml"
    monkeypatch.chdir(tmp_path)
    _, recipe = PROGRAM.parse(cnn[1:])
    assert (recipe.lr, recipe.cnn.final_epochs, recipe.cnn.hidden, recipe.seed) == (0.001, 5, [512], 1)

    report.seed_study([0, 1, 2])
    softmax = json.loads((tmp_path / "reports/digit_classification/softmax/results.json").read_text())["seed_study"]
    assert softmax["seeds"] == [0, 1, 2] and softmax["test_acc"] == pytest.approx([0.992, 0.993, 0.991])
    assert softmax["mean"] == pytest.approx(0.992) and softmax["std"] == pytest.approx(0.001)
    transfer = json.loads((tmp_path / "reports/transfer_learning/results.json").read_text())["seed_study"]
    assert transfer["finetune"]["val_acc"] == [0.96, 0.95, 0.97]
    assert transfer["freeze"]["mean"] == pytest.approx(0.97 + 0.01 / 3)

    # The captioners: test BLEU-4 per seed (each its own decoding chosen on dev) and the dev BLEU-4 of that decoding.
    lstm = json.loads((tmp_path / "reports/image_captioning/lstm/results.json").read_text())["lstm"]["seed_study"]
    assert lstm["test_bleu4"] == pytest.approx([0.179, 0.181, 0.175]) and lstm["mean"] == pytest.approx(0.535 / 3)
    assert lstm["std"] == pytest.approx(statistics.stdev([0.179, 0.181, 0.175]))
    assert lstm["decoding"] == ["beam3", "beam5", "greedy"]
    assert lstm["dev_bleu4"] == pytest.approx([0.177, 0.178, 0.165])  # each seed's chosen decoding's dev score
    assert lstm["runs"][1] == "reports/seed_study/image_captioning/lstm/seed1"

    # A seed run of another size than the published choice is refused, not averaged.
    path = tmp_path / "reports/seed_study/cnn/seed1/results.json"
    bad = json.loads(path.read_text())
    bad["final"]["spec"] = {**bad["final"]["spec"], "hidden": 64}
    path.write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="not the published choice"):
        report.seed_study([0, 1, 2])


def test_readme_results_are_written_between_the_markers(tmp_path, monkeypatch):
    _fake_reports(tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    report.seed_study([0, 1, 2])
    (tmp_path / "README.md").write_text(f"# title\n\n{BEGIN}\nold numbers 12.34%\n{END}\n\n## after\n")
    report.write_readme_results()
    text = (tmp_path / "README.md").read_text()
    assert "old numbers" not in text and text.startswith("# title") and text.endswith("## after\n")
    assert "99.20% ± 0.10" in text and "99.50% ± 0.10" in text  # the seed study's means
    assert "Simard" in text  # the anchors beside them
    assert "**0.178 ± 0.003** (n = 3)" in text  # the LSTM captioner's test BLEU-4 over the seeds
    assert "BLEU-4, mean ± std over seeds" in text
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="results:begin"):
        report.write_readme_results()


def test_the_readme_has_a_generated_results_section():
    text = (ROOT / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)


def test_report_list_runs_nothing(capsys):
    assert report.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(report.STEPS) and "captioning_transformer: python scripts/image_captioning.py" in out
    with pytest.raises(SystemExit):
        report.main(["--only", "no_such_step"])
    assert sys.executable  # the steps run under this interpreter


def test_a_stopped_step_stops_the_report_before_the_readme_is_written(tmp_path, monkeypatch, capsys):
    """A step that a signal stopped (status 143, as the programs end on SIGTERM) is no success: the run
    ends with its status and the README is not rewritten from the stale reports/."""
    steps = [("stopped", ["-c", "raise SystemExit(143)"]), ("never", ["-c", "pass"])]
    monkeypatch.setattr(report, "STEPS", steps)
    monkeypatch.setattr(report, "REPORTS", tmp_path)
    monkeypatch.setattr(report, "write_readme_results", lambda: pytest.fail("the README was rewritten"))
    assert report.main([]) == 143
    assert "FAILED (exit status 143)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "step",
    [
        "import time; time.sleep(60)",  # ended by the signal passed on
        "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(2)",  # ends 0 regardless
    ],
    ids=["killed", "ignores it"],
)
def test_sigterm_to_the_driver_is_passed_on_and_stops_the_run(tmp_path, step):
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = report.run_steps([("long", ["-c", step]), ("never", ["-c", "pass"])], tmp_path / "t.json", "t", False)
    finally:
        timer.cancel()
    assert status == 143
    assert [s["name"] for s in json.loads((tmp_path / "t.json").read_text())["steps"]] == ["long"]


def test_sigterm_to_the_driver_reaches_every_step_running_at_once(tmp_path, monkeypatch):
    """--jobs 2: the signal is passed on to both running steps, no further step starts, the run ends 143."""
    monkeypatch.setattr(report, "ROOT", tmp_path)
    sleep = ["-c", "import time; time.sleep(60)"]
    steps = [("a", sleep), ("b", sleep), ("never", ["-c", "open('never', 'w')"])]
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = report.run_steps(steps, tmp_path / "t.json", "t", False, jobs=2)
    finally:
        timer.cancel()
    assert status == 143
    saved = json.loads((tmp_path / "t.json").read_text())["steps"]
    assert {s["name"]: s["status"] for s in saved} == {"a": "failed (143)", "b": "failed (143)"}
    assert all(s["seconds"] < 30 for s in saved)  # stopped, not waited for
    assert not (tmp_path / "never").exists()


def _meeting(me: str, other: str) -> list[str]:
    """A step that records its torch threads, then waits (up to a minute) for `other` to have started too."""
    code = (
        "import pathlib, sys, time, torch\n"
        f"pathlib.Path('{me}.threads').write_text(str(torch.get_num_threads()))\n"
        "for _ in range(600):\n"
        f"    if pathlib.Path('{other}.threads').exists(): sys.exit(0)\n"
        "    time.sleep(0.1)\n"
        "sys.exit(5)\n"
    )
    return ["-c", code]


def test_report_runs_steps_at_once_each_with_its_share_of_the_threads(tmp_path, monkeypatch, capsys):
    """--jobs 2: two steps run together (each waits for the other), each with cpu_count / 2 threads, their
    output in runs/report_logs/, and the timings say which ran at once."""
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report.os, "cpu_count", lambda: 4)
    timings = tmp_path / "timings.json"
    steps = [("a", _meeting("a", "b")), ("b", _meeting("b", "a"))]
    assert report.run_steps(steps, timings, "test", merge=False, jobs=2) == 0
    assert (tmp_path / "a.threads").read_text() == (tmp_path / "b.threads").read_text() == "2"
    saved = json.loads(timings.read_text())
    assert saved["jobs"] == 2 and sorted(s["name"] for s in saved["steps"]) == ["a", "b"]
    for step in saved["steps"]:
        assert step["status"] == "ok" and step["threads"] == 2
        assert step["ran_at_once_with"] == ["b" if step["name"] == "a" else "a"]
    assert (tmp_path / "runs" / "report_logs" / "a.log").is_file()
    assert "2 steps at once" in capsys.readouterr().out


def test_report_with_jobs_starts_nothing_after_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    timings = tmp_path / "timings.json"
    steps = [
        ("broken", ["-c", "raise SystemExit(3)"]),
        ("running", ["-c", "import time; time.sleep(1)"]),
        ("never", ["-c", "open('never', 'w')"]),
    ]
    assert report.run_steps(steps, timings, "test", merge=False, jobs=2) == 3
    saved = json.loads(timings.read_text())
    status = {s["name"]: s["status"] for s in saved["steps"]}
    assert status == {"broken": "failed (3)", "running": "ok"}  # the one running ends; no new one starts
    assert not (tmp_path / "never").exists()
    with pytest.raises(SystemExit):
        report.main(["--jobs", "0"])
