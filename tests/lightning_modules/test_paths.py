"""paths: runs under ./runs of the working folder, the cache under $CUSTOMOPS_CACHE or the user's cache
folder; nothing under the installed package."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_modules import paths
from lightning_modules.tasks import benchmark_training, digit_classification, image_captioning, transfer_learning


def test_programs_write_under_runs_in_the_working_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = [
        digit_classification.PROGRAM.parse(["fit", "--model", "cnn"])[1].out,
        transfer_learning.PROGRAM.parse(["fit"])[1].out,
        image_captioning.PROGRAM.parse(["fit"])[1].out,
        image_captioning.PROGRAM.parse(["fit", "--overfit", "--cell", "lstm"])[1].out,
        benchmark_training.PROGRAM.parse(["fit"])[1].out,
    ]
    for out in outs:
        assert out.is_relative_to(tmp_path / "runs"), out
    assert outs[0] == tmp_path / "runs" / "digit_classification" / "cnn" and outs[3].name == "overfit_lstm"
    package = Path(paths.__file__).resolve().parent
    assert not any(out.is_relative_to(package) for out in outs)


def test_the_cache_is_customops_cache_else_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMOPS_CACHE", str(tmp_path / "mine"))
    assert paths.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CUSTOMOPS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.default_cache_dir() == tmp_path / "xdg" / "customops"  # platformdirs' user cache folder


def test_a_mirror_that_is_not_a_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMOPS_MIRROR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="CUSTOMOPS_MIRROR points at .*absent, which is not a folder"):
        paths.mirror_root()
