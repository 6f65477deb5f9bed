"""runs.storage: run folders published all at once, atomic and strict writes, only rank zero writing,
safe loading of torch files (crafted pickles refused, truncated files named), kills, one run per
folder (the lock), --out checked, checkpoints written atomically (a kill or a full disk mid-rewrite)."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from lightning_modules.captioning import CaptioningModule
from lightning_modules.classifier import ClassifierModule
from lightning_modules.pretrained import load_state_dict_by_order, mobilenet_v2_features
from lightning_modules.runs import ranks, storage, training
from lightning_modules.runs.errors import (
    DataError,
    NonFiniteError,
    OptionError,
    RunInUseError,
    Stopped,
    UnsafeFileError,
)
from tests.helpers import ROOT, crafted


def test_run_folder_publishes_all_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"old": true}')
    (out / "stale.png").write_text("from the previous run")
    with storage.RunFolder(out) as run:
        storage.write_json(run.work / "results.json", {"new": True})
        # While the run is going, the previous results stay whole and untouched.
        assert json.loads((out / "results.json").read_text()) == {"old": True}
    assert json.loads((out / "results.json").read_text()) == {"new": True}
    assert not (out / "stale.png").exists(), "old and new files mixed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_run_leaves_previous_results_and_its_partial_folder(tmp_path):
    out = tmp_path / "run"
    with storage.RunFolder(out) as run:
        storage.write_text(run.work / "results.json", "first")
    with pytest.raises(RuntimeError):
        with storage.RunFolder(out) as run:
            storage.write_text(run.work / "results.json", "second, half done")
            raise RuntimeError("killed")
    assert (out / "results.json").read_text() == "first"
    assert (run.work / "results.json").read_text() == "second, half done"
    # --resume keeps the partial folder (with its checkpoints); a fresh run clears it.
    with storage.RunFolder(out, resume=True) as again:
        assert (again.work / "results.json").exists()
    with storage.RunFolder(out) as fresh:
        assert not (fresh.work / "results.json").exists()
    assert not (out / "results.json").exists()


def test_run_folder_refuses_to_replace_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "reports" / "other_task").mkdir(parents=True)
    with pytest.raises(OptionError, match="not a run folder"):
        with storage.RunFolder(tmp_path / "reports"):
            pass
    assert (tmp_path / "reports" / "other_task").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # and its lock was released


def test_write_json_is_strict_and_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ValueError):
        storage.write_json(tmp_path / "bad.json", {"loss": math.nan})
    assert list(tmp_path.iterdir()) == []
    storage.write_json(tmp_path / "ok.json", {"loss": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["ok.json"]


def test_only_global_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not ranks.is_global_zero()
    with storage.RunFolder(tmp_path / "run") as run:
        pass
    assert not run.work.exists() and not (tmp_path / "run").exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # rank zero of the second machine is not global rank zero
    assert not ranks.is_global_zero()
    monkeypatch.setenv("RANK", "0")
    assert ranks.is_global_zero()


# --------------------------------------------------------------------------- security: crafted pickles


def test_the_crafted_pickle_runs_its_payload_when_unpickled(tmp_path):
    # The other tests are meaningful only if loading without weights_only would run the payload.
    marker = tmp_path / "ran"
    torch.load(crafted(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("loader", ["load_checkpoint", "classifier", "captioning", "weights", "mobilenet_env"])
def test_every_checkpoint_and_weight_loader_refuses_a_crafted_pickle(tmp_path, monkeypatch, loader):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "evil.ckpt", marker, state_dict={"w": torch.zeros(2)})
    load = {
        "load_checkpoint": lambda: storage.load_checkpoint(path),
        "classifier": lambda: training.load_module(ClassifierModule, path),
        "captioning": lambda: training.load_module(CaptioningModule, path),
        "weights": lambda: load_state_dict_by_order(torch.nn.Linear(2, 2), path),
        "mobilenet_env": lambda: (
            monkeypatch.setenv("CUSTOMOPS_MOBILENET_WEIGHTS", str(path)),
            mobilenet_v2_features("imagenet"),
        ),
    }[loader]
    with pytest.raises(UnsafeFileError, match=f"{path}: refused to load"):
        load()
    assert not marker.exists(), "the payload ran"


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{path}: cannot read this checkpoint"):
        storage.load_checkpoint(path)


# --------------------------------------------------------------------------- kills


def test_resume_drops_files_a_killed_writer_left(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with storage.RunFolder(out) as run:
            storage.write_text(run.work / "results.json", "partial")
            (run.work / ".learning_curves.png.123.abcdef12.tmp.png").write_bytes(b"")  # a write cut short
            raise KeyboardInterrupt
    with storage.RunFolder(out, resume=True) as run:
        pass
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


@pytest.mark.parametrize("cut", ["between the renames", "before deleting the old run"])
def test_a_publish_cut_by_a_kill_is_finished_by_the_next_run(tmp_path, cut):
    out = tmp_path / "run"
    storage.write_text(out / "results.json", "previous")
    folder = storage.RunFolder(out)
    storage.write_text(folder.work / "results.json", "finished")
    os.replace(out, folder.old)  # publish's first rename
    if cut == "before deleting the old run":
        os.replace(folder.work, out)
    with storage.RunFolder(out, resume=True):
        assert (out / "results.json").read_text() == "finished" and not folder.old.exists()


# ---------------------------------------------------------------- one run per folder, --out checked


def test_a_second_run_on_the_same_out_refuses_at_once_naming_the_first(tmp_path):
    out = tmp_path / "run"
    with storage.RunFolder(out) as first:
        storage.write_text(first.work / "checkpoints" / "last.ckpt", "the first run's checkpoint")
        storage.write_json(first.work / "results.json", {"first": True})
        with pytest.raises(RunInUseError) as refused:
            with storage.RunFolder(out):
                pass
        assert f"{out} is in use by another run (pid {os.getpid()} on {socket.gethostname()}" in str(refused.value)
        assert (first.work / "checkpoints" / "last.ckpt").read_text() == "the first run's checkpoint"
        with pytest.raises(RunInUseError):  # --resume of a run that is still going refuses too
            with storage.RunFolder(out, resume=True):
                pass
    with storage.RunFolder(out):  # released when the first one ended
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_lock_of_a_killed_run_is_taken_over_with_a_notice(tmp_path, capsys):
    out = tmp_path / "run"
    # What a SIGKILLed run leaves: its record in a lock file that no process holds any more.
    (tmp_path / ".run.lock").write_text(json.dumps({"pid": 999999, "host": "h", "started": "t", "command": "c"}))
    with storage.RunFolder(out):
        pass
    assert "taking over the lock of a run that ended without releasing it (pid 999999 on h" in capsys.readouterr().out


def test_the_lock_is_released_however_the_run_ends(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Stopped):
        with storage.RunFolder(out):
            raise Stopped(signal.SIGTERM, "at epoch 1, step 3")
    with storage.RunFolder(out, resume=True):  # not refused: the stopped run released it
        pass


def test_out_must_be_a_run_folder_or_absent(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    with pytest.raises(OptionError, match=r"--out .*notes.txt is a file, not a run folder: choose another --out"):
        with storage.RunFolder(notes):
            pass
    assert notes.read_text() == "the user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing beside it either
    (tmp_path / "empty").mkdir()
    storage.check_out(tmp_path / "empty")  # an empty folder or a run's is fine
    storage.check_out(tmp_path / "absent")


# ---------------------------------------------------------------- atomic checkpoints


def _module_checkpoint(value: float) -> dict:
    return {"state_dict": {"w": torch.full((256, 256), value)}, "global_step": int(value)}


def test_checkpoints_are_written_in_their_own_folder_and_renamed_into_place(tmp_path, monkeypatch):
    """The temporary file is beside the checkpoint (so the rename never crosses file systems, never a
    copy), flushed to disk before the rename; Lightning's Trainers use this writer."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = training.AtomicCheckpointIO()
    io.save_checkpoint(_module_checkpoint(1.0), path)
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((Path(a), Path(b))) or real_replace(a, b))
    io.save_checkpoint(_module_checkpoint(2.0), path)
    [(tmp, target)] = renamed
    assert target == path and tmp.parent == path.parent and str(tmp) in synced
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    trainer = training.make_trainer(_runs_args(), tmp_path, [], 1, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, training.AtomicCheckpointIO)


