"""Caption data sets read into splits of (image file, reference captions).

Layout of Flickr8k (the data set's own distribution, or the offline mirror):
``Images/*.jpg``, ``Flickr8k.token.txt`` (``<image>.jpg#<k>\\t<caption>``) and the
official splits ``Flickr_8k.{train,dev,test}Images.txt``.

COCO captions format: ``captions_<split>*.json`` (under the folder or its
``annotations/``) with ``images: [{id, file_name}]`` and
``annotations: [{image_id, caption}]``, and the images in ``<split>*/`` or ``images/``.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.runs.errors import DataError

from .sources import resolve_dataset_dir

SPLITS = ("train", "dev", "test")
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_TOKENS = "Flickr8k.token.txt"


def tokenize(caption: str) -> list[str]:
    """Lower-cased words; punctuation dropped (as the standard caption tokenizers do)."""
    return re.findall(r"[a-z0-9]+", caption.lower())


@dataclass
class CaptionSplit:
    """One split: image files and the reference captions of each (raw strings)."""

    image_dir: Path
    names: list[str]
    captions: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.captions):
            raise ValueError(f"CaptionSplit: {len(self.names)} images but {len(self.captions)} caption lists")

    @property
    def paths(self) -> list[Path]:
        return [self.image_dir / name for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> CaptionSplit:
        return CaptionSplit(self.image_dir, [self.names[i] for i in indices], [self.captions[i] for i in indices])


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their line numbers (from 1), stripped.

    UTF-8, with or without a byte-order mark (an editor's BOM would otherwise stick to the first
    line's image name). A file that is not UTF-8 is a ``DataError`` naming the line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"flickr8k: {path} is missing")
    lines = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8").strip()
        except UnicodeDecodeError as err:
            raise DataError(f"flickr8k: {path}:{n} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        if line:
            lines.append((n, line))
    return lines


_TOKEN_KEY = re.compile(r"(.+)#\d+")  # <image>#<k>


def load_flickr8k(root: str | os.PathLike) -> dict[str, CaptionSplit]:
    """The official train/dev/test splits of Flickr8k found in `root`.

    ``DataError`` names the file and line of a caption line that is not ``<image>#<k><TAB><caption>``,
    a split file that lists no image, and an image that two splits share (its captions would be
    trained on and scored).
    """
    root = Path(root)
    image_dir = root / "Images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"flickr8k: {root} has no Images/ folder")
    by_image: dict[str, list[str]] = collections.defaultdict(list)
    tokens = root / FLICKR8K_TOKENS
    for n, line in _read_lines(tokens):
        key, sep, caption = line.partition("\t")
        found = _TOKEN_KEY.fullmatch(key.strip())
        if not sep or found is None:
            raise DataError(f"flickr8k: {tokens}:{n} is not '<image>#<k><TAB><caption>': {line[:80]!r}")
        by_image[found.group(1)].append(caption.strip())
    splits: dict[str, CaptionSplit] = {}
    listed: dict[str, tuple[str, int]] = {}  # image -> (split file, line) of its first listing
    for split, filename in FLICKR8K_SPLIT_FILES.items():
        lines = _read_lines(root / filename)
        if not lines:
            raise DataError(f"flickr8k: {root / filename} lists no images")
        for n, name in lines:
            if name in listed and listed[name][0] != filename:
                first, line = listed[name]
                raise DataError(
                    f"flickr8k: {name} is in two splits, {root / first}:{line} and {root / filename}:{n}; "
                    "each image belongs to one split"
                )
            listed.setdefault(name, (filename, n))
        names = [name for _, name in lines]
        missing = [name for name in names if name not in by_image]
        if missing:
            raise DataError(f"flickr8k: {len(missing)} {split} images have no captions in {tokens}, e.g. {missing[0]}")
        absent = [name for name in names if not (image_dir / name).is_file()]
        if absent:
            raise FileNotFoundError(f"flickr8k: {len(absent)} {split} images are missing, e.g. {image_dir / absent[0]}")
        splits[split] = CaptionSplit(image_dir, names, [by_image[name] for name in names])
    return splits


def load_coco_captions(annotation_file: str | os.PathLike, image_dir: str | os.PathLike) -> CaptionSplit:
    """One COCO-format caption file (``images`` + ``annotations``) and its image folder."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"coco captions: {annotation_file} is missing")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"coco captions: image folder {image_dir} is missing")
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
        files = {int(img["id"]): str(img["file_name"]) for img in data["images"]}
        by_id: dict[int, list[str]] = collections.defaultdict(list)
        for ann in data["annotations"]:
            by_id[int(ann["image_id"])].append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"coco captions: {annotation_file} is not a COCO captions file ({err!r})") from err
    ids = sorted(i for i in files if by_id.get(i))
    if not ids:
        raise DataError(f"coco captions: {annotation_file} has no captioned images")
    absent = [files[i] for i in ids if not (image_dir / files[i]).is_file()]
    if absent:
        raise FileNotFoundError(f"coco captions: {len(absent)} images are missing, e.g. {image_dir / absent[0]}")
    return CaptionSplit(image_dir, [files[i] for i in ids], [by_id[i] for i in ids])


def load_coco_folder(root: str | os.PathLike) -> dict[str, CaptionSplit]:
    """COCO-format splits in `root`: ``captions_<split>*.json`` for train, dev (or val) and test."""
    root = Path(root)
    splits = {}
    for split in SPLITS:
        aliases = (split, "val") if split == "dev" else (split,)
        found = [
            p
            for alias in aliases
            for folder in (root, root / "annotations")
            for p in sorted(folder.glob(f"captions_{alias}*.json"))
        ]
        if not found:
            continue
        annotation = found[0]
        stem = annotation.stem[len("captions_") :]  # e.g. "train2014"
        candidates = [root / stem, root / "images" / stem, root / "images"]
        image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        splits[split] = load_coco_captions(annotation, image_dir)
    if "train" not in splits:
        raise FileNotFoundError(f"coco captions: no captions_train*.json in {root} or {root / 'annotations'}")
    _check_disjoint(splits)
    return splits


def _check_disjoint(splits: dict[str, CaptionSplit]) -> None:
    """``DataError`` naming an image file that two splits share."""
    seen: dict[Path, str] = {}
    for split, data in splits.items():
        for path in data.paths:
            key = path.resolve()
            if key in seen and seen[key] != split:
                raise DataError(
                    f"coco captions: {path} is in two splits, {seen[key]} and {split}; each image belongs to one"
                )
            seen[key] = split


def load_captions(root: str | os.PathLike | None, fmt: str = "flickr8k") -> dict[str, CaptionSplit]:
    """Splits of a caption data set: `fmt` is "flickr8k" or "coco".

    `root` None means $CUSTOMOPS_MIRROR/<fmt>. Flickr8k is distributed only
    after a request form, so there is nothing to download automatically.
    """
    if fmt not in ("flickr8k", "coco"):
        raise ValueError(f"captions: format must be 'flickr8k' or 'coco', got {fmt!r}")
    root = resolve_dataset_dir(fmt, root)
    if root is None:
        raise FileNotFoundError(
            f"{fmt}: no data folder given and $CUSTOMOPS_MIRROR is unset; request Flickr8k from "
            "https://hockenmaier.cs.illinois.edu/DenotationGraph/ (or use COCO captions) and pass its folder"
        )
    return load_flickr8k(root) if fmt == "flickr8k" else load_coco_folder(root)
