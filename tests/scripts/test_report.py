"""scripts/report.py, the publishing-run driver: its steps and their outputs, timings, stopping at the
first failure (a step a signal stopped included; SIGTERM passed on to the running step), the seed study
(recipes, mean and std, a mismatched size refused), the README's results."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from lightning_modules.reporting.readme import BEGIN, END
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


def test_seed_study_runs_the_published_recipe_and_writes_mean_and_std(tmp_path, monkeypatch):
    _fake_reports(tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    steps = dict(report.seed_steps([0, 1, 2]))
    assert sorted(steps) == [
        "seed_cnn_1",
        "seed_cnn_2",
        "seed_softmax_1",
        "seed_softmax_2",
        "seed_transfer_1",
        "seed_transfer_2",
    ]  # seed 0 is the publishing run
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