def test_a_full_disk_while_rewriting_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = training.AtomicCheckpointIO()
    io.save_checkpoint(_module_checkpoint(1.0), path)
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: FullDisk(real_open(p, mode, *a, **k)))
    with pytest.raises(OSError) as full:
        io.save_checkpoint(_module_checkpoint(2.0), path)
    monkeypatch.undo()
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(path)  # the checkpoint, not a temporary
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


_KILLED_WRITER = """
import os, signal, sys, torch
from lightning_modules.runs import training
path, point = sys.argv[1], sys.argv[2]
io = training.AtomicCheckpointIO()
io.save_checkpoint({"state_dict": {"w": torch.full((512, 512), 1.0)}, "global_step": 1}, path)
real_write = None
if point == "write":  # killed half way through writing the new bytes
    import builtins
    real_open = builtins.open
    class Half:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()
        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2]); self.f.flush(); os.kill(os.getpid(), signal.SIGKILL)
    builtins.open = lambda p, mode="r", *a, **k: Half(real_open(p, mode, *a, **k))
else:  # killed with the new file whole but not yet renamed into place
    os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
io.save_checkpoint({"state_dict": {"w": torch.full((512, 512), 2.0)}, "global_step": 2}, path)
"""


@pytest.mark.parametrize("point", ["write", "rename"])
def test_a_kill_during_a_checkpoint_rewrite_on_another_file_system_keeps_the_previous_one(tmp_path, point):
    """SIGKILL while last.ckpt is rewritten, with the run folder on /dev/shm (a file system other than
    the system's temporary folder, as a shared --out is): the previous checkpoint stays whole."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second file system at /dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="customops-test-"))
    try:
        path = folder / "checkpoints" / "last.ckpt"
        proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), point], cwd=ROOT, timeout=120)
        assert proc.returncode == -signal.SIGKILL
        assert torch.load(path, weights_only=True)["global_step"] == 1  # whole: the previous checkpoint
        # What the killed writer left is a hidden temporary beside it, which the next run drops.
        assert [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"][0].startswith(".last.ckpt.")
    finally:
        shutil.rmtree(folder)


def test_write_json_names_a_non_finite_number_and_writes_nothing(tmp_path):
    with pytest.raises(NonFiniteError, match=r"results.json: final.history\[1\].val_loss is nan, not a finite number"):
        storage.write_json(
            tmp_path / "results.json", {"final": {"history": [{"val_loss": 1.0}, {"val_loss": math.nan}]}}
        )
    assert not list(tmp_path.iterdir())


def _runs_args():
    from lightning_modules.tasks import digit_classification

    argv = ["fit", "--model", "softmax", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    return digit_classification.PROGRAM.parse(argv)[1]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(OptionError):
        with storage.RunFolder(out) as run:
            storage.write_text(run.work / "config.yaml", "model: softmax\n")
            (run.work / "logs" / "version_0").mkdir(parents=True)  # what a Trainer makes before reading the data
            raise OptionError("--data.val_size 1000 leaves no training digits")
    assert not list(tmp_path.iterdir())
