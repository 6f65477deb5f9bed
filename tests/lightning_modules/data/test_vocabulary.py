"""data.vocabulary: building, encoding, decoding, saving and loading the captioning vocabulary."""

from __future__ import annotations

import pytest

from lightning_modules.data.vocabulary import Vocabulary


def test_vocabulary_round_trip(tmp_path):
    captions = ["A dog runs.", "a DOG sits", "The dog runs on grass", "a cat"]
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.words[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert vocab.words[4:] == ["a", "dog", "runs"]  # by count (3, 3, 2), ties alphabetical; rarer dropped
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.words == vocab.words
    ids = loaded.encode("A dog runs!")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert loaded.decode(ids) == "a dog runs"
    assert loaded.decode(loaded.encode("a zebra runs")) == "a <UNK> runs"
    batch = loaded.encode_batch(["a dog runs a dog runs", "dog"], max_words=3)  # (2, 5)
    assert batch.tolist()[0] == [1, 4, 5, 6, 2] and batch.tolist()[1] == [1, 5, 2, 0, 0]


def test_vocabulary_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Vocabulary"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a saved vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="first words"):
        Vocabulary(["a", "b"])


def test_token_ids_are_the_specials_positions():
    vocab = Vocabulary.build(["a dog"], min_count=1)
    assert vocab.token_ids() == {"null_id": 0, "start_id": 1, "end_id": 2}
    assert [vocab.words[i] for i in vocab.token_ids().values()] == ["<NULL>", "<START>", "<END>"]
