"""data.hymenoptera: the ants-vs-bees DataModule on a tiny folder written here, the safe zip extractor, the
download into the cache, and bad images named before training."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import lightning_modules.data.hymenoptera as hymenoptera_data
from lightning_modules.data.hymenoptera import HymenopteraDataModule, safe_extract
from lightning_modules.runs.errors import DataError


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name), text)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "hymenoptera_data/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_safe_extract_refuses_members_leaving_the_folder(tmp_path, evil):
    archive = _zip(tmp_path / "evil.zip", {"hymenoptera_data/ok.txt": "fine", evil: "gotcha"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(ValueError, match="evil.zip: refusing member"):
        safe_extract(archive, dest)
    # Nothing is written, neither the good member nor the escaping one.
    assert not any(dest.rglob("*"))
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_extracts_a_clean_zip(tmp_path):
    archive = _zip(tmp_path / "good.zip", {"hymenoptera_data/train/ants/a.txt": "ant"})
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "hymenoptera_data" / "train" / "ants" / "a.txt").read_text() == "ant"


def test_download_extracts_into_the_cache(tmp_path, monkeypatch):
    def fake_download(url, root):  # stands in for the official zip on an offline machine
        _zip(
            Path(root) / Path(url).name,
            {"hymenoptera_data/train/ants/a.txt": "ant", "hymenoptera_data/val/bees/b.txt": "bee"},
        )

    monkeypatch.setattr(hymenoptera_data, "download_url", fake_download)
    root = hymenoptera_data.download_hymenoptera(tmp_path / "cache")
    assert root == tmp_path / "cache" / "hymenoptera_data"
    assert (root / "val" / "bees" / "b.txt").read_text() == "bee"
    # No temporary extraction folder is left behind.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["hymenoptera_data", "hymenoptera_data.zip"]


def test_datamodule_rejects_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HymenopteraDataModule(tmp_path / "nowhere").setup()
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no val/ folder"):
        HymenopteraDataModule(tmp_path / "half").setup()
    with pytest.raises(ValueError, match="batch_size"):
        HymenopteraDataModule(tmp_path, batch_size=0)


def test_offline_without_a_mirror_names_the_variable_and_the_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(
        DataError,
        match=r"hymenoptera_data: cannot download .*CUSTOMOPS_MIRROR to a folder "
        r"holding hymenoptera_data/ \(train/ants, train/bees",
    ):
        HymenopteraDataModule(cache_dir=tmp_path / "cache").prepare_data()


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_a_bad_hymenoptera_image_is_named_before_training(tmp_path, damage, hymenoptera):
    root = hymenoptera(tmp_path / "hymenoptera_data")
    bad = root / "val" / "bees" / "bees_1.png"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad.write_text("<html>not an image</html>")
    dm = HymenopteraDataModule(root, num_workers=0, image_size=32)
    with pytest.raises(DataError, match=f"hymenoptera_data: 1 unreadable image: {bad} .*replace or delete"):
        dm.setup("fit")
