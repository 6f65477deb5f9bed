"""runs.cli: the flags every program shares; resume's check of what it resumes; the Trainer options checked
before any data is read; every fault the user fixes in one line (status 2 for an option, 1 for the rest,
128 + the signal for a stop)."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import signal

import pytest
import torch
import yaml

from lightning_modules.runs import cli
from lightning_modules.runs.errors import OptionError, RunError, Stopped
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
    # --resume and --out alone: the rest of the recipe is the saved one; an explicit option that changes
    # nothing the run computes still wins (one that does is refused: test_resume_refuses_...).
    _, resumed = digit_classification.PROGRAM.parse(
        ["fit", "--out", str(tmp_path / "o"), "--resume", "--trainer.enable_progress_bar", "false"]
    )
    assert (resumed.model, resumed.lr, resumed.resume, resumed.trainer.enable_progress_bar) == (
        "cnn",
        0.003,
        True,
        False,
    )
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


# ---------------------------------------------------------------- resume checks what it resumes


def _interrupted(tmp_path, *options: str):
    """An interrupted digits run in tmp_path/o: its saved config.yaml (and a checkpoint) in .o.partial."""
    from lightning_modules.runs.storage import RunFolder, write_text
    from lightning_modules.tasks import digit_classification

    argv = ["fit", "--model", "softmax", "--softmax.hidden", "[16]", "--out", str(tmp_path / "o"), *options]
    _, recipe = digit_classification.PROGRAM.parse(argv)
    work = RunFolder(recipe.out).work
    cli.save_run_config(recipe, work)
    write_text(work / "checkpoints" / "last.ckpt", "a checkpoint")
    return digit_classification.PROGRAM


CHANGED = [
    (["--lr", "0.5"], "--lr 0.002 (now 0.5)"),
    (["--data.batch_size", "16"], "--data.batch_size 128 (now 16)"),
    (["--seed", "3"], "--seed 0 (now 3)"),
    (["--softmax.final_epochs", "4"], "--softmax.final_epochs 40 (now 4)"),
    (["--softmax.hidden", "[32]"], "--softmax.hidden [16] (now [32])"),
    (["--trainer.precision", "bf16-mixed"], '--trainer.precision "32-true" (now "bf16-mixed")'),
]


@pytest.mark.parametrize("option,named", CHANGED, ids=[" ".join(o) for o, _ in CHANGED])
def test_resume_refuses_an_option_that_changes_what_the_run_trains(tmp_path, capsys, option, named):
    program = _interrupted(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        program.parse(["fit", "--out", str(tmp_path / "o"), "--resume", *option])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(
        f"customops-digits: error: --resume: the interrupted run in {tmp_path / 'o'} was started with other options: "
    )
    assert named in error and "to start afresh, run without --resume" in error
    assert (tmp_path / ".o.partial" / "checkpoints" / "last.ckpt").is_file()  # nothing touched


def test_resume_accepts_options_that_change_nothing_it_computes(tmp_path):
    program = _interrupted(tmp_path, "--lr", "0.01")
    _, recipe = program.parse(
        ["fit", "--out", str(tmp_path / "o"), "--resume", "--lr", "0.01", "--trainer.enable_progress_bar", "false"]
        + ["--trainer.log_every_n_steps", "3", "--ckpt_every_n_steps", "7"]
    )
    assert (recipe.lr, recipe.trainer.enable_progress_bar, recipe.ckpt_every_n_steps) == (0.01, False, 7)


def test_resume_may_raise_or_drop_the_captioners_time_limit(tmp_path, capsys):
    """--max_minutes guards a run, it is not part of what is trained: a run it stopped resumes with a
    longer limit or none."""
    from lightning_modules.runs.storage import RunFolder, write_text
    from lightning_modules.tasks import image_captioning

    base = ["fit", "--cell", "rnn", "--out", str(tmp_path / "o")]
    _, recipe = image_captioning.PROGRAM.parse([*base, "--max_minutes", "1"])
    work = RunFolder(recipe.out).work
    cli.save_run_config(recipe, work)
    write_text(work / "checkpoints" / "last.ckpt", "a checkpoint")
    _, resumed = image_captioning.PROGRAM.parse([*base, "--resume"])
    assert resumed.resume and resumed.max_minutes == 1  # the saved recipe, limit included
    _, raised = image_captioning.PROGRAM.parse([*base, "--resume", "--max_minutes", "30"])
    _, dropped = image_captioning.PROGRAM.parse([*base, "--resume", "--max_minutes", "null"])
    assert (raised.max_minutes, dropped.max_minutes) == (30, None)
    with pytest.raises(SystemExit) as exit_info:  # what is trained still may not change
        image_captioning.PROGRAM.parse([*base, "--resume", "--lr", "0.5"])
    assert exit_info.value.code == 2 and "--lr" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    from lightning_modules.tasks import digit_classification

    with pytest.raises(SystemExit) as exit_info:
        digit_classification.PROGRAM.parse(["fit", "--out", str(tmp_path / "o"), "--resume"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"customops-digits: error: --resume: nothing to resume: no run was interrupted in {tmp_path / 'o'} "
        f"(there is no {tmp_path / '.o.partial' / 'config.yaml'}); run without --resume to start one"
    )
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text("{}")  # a published run is never trained over silently
    with pytest.raises(SystemExit):
        digit_classification.PROGRAM.parse(["fit", "--model", "softmax", "--out", str(tmp_path / "o"), "--resume"])
    assert f"nothing to resume: {tmp_path / 'o'} holds a finished run (results.json)" in capsys.readouterr().err


# ---------------------------------------------------------------- Trainer options checked up front

TRAINER_OPTIONS = [
    (["--trainer.precision", "17"], 'Parser key "trainer.precision"'),
    (["--trainer.strategy", "fsdpx"], 'Parser key "trainer.strategy"'),
    (["--trainer.strategy", "ddp_spawn"], 'Parser key "trainer.strategy"'),  # not offered: results stay in the children
    (
        ["--trainer.accelerator", "cpu", "--trainer.devices", "0,1"],
        "the Trainer options do not work here (--trainer.accelerator cpu, --trainer.devices 0,1",
    ),
    (["--trainer.num_nodes", "2"], "--trainer.num_nodes 2: start the run on every machine with torchrun or SLURM"),
]


@pytest.mark.parametrize("option,named", TRAINER_OPTIONS, ids=[" ".join(o) for o, _ in TRAINER_OPTIONS])
def test_trainer_options_are_checked_before_any_data_is_read(tmp_path, capsys, option, named):
    from lightning_modules.tasks import digit_classification

    with pytest.raises(SystemExit) as exit_info:
        digit_classification.PROGRAM.parse(["fit", "--model", "softmax", "--out", str(tmp_path / "o"), *option])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("customops-digits: error: ") and named in error, error
    assert not list(tmp_path.iterdir())


def test_an_accelerator_this_machine_lacks_is_refused_up_front(tmp_path, capsys):
    from lightning_modules.tasks import image_captioning

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_info:
        image_captioning.PROGRAM.parse(["fit", "--trainer.accelerator", "gpu", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "the Trainer options do not work here (--trainer.accelerator gpu" in capsys.readouterr().err


# ---------------------------------------------------------------- one line and a status for every fault


def _main(exc: BaseException, capsys) -> tuple[int | str, str]:
    def program():
        raise exc

    with pytest.raises(SystemExit) as exit_info:
        cli.main(program, "prog")
    return exit_info.value.code, capsys.readouterr().err


def test_main_ends_each_kind_of_fault_in_one_line_with_its_status(capsys):
    assert _main(OptionError("--x: no"), capsys) == (2, "prog: error: --x: no\n")
    assert _main(RunError("data.txt:3 is bad"), capsys) == ("prog: error: data.txt:3 is bad", "")  # status 1
    status, err = _main(Stopped(signal.SIGTERM, "at epoch 2, step 40"), capsys)
    assert (status, err) == (
        143,
        "prog: stopped by SIGTERM at epoch 2, step 40; nothing was published; resume with --resume\n",
    )
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    status, err = _main(SIGTERMException(), capsys)  # Lightning's own stop (a SystemExit of status 0) is a stop too
    assert status == 143 and err.startswith("prog: stopped by SIGTERM")


def test_a_full_disk_or_an_unwritable_folder_is_named_with_the_option_that_chose_it(tmp_path):
    from lightning_modules.tasks import digit_classification

    _, recipe = digit_classification.PROGRAM.parse(
        ["fit", "--model", "softmax", "--out", str(tmp_path / "o"), "--data.cache_dir", str(tmp_path / "cache")]
    )
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".o.partial" / "checkpoints" / "best.ckpt"))
    assert cli.os_error_line(full, recipe) == (
        f"{tmp_path / '.o.partial' / 'checkpoints' / 'best.ckpt'} (in --out): No space left on device; "
        "free some space (or choose another folder) and run again with --resume"
    )
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "cache" / "MNIST"))
    assert cli.os_error_line(denied, recipe) == (
        f"{tmp_path / 'cache' / 'MNIST'} (in --data.cache_dir): Permission denied; make it writable, or choose "
        "another folder"
    )
    assert cli.os_error_line(OSError("no file"), recipe) is None  # not one a path fixes: left as it is

    def fit(args):
        raise full

    program = dataclasses.replace(digit_classification.PROGRAM, fit=fit)
    with pytest.raises(RunError, match=r"best.ckpt \(in --out\): No space left on device"):
        program.run(["fit", "--model", "softmax", "--out", str(tmp_path / "o")])
