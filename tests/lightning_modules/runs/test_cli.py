"""runs.cli: the flags every program shares, and errors the user fixes ending in one line with status 1."""

from __future__ import annotations

import argparse
import importlib

import pytest
import yaml

from lightning_modules.runs import cli
from tests.helpers import last_line

TASKS = ["digit_classification", "transfer_learning", "image_captioning", "benchmark_training"]


def _fit_help(module: str, capsys) -> str:
    task = importlib.import_module(f"lightning_modules.tasks.{module}")
    with pytest.raises(SystemExit) as exit_info:
        task.PROGRAM.parse(["fit", "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module", TASKS)
def test_every_program_has_the_standard_options(module, capsys):
    text = _fit_help(module, capsys)
    for flag in (
        "--config",
        "--print_config",
        "--trainer.accelerator",
        "--trainer.devices",
        "--trainer.strategy",
        "--trainer.num_nodes",
        "--trainer.precision",
        "--trainer.accumulate_grad_batches",
        "--trainer.gradient_clip_val",
        "--trainer.limit_train_batches",
        "--trainer.limit_val_batches",
        "--trainer.profiler",
        "--seed",
        "--data.batch_size",
        "--data.root",
        "--data.cache_dir",
        "--out",
        "--resume",
    ):
        assert flag in text, f"{module}: {flag}"


@pytest.mark.parametrize("module", TASKS)
def test_every_option_has_a_help_line_and_a_real_default(module, capsys):
    task = importlib.import_module(f"lightning_modules.tasks.{module}")
    fit = task.PROGRAM.parser()._subcommands_action._name_parser_map["fit"]
    checked = 0
    for action in fit._actions:
        flag = action.option_strings[-1] if action.option_strings else action.dest
        if flag in ("--help", "--config", "--print_config") or action.help == "Path to a configuration file.":
            continue  # argparse's own, and each option group's "a config file for this group"
        assert action.help and action.help.strip(), f"{module}: {flag} has no help line"
        assert action.required or action.default is not argparse.SUPPRESS, f"{module}: {flag} has no default"
        checked += 1
    assert checked > 20, module
    text = _fit_help(module, capsys)
    assert text.count("default:") + text.count("required") >= checked  # and --help shows them


def test_a_config_file_and_print_config_round_trip(tmp_path, capsys):
    from lightning_modules.tasks import digit_classification

    (tmp_path / "run.yaml").write_text("model: cnn\nlr: 0.001\ncnn:\n  filters: 8\ntrainer:\n  precision: bf16-mixed\n")
    with pytest.raises(SystemExit) as exit_info:
        digit_classification.PROGRAM.parse(
            ["fit", "--config", str(tmp_path / "run.yaml"), "--seed", "4", "--print_config"]
        )
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["model"], printed["lr"], printed["cnn"]["filters"], printed["seed"]) == ("cnn", 0.001, 8, 4)
    assert printed["trainer"]["precision"] == "bf16-mixed" and printed["cnn"]["hidden"] == [64, 256, 512]
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(printed))
    _, again = digit_classification.PROGRAM.parse(["fit", "--config", str(tmp_path / "printed.yaml")])
    assert (again.model, again.lr, again.cnn.filters, again.seed, again.trainer.precision) == (
        "cnn",
        0.001,
        8,
        4,
        "bf16-mixed",
    )


def test_a_run_saves_its_config_and_resume_reads_it(tmp_path, monkeypatch):
    from lightning_modules.runs.storage import RunFolder
    from lightning_modules.tasks import digit_classification

    _, recipe = digit_classification.PROGRAM.parse(
        ["fit", "--model", "cnn", "--lr", "0.003", "--out", str(tmp_path / "o")]
    )
    work = RunFolder(recipe.out).work
    cli.save_run_config(recipe, work)
    loaded = cli.load_run_config(work)
    assert loaded["model"] == "cnn" and loaded["lr"] == 0.003 and loaded["trainer"]["precision"] == "32-true"
    # --resume and --out alone: the rest of the recipe is the saved one; an explicit option still wins.
    _, resumed = digit_classification.PROGRAM.parse(["fit", "--out", str(tmp_path / "o"), "--resume", "--seed", "5"])
    assert (resumed.model, resumed.lr, resumed.seed, resumed.resume) == ("cnn", 0.003, 5, True)
    with pytest.raises(FileNotFoundError, match="saved no configuration"):
        cli.load_run_config(tmp_path)


def test_data_errors_end_in_one_line_and_status_1(tmp_path, hymenoptera, run_cli):
    root = hymenoptera(tmp_path / "hymenoptera_data")
    (root / "train" / "ants" / "ants_0.png").write_bytes(b"")
    proc = run_cli(
        "transfer_learning",
        "--backbone",
        "small_cnn",
        "--weights",
        "none",
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"transfer_learning: error: hymenoptera_data: 1 unreadable image: {root}")
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.glob(".out.*")) and not (tmp_path / "out").exists(), "nothing is left behind"
