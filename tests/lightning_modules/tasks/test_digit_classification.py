"""tasks.digit_classification: the MNIST program on tiny digits written here: the sweep by successive
halving, its outputs, the options checked up front, DDP against one process, a diverging training,
kills (SIGKILL mid-epoch, then --resume; the previous run's folder never touched), one run per folder,
and SIGTERM as a clean stop (one process, and one DDP rank stopping both)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import pytest
import torch

from lightning_modules.runs import storage
from lightning_modules.runs.errors import RunInUseError
from lightning_modules.tasks import digit_classification as TASK
from tests.helpers import ROOT, assert_histories_agree, assert_same_parameters, assert_written_once, last_line, state

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
STEPS_PER_EPOCH = 119  # the resume test: 950 training digits in batches of 8


def test_script_sweeps_and_reports_on_a_tiny_mirror(tmp_path, monkeypatch, mnist_mirror, capsys):
    """The sweep script on a tiny mirror: every artefact written, test accuracy from the chosen model."""
    md5s = mnist_mirror(tmp_path / "mirror", n_train=300, n_test=50)
    # The tiny mirror's md5s stand in for the real ones.
    monkeypatch.setattr("lightning_modules.data.mnist.MNIST_MD5", md5s)
    out = tmp_path / "out"
    results = TASK.main(
        [
            "fit",
            "--model",
            "cnn",
            "--data.root",
            str(tmp_path / "mirror"),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--cnn.hidden",
            "[16,32]",
            "--cnn.filter_sizes",
            "[3,5]",
            "--cnn.filters",
            "4",
            "--sweep_epochs",
            "1",
            "--cnn.final_epochs",
            "2",
            "--data.val_size",
            "50",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.log_every_n_steps",
            "1",
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["candidates"]) == 4
    assert saved["chosen"]["spec"] == max(saved["candidates"], key=lambda r: r["val_acc"])["spec"]
    assert saved["test_size"] == 50 and saved["test_acc"] == results["test_acc"]
    assert sum(map(sum, saved["confusion_matrix"])) == 50
    for name in (
        "sweep.md",
        "learning_curves.png",
        "sweep.png",
        "confusion_matrix.png",
        "first_layer_filters.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/version_0/metrics.csv",
    ):
        assert (out / name).is_file(), name
    assert saved["checkpoint"] == "checkpoints/best.ckpt" and saved["run"]["world_size"] == 1
    assert [row["epoch"] for row in saved["final"]["history"]] == [1, 2]
    # The run folder was built beside --out and moved into place: nothing is left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mirror", "out"]
    # The resolved recipe, saved first; the logs hold the training loss and learning rate per step.
    assert (out / "config.yaml").read_text().startswith("seed: 0\n") and "filters: 4" in (
        out / "config.yaml"
    ).read_text()
    header = (out / "logs/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss_step", "train_loss_epoch", "lr-AdamW", "val_acc"} <= set(header)

    # predict: digits of any size or colour, converted as MNIST's were; one line each, and JSON.
    draw = PIL.Image.new("RGB", (50, 70), (240, 235, 220))  # dark ink on light paper, not 28x28
    PIL.ImageDraw.Draw(draw).line([(10, 10), (40, 10), (20, 60)], fill=(20, 20, 50), width=5)
    draw.save(tmp_path / "seven.png")
    PIL.Image.new("L", (28, 28), 0).save(tmp_path / "blank.png")
    records = TASK.main(
        [
            "predict",
            "--ckpt",
            str(out / "checkpoints/best.ckpt"),
            str(tmp_path / "seven.png"),
            str(tmp_path / "blank.png"),
        ]
        + ["--json", str(tmp_path / "preds.json")]
    )
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [r["image"] for r in records] == [str(tmp_path / "seven.png"), str(tmp_path / "blank.png")]
    assert all(r["label"] in "0123456789" and abs(sum(r["probabilities"]) - 1) < 1e-4 for r in records)
    assert lines[0] == f"{tmp_path / 'seven.png'}: {records[0]['label']} ({100 * records[0]['probability']:.1f}%)"
    assert json.loads((tmp_path / "preds.json").read_text()) == records


# ---------------------------------------------------------------- successive halving


def _digits(tmp_path, monkeypatch, mnist_mirror, n_train: int, n_test: int, *options: str) -> tuple[dict, Path]:
    """digit_classification.main on a tiny mirror written here; its results and --out folder."""
    md5s = mnist_mirror(tmp_path / "mirror", n_train=n_train, n_test=n_test)
    monkeypatch.setattr("lightning_modules.data.mnist.MNIST_MD5", md5s)
    out = tmp_path / "out"
    results = TASK.main(
        [
            "fit",
            "--model",
            "softmax",
            "--data.root",
            str(tmp_path / "mirror"),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--data.val_size",
            str(n_test),
            "--trainer.enable_progress_bar",
            "false",
            *options,
        ]
    )
    return results, out


def test_sweep_halves_the_candidates_and_chooses_from_the_last_rung(tmp_path, monkeypatch, mnist_mirror):
    results, out = _digits(
        tmp_path,
        monkeypatch,
        mnist_mirror,
        200,
        40,
        "--softmax.hidden",
        "[8,16,32,64]",
        "--sweep_epochs",
        "1",
        "--halving",
        "2",
        "--softmax.final_epochs",
        "1",
    )
    rows = results["candidates"]
    # 4 candidates, 1 epoch each; the best 2 (a third, rounded up) again, from scratch, for 2 epochs;
    # a third of 2 is 1: the choice is the better of those two.
    assert sorted(r["rung"] for r in rows) == [0, 0, 1, 1]
    assert all(r["epochs"] == 2 ** r["rung"] for r in rows)
    assert all([h["epoch"] for h in r["history"]] == list(range(1, r["epochs"] + 1)) for r in rows)
    best = max((r for r in rows if r["rung"] == 1), key=lambda r: r["val_acc"])
    assert results["chosen"]["spec"] == best["spec"]
    dropped = [r for r in rows if r["rung"] == 0]
    assert max(r["val_acc"] for r in dropped) <= min(r["val_by_rung"][0] for r in rows if r["rung"] == 1)
    assert "rung" in (out / "sweep.md").read_text()


def test_one_candidate_skips_the_sweep(tmp_path, monkeypatch, mnist_mirror):
    results, out = _digits(
        tmp_path,
        monkeypatch,
        mnist_mirror,
        100,
        20,
        "--softmax.hidden",
        "[16]",
        "--softmax.final_epochs",
        "1",
        "--seed",
        "3",
    )
    assert results["candidates"] == [] and results["chosen"]["sweep_val_acc"] is None
    assert results["final"]["epochs"] == 1 and not (out / "sweep").exists() and results["config"]["seed"] == 3


# ---------------------------------------------------------------- test-time augmentation


def _spied_tta_run(tmp_path, monkeypatch, mnist_mirror):
    """A tiny CNN recipe on a small mirror, and the list that records every scoring pass (dataset, with TTA)."""
    calls = []
    accuracy = TASK.tta.accuracy

    def spy(model, loader, with_tta, fill, device):
        calls.append((loader.dataset, with_tta))
        return accuracy(model, loader, with_tta, fill, device)

    monkeypatch.setattr(TASK.tta, "accuracy", spy)
    md5s = mnist_mirror(tmp_path / "mirror", n_train=200, n_test=40)
    monkeypatch.setattr("lightning_modules.data.mnist.MNIST_MD5", md5s)
    argv = ["fit", "--model", "cnn", "--data.root", str(tmp_path / "mirror"), "--data.cache_dir", str(tmp_path)]
    argv += ["--out", str(tmp_path / "out"), "--data.val_size", "40", "--trainer.enable_progress_bar", "false"]
    argv += ["--cnn.hidden", "[8]", "--cnn.filter_sizes", "[3]", "--cnn.filters", "2", "--cnn.final_epochs", "1"]
    return calls, argv


def test_the_cnn_chooses_test_time_augmentation_on_validation_and_scores_test_once(tmp_path, monkeypatch, mnist_mirror):
    """--cnn.tta auto (the default): the final model is scored on validation plainly and with TTA; only
    the way chosen there scores the test digits, once; results.json records both and the choice."""
    from lightning_modules import tta
    from lightning_modules.classifier import ClassifierModule

    accuracy = tta.accuracy
    calls, argv = _spied_tta_run(tmp_path, monkeypatch, mnist_mirror)
    results = TASK.main(argv)
    block = results["tta"]
    assert block["mode"] == "auto" and block["chosen"] == tta.choose(block["val_acc_plain"], block["val_acc_tta"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["tta"] == block and saved["test_acc"] == results["test_acc"]
    # Validation scored both ways, then the test digits once, the chosen way.
    (val_set, _), (val_again, _), (test_set, _) = calls
    assert val_set is val_again and test_set is not val_set
    assert [with_tta for _, with_tta in calls] == [False, True, block["chosen"] == "tta"]
    # The recorded accuracies are the checkpoint's own, plainly and with TTA.
    model = ClassifierModule.load_from_checkpoint(tmp_path / "out" / "checkpoints" / "best.ckpt")
    dm = TASK.make_datamodule(TASK.PROGRAM.parse(argv)[1])
    dm.setup()
    for name, with_tta in (("val_acc_plain", False), ("val_acc_tta", True)):
        assert accuracy(model, [dm.val_set.tensors], with_tta, dm.fill, "cpu")[0] == pytest.approx(block[name])
    test_acc = accuracy(model, [dm.test_set.tensors], block["chosen"] == "tta", dm.fill, "cpu")[0]
    assert results["test_acc"] == pytest.approx(test_acc)


def test_with_tta_off_validation_and_test_are_scored_plainly_once_each(tmp_path, monkeypatch, mnist_mirror):
    """--cnn.tta off: no augmented pass at all; the validation accuracy is recorded, the test digits scored once."""
    calls, argv = _spied_tta_run(tmp_path, monkeypatch, mnist_mirror)
    results = TASK.main([*argv, "--cnn.tta", "off"])
    assert set(results["tta"]) == {"mode", "val_acc_plain", "chosen"}
    assert results["tta"]["mode"] == "off" and results["tta"]["chosen"] == "plain"
    (val_set, val_tta), (test_set, test_tta) = calls
    assert test_set is not val_set and not val_tta and not test_tta
    assert len(test_set) == results["test_size"] == 40


def test_tta_is_auto_for_the_cnn_and_off_for_the_softmax_net_by_default():
    assert TASK.PROGRAM.parse(["fit", "--model", "cnn"])[1].grid.tta == "auto"
    assert TASK.PROGRAM.parse(["fit", "--model", "softmax"])[1].grid.tta == "off"
    assert TASK.PROGRAM.parse(["fit", "--model", "cnn", "--cnn.tta", "off"])[1].grid.tta == "off"


# ---------------------------------------------------------------- options


BAD_OPTIONS = [
    (["--model", "cnn", "--cnn.filters", "0"], '"cnn.filters"', "must be a positive integer, got 0"),
    (["--model", "softmax", "--lr", "nan"], '"lr"', "'nan' is not a finite number"),
    (["--model", "softmax", "--lr", "inf"], '"lr"', "'inf' is not a finite number"),
    (["--model", "softmax", "--lr", "-1"], '"lr"', "must be a finite number > 0, got -1"),
    (["--model", "softmax", "--softmax.hidden", "[0]"], '"softmax.hidden"', "must be a positive integer"),
    (["--model", "softmax", "--data.batch_size", "0"], '"data.batch_size"', "must be a positive integer"),
    (["--model", "mlp"], '"model"', "mlp"),
    (
        ["--model", "cnn", "--cnn.filter_sizes", "[5,40]"],
        "--cnn.filter_sizes",
        "kernel_size=40 leaves nothing of a 28x28",
    ),
    (["--model", "cnn", "--cnn.tta", "on"], '"cnn.tta"', "on"),
]


@pytest.mark.parametrize("argv,key,message", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, key, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.PROGRAM.parse(["fit", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: " in error and key in error, error  # the option named
    assert message in error, error


def test_an_explicit_option_wins_over_quick():
    _, args = TASK.PROGRAM.parse(
        ["fit", "--model", "softmax", "--quick", "--softmax.hidden", "[7]", "--sweep_epochs", "1"]
        + ["--softmax.final_epochs", "4"]
    )
    assert (args.softmax.hidden, args.sweep_epochs, args.softmax.final_epochs) == ([7], 1, 4)
    assert args.data.train_subset == 2000 and args.quick
    _, args = TASK.PROGRAM.parse(["fit", "--model", "cnn", "--cnn.filters", "5", "--quick"])  # wherever it stands
    assert args.cnn.filters == 5 and args.cnn.hidden == TASK.QUICK["cnn"]["hidden"]


# ---------------------------------------------------------------- several processes


@pytest.mark.ddp
def test_digit_classification_ddp_matches_one_process(tmp_path, mnist_cache, run_script):
    cache = mnist_cache(tmp_path / "cache", n_train=300, n_test=60)
    common = [
        "--model",
        "softmax",
        "--softmax.hidden",
        "[16,32]",
        "--sweep_epochs",
        "1",
        "--softmax.final_epochs",
        "2",
        "--max_shift",
        "0",
        "--max_rotation",
        "0",
        "--max_scale",
        "0",
        "--elastic_alpha",
        "0",
        "--data.val_size",
        "50",
        "--data.cache_dir",
        str(cache),
    ]
    one = run_script(
        "digit_classification", *common, "--data.batch_size", "16", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path
    )
    two = run_script(
        "digit_classification",
        *common,
        "--data.batch_size",
        "8",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--out",
        str(tmp_path / "two" / "out"),
        cwd=tmp_path,
    )
    r1, r2 = (json.loads((tmp_path / d / "out" / "results.json").read_text()) for d in ("one", "two"))
    assert r2["run"]["world_size"] == 2 and r2["run"]["accelerator"] == "cpu" and r2["run"]["precision"] == "32-true"
    assert r2["run"]["ranks_in_sync"] and len(r2["run"]["parameter_digest_per_rank"]) == 2
    assert r1["chosen"] == r2["chosen"]
    assert_histories_agree(r1["final"]["history"], r2["final"]["history"])
    assert r1["test_acc"] == r2["test_acc"] and r2["test_size"] == 60  # rank zero tests on all the digits
    assert_same_parameters(tmp_path / "one/out/checkpoints/last.ckpt", tmp_path / "two/out/checkpoints/last.ckpt")
    assert_written_once(two, "[done]", tmp_path / "two" / "out")
    assert_written_once(one, "[done]", tmp_path / "one" / "out")


# ---------------------------------------------------------------- faults and kills


def test_a_nan_loss_stops_the_run_and_publishes_nothing(tmp_path, mnist_cache, run_cli):
    cache = mnist_cache(tmp_path / "cache", n_train=150, n_test=20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"previous": true}\n')
    proc = run_cli(
        "digit_classification",
        "--model",
        "softmax",
        "--softmax.hidden",
        "[8,16]",
        "--sweep_epochs",
        "2",
        "--softmax.final_epochs",
        "1",
        "--data.val_size",
        "50",
        "--data.batch_size",
        "10",  # 10 steps an epoch: the training loss diverges before the first validation
        "--lr",
        "1e6",
        "--data.cache_dir",
        str(cache),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "[done]" not in proc.stdout
    # NaN or infinite, whichever the divergence reaches first.
    assert re.match(
        r"digit_classification: error: the training loss is (nan|-?inf) at epoch \d+, step \d+ \(batch "
        r"\d+ of the epoch\): the training diverged; lower the learning rate \(--lr\)",
        last_line(proc),
    )
    assert json.loads((out / "results.json").read_text()) == {"previous": True}, "the previous run was touched"


def test_sigkill_never_touches_the_previous_run(tmp_path, mnist_cache):
    """Kill a rerun twice, during its final training and (resumed) while it writes its outputs: the
    previous run's folder stays byte for byte as it was, the killed run's work stays for --resume."""
    cache = mnist_cache(tmp_path / "cache", n_train=300, n_test=40)
    args = [
        "--model",
        "softmax",
        "--softmax.hidden",
        "[8]",
        "--sweep_epochs",
        "1",
        "--softmax.final_epochs",
        "2",
        "--data.val_size",
        "50",
        "--data.batch_size",
        "10",
        "--ckpt_every_n_steps",
        "5",
        "--data.cache_dir",
        str(cache),
        "--out",
        str(tmp_path / "out"),
    ]
    out, work = tmp_path / "out", tmp_path / ".out.partial"
    # The previous run's folder (its content does not matter, only that nothing touches it).
    storage.write_json(out / "results.json", {"previous": True})
    storage.write_text(out / "learning_curves.png", "previous figure")
    storage.write_text(out / "checkpoints" / "best.ckpt", "previous checkpoint")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    env = {k: v for k, v in os.environ.items() if k != "CUSTOMOPS_MIRROR"}
    for i, (trigger, resume) in enumerate(
        ((work / "checkpoints" / "last.ckpt", []), (work / "results.json", ["--resume"]))
    ):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "digit_classification.py"),
                "fit",
                *args,
                *resume,
                "--trainer.accelerator",
                "cpu",
                "--trainer.enable_progress_bar",
                "false",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not trigger.is_file():
                assert proc.poll() is None, f"kill {i + 1}: the run ended before {trigger.name} appeared"
                assert time.monotonic() < deadline
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before, f"kill {i + 1} changed the previous run's folder"
        assert work.is_dir(), "the killed run's own work is kept for --resume"


# Out of the default run: about 1 run in 10 only one rank's line reaches stderr before the
# launcher's exit ends the other process (a race in shutting down, not in the NaN stop itself).
@pytest.mark.slow
@pytest.mark.ddp
def test_a_nan_loss_stops_every_ddp_rank_at_the_same_step(tmp_path, mnist_cache, run_cli):
    cache = mnist_cache(tmp_path / "cache", n_train=150, n_test=20)
    proc = run_cli(
        "digit_classification",
        "--model",
        "softmax",
        "--softmax.hidden",
        "[8,16]",
        "--sweep_epochs",
        "2",
        "--softmax.final_epochs",
        "1",
        "--data.val_size",
        "50",
        "--data.batch_size",
        "12",
        "--lr",
        "1e6",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--data.cache_dir",
        str(cache),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("digit_classification: error:")]
    # The loss is summed over the ranks before the check: both stop at the same step, none hangs.
    assert len(errors) == 2 and errors[0] == errors[1] and "the training loss is " in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, mnist_cache, run_script, run_cli):
    cache = mnist_cache(tmp_path / "cache", n_train=1000, n_test=100)
    args = [
        "--model",
        "softmax",
        "--softmax.hidden",
        "[16]",
        "--sweep_epochs",
        "1",
        "--softmax.final_epochs",
        "3",
        "--max_shift",
        "1",
        "--data.val_size",
        "50",
        "--data.batch_size",
        "8",
        "--ckpt_every_n_steps",
        "20",
        "--data.cache_dir",
        str(cache),
    ]
    run_script("digit_classification", *args, "--out", str(tmp_path / "whole"), cwd=tmp_path)

    out = tmp_path / "killed"
    last = tmp_path / ".killed.partial" / "checkpoints" / "last.ckpt"  # the final training's, not the sweep's
    env = {k: v for k, v in os.environ.items() if k != "CUSTOMOPS_MIRROR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "digit_classification.py"),
            "fit",
            *args,
            "--out",
            str(out),
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not last.is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not publish anything"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"the checkpoint at step {step} is not mid-epoch"
    print(f"killed; resuming from the checkpoint of step {step} (epoch {step // STEPS_PER_EPOCH + 1})")

    # --resume and --out alone: the recipe is the one the killed run saved in its config.yaml.
    proc = run_cli("digit_classification", "--out", str(out), "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not resumable" not in proc.stderr  # Lightning sees the loaders as resumable
    whole, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "killed"))
    assert [r["epoch"] for r in resumed["final"]["history"]] == [1, 2, 3]
    assert resumed["final"]["history"] == whole["final"]["history"]
    assert resumed["test_acc"] == whole["test_acc"]
    for key, value in state(tmp_path / "whole" / "checkpoints" / "last.ckpt").items():
        assert torch.equal(value, state(out / "checkpoints" / "last.ckpt")[key]), key
    assert not (tmp_path / ".killed.partial").exists()
    # One run, one log: the resumed attempt continued the killed one's version, with per-step losses.
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "train_loss_step" in rows[0] and any(r.startswith("0,") for r in rows[1:])


# ---------------------------------------------------------------- one run per folder, clean stops


def test_a_second_run_on_the_same_out_refuses_at_once(tmp_path, monkeypatch):
    first = storage.RunLock(tmp_path / "out")  # as the first run holds it, from its start to its end
    first.acquire()
    try:
        monkeypatch.setattr(TASK, "make_datamodule", lambda args: pytest.fail("the second run read the data"))
        with pytest.raises(RunInUseError, match=f"{tmp_path / 'out'} is in use by another run \\(pid {os.getpid()}"):
            TASK.main(["fit", "--model", "softmax", "--out", str(tmp_path / "out"), "--trainer.accelerator", "cpu"])
    finally:
        first.release()


def _stop_run(tmp_path: Path, cache: Path, *options: str) -> list[str]:
    return [
        "--model",
        "softmax",
        "--softmax.hidden",
        "[8]",
        "--sweep_epochs",
        "1",
        "--softmax.final_epochs",
        "3",
        "--data.val_size",
        "50",
        "--data.batch_size",
        "8",
        "--ckpt_every_n_steps",
        "5",
        "--data.cache_dir",
        str(cache),
        "--out",
        str(tmp_path / "out"),
        *options,
    ]


def _start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("CUSTOMOPS_MIRROR", "LOCAL_RANK", "RANK")}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "digit_classification.py"), "fit", *args]
        + ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"],
        cwd=cwd,
        env={**environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file():
        assert proc.poll() is None, f"the run ended before {path.name} appeared:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {path.name} appeared"
        time.sleep(0.01)


STOPPED = re.compile(
    r"digit_classification: stopped by SIGTERM at epoch (\d+), step (\d+); nothing was published; resume with --resume"
)


def test_sigterm_stops_the_run_cleanly_and_resume_continues_it(tmp_path, mnist_cache, run_script):
    """SIGTERM (what SLURM's preemption, `timeout` and `kill` send) mid-training: one line, status 143,
    nothing published, and a checkpoint of the step it stopped at, which --resume continues."""
    cache = mnist_cache(tmp_path / "cache", n_train=300, n_test=40)
    args = _stop_run(tmp_path, cache)
    proc = _start(args, tmp_path)
    work = tmp_path / ".out.partial"
    try:
        _wait_for(work / "checkpoints" / "last.ckpt", proc)  # the final training's (the sweep's are under sweep/)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    stopped = STOPPED.fullmatch(stderr.strip().splitlines()[-1])
    assert stopped, stderr[-3000:]
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()
    checkpoint = torch.load(work / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == int(stopped.group(2))  # saved at the step it stopped after
    assert not (tmp_path / ".out.lock").exists()  # released
    run_script("digit_classification", *args, "--resume", cwd=tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["epoch"] for row in results["final"]["history"]] == [1, 2, 3]


def _rank_pids(marker: str) -> dict[int, int]:
    """{local rank: pid} of the processes started with `marker` in their environment (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            env = dict(line.split("=", 1) for line in (entry / "environ").read_text().split("\0") if "=" in line)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if env.get("CUSTOMOPS_TEST_MARK") == marker:
            found[int(env.get("LOCAL_RANK", "0"))] = int(entry.name)
    return found


@pytest.mark.ddp
@pytest.mark.parametrize("rank", [0, 1])
def test_sigterm_to_one_ddp_rank_stops_every_rank_within_seconds(tmp_path, mnist_cache, rank):
    if not Path("/proc/self/environ").is_file():
        pytest.skip("finds the ranks' processes through /proc")
    cache = mnist_cache(tmp_path / "cache", n_train=300, n_test=40)
    args = _stop_run(tmp_path, cache, "--softmax.final_epochs", "20", "--trainer.devices", "2")
    marker = f"{os.getpid()}-{rank}-{time.monotonic()}"
    proc = _start([*args, "--trainer.strategy", "ddp"], tmp_path, CUSTOMOPS_TEST_MARK=marker)
    try:
        _wait_for(tmp_path / ".out.partial" / "checkpoints" / "last.ckpt", proc)
        pids = _rank_pids(marker)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[rank], signal.SIGTERM)  # one rank only, as a scheduler might
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert took < 20, f"the ranks took {took:.0f} s to stop"  # not gloo's 30-minute timeout
    assert sum(bool(STOPPED.fullmatch(line)) for line in stderr.splitlines()) == 1, stderr[-3000:]
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.partial" / "checkpoints" / "last.ckpt").is_file()
    deadline = time.monotonic() + 10
    while _rank_pids(marker) and time.monotonic() < deadline:  # the other rank's process ends on its own
        time.sleep(0.1)
    assert not _rank_pids(marker), "a rank is still running"
