"""runs.storage: run folders published all at once, atomic and strict writes, only rank zero writing,
safe loading of torch files (crafted pickles refused, truncated files named), kills."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from lightning_modules.captioning import CaptioningModule
from lightning_modules.classifier import ClassifierModule
from lightning_modules.pretrained import load_state_dict_by_order, mobilenet_v2_features
from lightning_modules.runs import ranks, storage, training
from lightning_modules.runs.errors import DataError, UnsafeFileError
from tests.helpers import crafted


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
    with pytest.raises(FileExistsError, match="not a run folder"):
        with storage.RunFolder(tmp_path / "reports"):
            pass
    assert (tmp_path / "reports" / "other_task").is_dir()


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
