"""Captioning model and data: vocabulary, loaders, feature cache, sampling, and the script's paths
on a tiny COCO-format set written under tmp_path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg

from lightning_modules.captioning import CaptioningConfig, CaptioningRNN
from lightning_modules.data import flickr8k
from lightning_modules.data.flickr8k import (
    CaptionDataModule,
    LengthBucketBatchSampler,
    Vocabulary,
    extract_features,
    feature_cache_key,
    load_coco_folder,
    load_flickr8k,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "image_captioning.py"
WORDS = "a dog cat man woman runs sits on the grass red blue ball jumps water".split()


def _write_image(path: Path, seed: int, size: int = 32) -> None:
    g = torch.Generator().manual_seed(seed)
    # A coloured gradient, different per image, so random-weight features differ too.
    base = torch.rand(3, 1, 1, generator=g) * 255
    ramp = torch.linspace(0, 1, size).view(1, 1, size) * torch.rand(3, 1, 1, generator=g) * 255
    image = (0.5 * base + 0.5 * ramp).expand(3, size, size).clamp(0, 255).to(torch.uint8).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(image, str(path), quality=95)


def _caption(seed: int, k: int) -> str:
    g = torch.Generator().manual_seed(seed * 10 + k)
    n = int(torch.randint(3, 7, (1,), generator=g))
    return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g)).capitalize() + " ."


def make_coco(root: Path, counts=(8, 3, 3), captions_per_image=2) -> Path:
    """captions_{train,val,test}.json and images/{split}/ under root."""
    seed = 0
    for split, n in zip(("train", "val", "test"), counts):
        images, anns = [], []
        for i in range(n):
            seed += 1
            name = f"{split}_{i:03d}.jpg"
            _write_image(root / split / name, seed)
            images.append({"id": seed, "file_name": name})
            caps = [_caption(seed, k) for k in range(captions_per_image)]
            if split == "val" and i == 0:
                caps[0] = "A zebra eats ."  # a word that appears in no training caption
            anns += [{"id": seed * 100 + k, "image_id": seed, "caption": c} for k, c in enumerate(caps)]
        (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def make_flickr(root: Path) -> Path:
    names = {"train": ["t1.jpg", "t2.jpg"], "dev": ["d1.jpg"], "test": ["s1.jpg"]}
    lines = []
    for seed, name in enumerate(n for split in names.values() for n in split):
        _write_image(root / "Images" / name, seed)
        lines += [f"{name}#{k}\t{_caption(seed, k)}" for k in range(5)]
    lines.append("extra.jpg#0\tAn image outside the splits .")
    (root / flickr8k.FLICKR8K_TOKENS).write_text("\n".join(lines) + "\n")
    for split, file in flickr8k.FLICKR8K_SPLIT_FILES.items():
        (root / file).write_text("\n".join(names[split]) + "\n")
    return root


def _script():
    spec = importlib.util.spec_from_file_location("image_captioning_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- vocabulary and loaders


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


def test_flickr8k_loader(tmp_path):
    splits = load_flickr8k(make_flickr(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "dev": 1, "test": 1}
    assert all(len(c) == 5 for s in splits.values() for c in s.captions)
    (tmp_path / "Images" / "d1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="dev images are missing"):
        load_flickr8k(tmp_path)


def test_coco_loader_and_vocab_from_train_only(tmp_path):
    root = make_coco(tmp_path / "coco")
    splits = load_coco_folder(root)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "dev": 3, "test": 3}
    dm = CaptionDataModule(
        root,
        "coco",
        weights=None,
        cache_dir=tmp_path / "cache",
        image_size=32,
        min_count=1,
        max_words=6,
        batch_size=4,
        progress=False,
    )
    dm.setup()
    assert "zebra" not in dm.vocab.index and "dog" in dm.vocab.index
    features, captions = next(iter(dm.train_dataloader()))
    assert features.shape == (4, 1280) and captions.shape == (4, 8)
    with pytest.raises(FileNotFoundError, match="captions_train"):
        load_coco_folder(tmp_path / "cache")


def test_length_bucket_sampler_covers_every_caption_once():
    torch.manual_seed(0)
    lengths = torch.randint(3, 20, (103,))
    sampler = LengthBucketBatchSampler(lengths, batch_size=8, shuffle=True, pool=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13  # 3 pools of 32 captions -> 12 batches; the last 7 -> 1
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(lengths[b].tolist() == sorted(lengths[b].tolist()) for b in batches)
    # Less padding than random batches: summed batch maxima are smaller.
    random_batches = torch.randperm(103).split(8)
    assert sum(int(lengths[b].max()) for b in batches) < sum(int(lengths[b].max()) for b in random_batches)


# --------------------------------------------------------------------------- feature cache


def test_feature_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    paths = [tmp_path / f"img{i}.jpg" for i in range(3)]
    for i, p in enumerate(paths):
        _write_image(p, i)
    cache = tmp_path / "cache"
    first, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert first.shape == (3, 1280) and not meta["cached"]

    def no_backbone(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(flickr8k, "make_backbone", no_backbone)
    again, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert meta["cached"] and torch.equal(first, again)
    # A different image list, a changed image, other weights or another backbone: another key.
    key = feature_cache_key(paths, "mobilenet_v2", None, 32)
    assert feature_cache_key(paths[:2], "mobilenet_v2", None, 32) != key
    assert feature_cache_key(paths, "mobilenet_v2", "imagenet", 32) != key
    assert feature_cache_key(paths, "resnet18", None, 32) != key
    _write_image(paths[0], 99, size=40)
    assert feature_cache_key(paths, "mobilenet_v2", None, 32) != key
    with pytest.raises(AssertionError, match="cache should have been used"):
        extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    monkeypatch.undo()
    resized, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert not meta["cached"] and resized.shape == (3, 1280)  # the 40x40 image was resized to 32x32
    with pytest.raises(FileNotFoundError, match="img9.jpg"):
        extract_features([tmp_path / "img9.jpg"], weights=None, cache_dir=cache, progress=False)


# --------------------------------------------------------------------------- model


def _tiny_model(cell="rnn", vocab_size=10):
    torch.manual_seed(0)
    return CaptioningRNN(CaptioningConfig(vocab_size, feature_dim=6, wordvec_dim=4, hidden_dim=8, cell=cell))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("beam", [1, 3])
def test_sample_stops_at_end_and_respects_max_length(cell, beam):
    model = _tiny_model(cell)
    features = torch.randn(4, 6)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[model.config.end_id] = 10.0  # <END> is by far the likeliest word
    out = model.sample(features, max_length=5, beam_size=beam)
    assert out.shape == (4, 5)
    assert (out[:, 0] == model.config.end_id).all() and (out[:, 1:] == model.config.null_id).all()
    with torch.no_grad():
        model.head.bias[model.config.end_id] = -10.0
        model.head.bias[7] = 10.0  # never ends: cut at max_length
    out = model.sample(features, max_length=6, beam_size=beam)
    assert out.shape == (4, 6) and (out == 7).all()


def test_captioning_module_takes_the_sizes_as_a_dict_or_as_keywords():
    from lightning_modules.captioning import CaptioningModule

    by_keywords = CaptioningModule(vocab_size=13, feature_dim=6, wordvec_dim=8, hidden_dim=16, cell="lstm", lr=1e-2)
    config = by_keywords.hparams.model
    assert config["cell"] == "lstm" and config["dropout"] == CaptioningConfig(13).dropout  # defaults declared once
    assert CaptioningModule(config, lr=1e-2).hparams == by_keywords.hparams
    with pytest.raises(TypeError, match="not both"):
        CaptioningModule(config, cell="rnn")


def test_model_loss_ignores_padding():
    model = _tiny_model()
    features = torch.randn(2, 6)
    captions = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0]])
    loss = model(features, captions)
    padded_more = torch.cat([captions, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(features, padded_more), loss)
    with pytest.raises(ValueError, match="features must be"):
        model(torch.randn(2, 5), captions)
    with pytest.raises(ValueError, match="cell"):
        CaptioningRNN(CaptioningConfig(10, cell="gru"))


# --------------------------------------------------------------------------- the script on a tiny set


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_overfit_path_reaches_low_loss(tmp_path, cell):
    root = make_coco(tmp_path / "coco", counts=(10, 2, 2), captions_per_image=1)
    result = _script().main(
        [
            "--format",
            "coco",
            "--data-root",
            str(root),
            "--weights",
            "none",
            "--image-size",
            "32",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--overfit",
            "--overfit-captions",
            "10",
            "--hidden-dim",
            "64",
            "--wordvec-dim",
            "16",
            "--min-count",
            "1",
            "--cell",
            cell,
            "--lr",
            "2e-2",
            "--no-progress",
        ]
    )
    assert result["reached_target"] and result["final_loss"] < 0.1
    assert result["exact_reproductions"] >= 9
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved[f"overfit_{cell}"]["final_loss"] == result["final_loss"]


def test_full_run_writes_report(tmp_path):
    root = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    _script().main(
        [
            "--format",
            "coco",
            "--data-root",
            str(root),
            "--weights",
            "none",
            "--image-size",
            "32",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--max-epochs",
            "2",
            "--hidden-dim",
            "16",
            "--wordvec-dim",
            "8",
            "--min-count",
            "1",
            "--batch-size",
            "4",
            "--samples",
            "2",
            "--no-progress",
        ]
    )
    results = json.loads((out / "results.json").read_text())["rnn"]
    assert set(results["test_bleu"]) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    # Every decoding is scored on dev; test is decoded once, with the choice.
    assert list(results["dev"]) == ["greedy", "beam3", "beam5", "beam5-lp1"]
    assert list(results["test"]) == [results["decoding_chosen_on_dev"]]
    assert results["decoding_chosen_on_dev"] == max(results["dev"], key=lambda k: results["dev"][k]["bleu4"])
    assert len(results["curves"]["train_loss"]) == 2 and len(results["curves"]["val_loss"]) == 2
    for name in (
        "learning_curves_rnn.png",
        "samples_rnn_train.png",
        "samples_rnn_test.png",
        "samples_rnn.md",
        "vocab.json",
        "checkpoints/vocab.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (out / name).is_file(), name
    # The checkpoint holds plain hyper-parameters and loads the standard way.
    from lightning_modules.captioning import CaptioningModule

    assert torch.load(out / "checkpoints/best.ckpt", weights_only=True)["hyper_parameters"]["model"]["cell"] == "rnn"
    assert CaptioningModule.load_from_checkpoint(out / "checkpoints/best.ckpt").model.config.hidden_dim == 16
    assert "generated:" in (out / "samples_rnn.md").read_text()
