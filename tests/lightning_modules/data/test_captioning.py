"""data.captioning: the captioning DataModule on tiny COCO- and Flickr8k-format sets written here (the
vocabulary from training captions only, features of the images used only) and its length-bucketed,
sharded batches."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.data.captioning import CaptionDataModule, LengthBucketBatchSampler
from lightning_modules.data.captions import load_coco_folder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


def test_coco_loader_and_vocab_from_train_only(tmp_path, make_coco):
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


def test_length_buckets_are_sharded_too():
    torch.manual_seed(0)
    lengths = torch.randint(3, 20, (103,))
    ranks = [LengthBucketBatchSampler(lengths, 4, shuffle=True, pool=4, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0])
    together = LengthBucketBatchSampler(lengths, 8, shuffle=True, pool=4, seed=0)
    assert [x + y for x, y in zip(*batches)] == [b for b in together if len(b) >= 2]


def test_a_subset_extracts_features_only_for_the_images_it_uses(tmp_path, make_flickr):
    root = make_flickr(tmp_path / "flickr8k")
    common = dict(
        backbone="small_cnn", weights=None, cache_dir=tmp_path / "cache", image_size=32, min_count=1, progress=False
    )
    dm = CaptionDataModule(root, images={"train": 1}, **common)
    torch.manual_seed(0)  # the same random trunk for both
    dm.setup()
    assert list(dm.splits) == ["train"] and len(dm.splits["train"]) == 1
    assert dm.features["train"].shape[0] == 1 and dm.feature_meta["train"]["num_images"] == 1
    assert dm.features["train"].std() > 0
    full = CaptionDataModule(root, **common)
    torch.manual_seed(0)
    full.setup()
    # The vocabulary comes from every training caption either way; a small cache is never the full one.
    assert dm.vocab.words == full.vocab.words
    assert not full.feature_meta["train"]["cached"] and full.features["train"].shape[0] == 2
    torch.testing.assert_close(full.features["train"][:1], dm.features["train"])
