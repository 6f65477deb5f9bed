"""data.captions: the Flickr8k reader on a tiny set written here (the COCO reader: test_captioning.py, with
the DataModule that reads it)."""

from __future__ import annotations

import pytest

from lightning_modules.data.captions import load_flickr8k


def test_flickr8k_loader(tmp_path, make_flickr):
    splits = load_flickr8k(make_flickr(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "dev": 1, "test": 1}
    assert all(len(c) == 5 for s in splits.values() for c in s.captions)
    (tmp_path / "Images" / "d1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="dev images are missing"):
        load_flickr8k(tmp_path)
