"""The captioning vocabulary: words and ids, with the special tokens' ids defined here once."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_modules.runs.storage import write_text

from .captions import tokenize


@dataclass
class Vocabulary:
    """Word <-> id. Ids 0..3 are ``<NULL>`` (padding), ``<START>``, ``<END>``, ``<UNK>``."""

    words: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    NULL = "<NULL>"
    START = "<START>"
    END = "<END>"
    UNK = "<UNK>"
    SPECIALS = (NULL, START, END, UNK)
    null_id, start_id, end_id, unk_id = range(len(SPECIALS))

    def __post_init__(self) -> None:
        if tuple(self.words[:4]) != self.SPECIALS:
            raise ValueError(f"Vocabulary: the first words must be {self.SPECIALS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("Vocabulary: words must be unique")
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """Words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        if min_count < 1:
            raise ValueError(f"Vocabulary.build: min_count must be >= 1, got {min_count}")
        counts = collections.Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(cls.SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def token_ids(self) -> dict[str, int]:
        """The special ids a captioner's config takes: ``null_id`` (padding), ``start_id``, ``end_id``."""
        return {"null_id": self.null_id, "start_id": self.start_id, "end_id": self.end_id}

    def encode(self, caption: str, max_words: int | None = None) -> list[int]:
        """``<START> w1 .. wk <END>`` ids, with at most `max_words` words (the rest cut)."""
        ids = [self.index.get(w, self.unk_id) for w in tokenize(caption)]
        if max_words is not None:
            ids = ids[:max_words]
        return [self.start_id, *ids, self.end_id]

    def encode_batch(self, captions: Sequence[str], max_words: int) -> torch.Tensor:
        """(M, max_words + 2) int64 ids, padded with ``<NULL>``."""
        out = torch.full((len(captions), max_words + 2), self.null_id, dtype=torch.long)
        for i, caption in enumerate(captions):
            ids = self.encode(caption, max_words)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first ``<END>``; ``<NULL>`` and ``<START>`` skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.null_id, self.start_id):
                continue
            words.append(self.words[i])
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Vocabulary: {path} is missing")
        try:
            words = json.loads(path.read_text(encoding="utf-8"))["words"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"Vocabulary: {path} is not a saved vocabulary ({err!r})") from err
        return cls(list(words))
