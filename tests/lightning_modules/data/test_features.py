"""data.features: CNN features extracted once and cached; the cache reused, invalidated, refused when
crafted and rebuilt; both poolings from one pass; an undecodable image named; the customops trunk's
features equal the native trunk's on real photos, and the cache keeps the two kinds apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.data import features
from lightning_modules.data.captions import load_flickr8k
from lightning_modules.data.features import extract_features, feature_cache_key
from lightning_modules.paths import mirror_root
from lightning_modules.pretrained import mobilenet_v2_weights_path
from lightning_modules.runs import storage
from lightning_modules.runs.errors import DataError, PretrainedWeightsError
from tests.helpers import crafted


def test_feature_cache_is_reused_and_invalidated(tmp_path, monkeypatch, write_image):
    paths = [tmp_path / f"img{i}.jpg" for i in range(3)]
    for i, p in enumerate(paths):
        write_image(p, i)
    cache = tmp_path / "cache"
    first, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert first.shape == (3, 1280) and not meta["cached"]

    def no_backbone(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(features, "make_backbone", no_backbone)
    again, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert meta["cached"] and torch.equal(first, again)
    # A different image list, a changed image, other weights or another backbone: another key.
    key = feature_cache_key(paths, "mobilenet_v2", None, 32)
    assert feature_cache_key(paths[:2], "mobilenet_v2", None, 32) != key
    assert feature_cache_key(paths, "mobilenet_v2", "imagenet", 32) != key
    assert feature_cache_key(paths, "resnet18", None, 32) != key
    assert feature_cache_key(paths, "mobilenet_v2", None, 32, trunk="native") != key
    write_image(paths[0], 99, size=40)
    assert feature_cache_key(paths, "mobilenet_v2", None, 32) != key
    with pytest.raises(AssertionError, match="cache should have been used"):
        extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    monkeypatch.undo()
    resized, meta = extract_features(paths, weights=None, cache_dir=cache, image_size=32, progress=False)
    assert not meta["cached"] and resized.shape == (3, 1280)  # the 40x40 image was resized to 32x32
    with pytest.raises(FileNotFoundError, match="img9.jpg"):
        extract_features([tmp_path / "img9.jpg"], weights=None, cache_dir=cache, progress=False)


def test_one_feature_pass_caches_both_poolings(tmp_path, monkeypatch, write_image):
    paths = [tmp_path / f"img{i}.jpg" for i in range(5)]
    for i, p in enumerate(paths):
        write_image(p, i)
    cache = tmp_path / "cache"
    pooled, meta = features.extract_features(
        paths, weights=None, cache_dir=cache, image_size=64, progress=False, batch_size=2
    )
    assert not meta["cached"] and meta["images_per_s"] > 0 and pooled.shape == (5, 1280)
    monkeypatch.setattr(features, "make_backbone", lambda *a, **k: pytest.fail("the grid should come from the cache"))
    grid, meta = features.extract_features(
        paths, weights=None, cache_dir=cache, image_size=64, progress=False, pooling="grid"
    )
    assert meta["cached"] and grid.dtype == torch.float16 and grid.shape == (5, 4, 1280)  # 2x2 positions
    torch.testing.assert_close(grid.float().mean(1), pooled, atol=2e-3, rtol=2e-3)  # the same pass


def test_a_crafted_feature_cache_is_refused_and_rebuilt(tmp_path, make_flickr):
    root = make_flickr(tmp_path / "flickr8k")
    paths = load_flickr8k(root)["train"].paths
    torch.manual_seed(0)  # the same random trunk both times
    first, meta = features.extract_features(paths, "small_cnn", None, tmp_path / "cache", image_size=32, progress=False)
    marker = tmp_path / "ran"
    crafted(Path(meta["file"]), marker)
    torch.manual_seed(0)
    again, meta2 = features.extract_features(
        paths, "small_cnn", None, tmp_path / "cache", image_size=32, progress=False
    )
    assert not marker.exists() and not meta2["cached"]
    torch.testing.assert_close(again, first)
    assert storage.load_checkpoint(meta2["file"])["features"].shape == first.shape  # the cache is whole again


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_bad_flickr8k_image_is_named(tmp_path, damage, make_flickr):
    root = make_flickr(tmp_path / "flickr8k")
    bad = root / "Images" / "t2.jpg"
    bad.write_bytes(b"garbage" * 40 if damage == "garbage" else bad.read_bytes()[: bad.stat().st_size // 2])
    paths = load_flickr8k(root)["train"].paths
    with pytest.raises(DataError, match=f"cannot decode image {bad} .*replace or delete the file"):
        features.extract_features(paths, "mobilenet_v2", None, tmp_path / "cache", image_size=32, progress=False)


def test_the_cache_keeps_the_two_trunks_apart(tmp_path, write_image):
    paths = [tmp_path / f"img{i}.jpg" for i in range(2)]
    for i, p in enumerate(paths):
        write_image(p, i)
    common = {"weights": None, "cache_dir": tmp_path / "cache", "image_size": 32, "progress": False}
    ours, ours_meta = extract_features(paths, **common)
    native, native_meta = extract_features(paths, trunk="native", **common)
    assert not native_meta["cached"]  # not the customops trunk's file
    assert (ours_meta["trunk"], native_meta["trunk"]) == ("customops", "native")
    assert ours_meta["file"] != native_meta["file"] and "-native-" in Path(native_meta["file"]).name
    assert storage.load_checkpoint(native_meta["file"])["meta"]["trunk"] == "native"
    again, meta = extract_features(paths, trunk="native", **common)
    assert meta["cached"] and torch.equal(again, native)
    with pytest.raises(ValueError, match=r"trunk must be one of \('customops', 'native'\), got 'torch'"):
        extract_features(paths, trunk="torch", **common)


def _real_photos(n: int) -> list[Path]:
    """The first n Flickr8k test photos of the local mirror and the ImageNet weights, or a skip."""
    mirror = mirror_root()
    folder = mirror / "flickr8k" if mirror is not None else None
    if folder is None or not (folder / "Flickr_8k.testImages.txt").is_file():
        pytest.skip("no Flickr8k in $CUSTOMOPS_MIRROR")
    try:
        mobilenet_v2_weights_path().stat()
    except (PretrainedWeightsError, OSError):
        pytest.skip("the ImageNet MobileNetV2 weights are not installed")
    names = (folder / "Flickr_8k.testImages.txt").read_text().split()[:n]
    return [folder / "Images" / name for name in names]


def test_customops_features_equal_the_native_trunks_on_real_photos(tmp_path):
    paths = _real_photos(4)
    common = {"cache_dir": tmp_path / "cache", "progress": False, "batch_size": 2}
    ours, meta = extract_features(paths, "mobilenet_v2", "imagenet", pooling="grid", **common)
    native, native_meta = extract_features(paths, "mobilenet_v2", "imagenet", pooling="grid", trunk="native", **common)
    assert not meta["cached"] and not native_meta["cached"] and ours.shape == (4, 49, 1280)
    # The grid is stored in float16: equal within its rounding.
    torch.testing.assert_close(ours.float(), native.float(), rtol=2e-3, atol=2e-3)
    mean, _ = extract_features(paths, "mobilenet_v2", "imagenet", **common)
    native_mean, _ = extract_features(paths, "mobilenet_v2", "imagenet", trunk="native", **common)
    # The pooled features in float32: within float32 rounding of the 52 layers.
    assert native_mean.abs().max() > 1.0  # real, ImageNet-trained features, not zeros
    torch.testing.assert_close(mean, native_mean, rtol=1e-4, atol=1e-5)
