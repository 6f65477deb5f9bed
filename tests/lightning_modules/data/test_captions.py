"""data.captions: the Flickr8k reader on a tiny set written here (a BOM, unreadable lines named with their
number, an empty split, an image in two splits) (the COCO reader: test_captioning.py, with
the DataModule that reads it)."""

from __future__ import annotations

import json
import re

import pytest

from lightning_modules.data.captions import FLICKR8K_SPLIT_FILES, FLICKR8K_TOKENS, load_captions, load_flickr8k
from lightning_modules.runs.errors import DataError


def test_flickr8k_loader(tmp_path, make_flickr):
    splits = load_flickr8k(make_flickr(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "dev": 1, "test": 1}
    assert all(len(c) == 5 for s in splits.values() for c in s.captions)
    (tmp_path / "Images" / "d1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="dev images are missing"):
        load_flickr8k(tmp_path)


def test_a_byte_order_mark_is_stripped(tmp_path, make_flickr):
    root = make_flickr(tmp_path)
    tokens = root / FLICKR8K_TOKENS
    tokens.write_bytes(b"\xef\xbb\xbf" + tokens.read_bytes())  # as some editors save UTF-8
    splits = load_flickr8k(root)
    assert splits["train"].names[0] == "t1.jpg" and len(splits["train"].captions[0]) == 5  # its first caption kept


@pytest.mark.parametrize(
    "line,message",
    [
        ("t1.jpg#5 A caption without a tab .", "is not '<image>#<k><TAB><caption>'"),
        ("t1.jpg\tA caption without its number .", "is not '<image>#<k><TAB><caption>'"),
    ],
)
def test_a_caption_line_that_cannot_be_read_is_named_with_its_line_number(tmp_path, make_flickr, line, message):
    root = make_flickr(tmp_path)
    tokens = root / FLICKR8K_TOKENS
    lines = tokens.read_text().splitlines()
    tokens.write_text("\n".join([*lines[:3], line, *lines[3:]]) + "\n")
    with pytest.raises(DataError, match=f"flickr8k: {re.escape(str(tokens))}:4 {re.escape(message)}"):
        load_flickr8k(root)


def test_a_token_file_that_is_not_utf8_is_named_with_its_line(tmp_path, make_flickr):
    root = make_flickr(tmp_path)
    tokens = root / FLICKR8K_TOKENS
    lines = tokens.read_bytes().splitlines()
    lines[6] = "t2.jpg#1\tA café .".encode("latin-1")
    tokens.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=f"flickr8k: {re.escape(str(tokens))}:7 is not UTF-8 text"):
        load_flickr8k(root)


def test_an_empty_split_file_is_named(tmp_path, make_flickr):
    root = make_flickr(tmp_path)
    (root / FLICKR8K_SPLIT_FILES["dev"]).write_text("\n")
    with pytest.raises(DataError, match=f"flickr8k: {re.escape(str(root / FLICKR8K_SPLIT_FILES['dev']))} lists no"):
        load_flickr8k(root)


def test_an_image_in_two_splits_is_refused(tmp_path, make_flickr):
    root = make_flickr(tmp_path)
    test_file = root / FLICKR8K_SPLIT_FILES["test"]
    test_file.write_text(test_file.read_text() + "t2.jpg\n")  # a training image, scored at test time
    train_file = root / FLICKR8K_SPLIT_FILES["train"]
    with pytest.raises(
        DataError,
        match=f"flickr8k: t2.jpg is in two splits, {re.escape(str(train_file))}:2 and {re.escape(str(test_file))}:2",
    ):
        load_flickr8k(root)


def test_an_image_in_two_coco_splits_is_refused(tmp_path, make_coco):
    root = make_coco(tmp_path)
    val = json.loads((root / "captions_val.json").read_text())
    (root / "val" / val["images"][0]["file_name"]).unlink()
    val["images"][0]["file_name"] = "../train/train_000.jpg"  # the same image file as a training one
    (root / "captions_val.json").write_text(json.dumps(val))
    with pytest.raises(DataError, match="train_000.jpg is in two splits, train and dev"):
        load_captions(root, "coco")
