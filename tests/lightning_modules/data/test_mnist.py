"""data.mnist: the MNIST DataModule on tiny IDX files written here (never the real set): the mirror, md5
and size checks, the split, the batches, and the batched shifts and distortions of training digits."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch

from lightning_modules.data.mnist import MNISTDataModule, distort_batch, prepare_mnist_raw, shift_batch
from lightning_modules.runs.errors import DataError, OptionError
from tests.helpers import MNIST_NAMES as NAMES


def make_dm(tmp_path: Path, md5s: dict[str, str], **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(
        root=tmp_path / "mirror", cache_dir=tmp_path / "cache", val_size=10, md5s=md5s, batch_size=16, **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.mark.parametrize("gz", [True, False])
def test_datamodule_reads_mirror_and_splits_deterministically(tmp_path, gz, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror", gz=gz)
    dm = make_dm(tmp_path, md5s)
    for name in NAMES:  # decompressed (or copied) into the cache, where torchvision.datasets.MNIST reads
        assert (tmp_path / "cache" / "MNIST" / "raw" / name).is_file()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 10, 20)
    x, y = dm.train_set.tensors
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The split is a permutation of the 60 digits (labels were i % 10), the same on every build.
    labels = torch.cat([dm.train_set.tensors[1], dm.val_set.tensors[1]])
    assert torch.equal(labels.sort().values, (torch.arange(60) % 10).sort().values)
    dm2 = make_dm(tmp_path, md5s)
    assert torch.equal(dm.val_set.tensors[0], dm2.val_set.tensors[0])
    assert torch.equal(dm.train_set.tensors[1], dm2.train_set.tensors[1])
    other = MNISTDataModule(
        root=tmp_path / "mirror", cache_dir=tmp_path / "cache", val_size=10, md5s=md5s, split_seed=1
    )
    other.setup("fit")
    assert not torch.equal(dm.val_set.tensors[0], other.val_set.tensors[0])
    # Pixels: 0..255 mapped to [0, 1], then normalised with the MNIST mean/std.
    raw0 = torch.frombuffer(
        bytearray(
            gzip.decompress((tmp_path / "mirror/raw/t10k-images-idx3-ubyte.gz").read_bytes())
            if gz
            else (tmp_path / "mirror/raw/t10k-images-idx3-ubyte").read_bytes()
        ),
        dtype=torch.uint8,
    )[16 : 16 + 784].float()
    assert torch.allclose(dm.test_set.tensors[0][0].flatten(), (raw0 / 255 - 0.1307) / 0.3081)


def test_datamodule_batches(tmp_path, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror")
    dm = make_dm(tmp_path, md5s)
    batches = list(dm.train_dataloader())
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    assert batches[0][0].shape == (16, 1, 28, 28)
    seen = torch.cat([b[1] for b in dm.val_dataloader()])
    assert torch.equal(seen, dm.val_set.tensors[1])  # evaluation keeps the order


def test_corrupt_file_is_named(tmp_path, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror")
    bad = tmp_path / "mirror" / "raw" / "train-labels-idx1-ubyte.gz"
    blob = bytearray(gzip.decompress(bad.read_bytes()))
    blob[-1] ^= 0xFF  # one wrong label
    bad.write_bytes(gzip.compress(bytes(blob)))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*md5"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)
    # Nothing half-written is left in the cache under the real name.
    assert not (tmp_path / "cache" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


def test_truncated_gz_is_named(tmp_path, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror")
    bad = tmp_path / "mirror" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz is truncated"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_truncated_plain_file_is_named(tmp_path, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror", gz=False)
    bad = tmp_path / "mirror" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_missing_file_is_named(tmp_path, mnist_mirror):
    md5s = mnist_mirror(tmp_path / "mirror")
    (tmp_path / "mirror" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_default_md5s_reject_a_foreign_file(tmp_path, mnist_mirror):
    # Without md5s the real MNIST's are checked: tiny files must fail, naming the first file.
    mnist_mirror(tmp_path / "mirror")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache")


def test_offline_without_a_mirror_names_the_variable_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(
        DataError,
        match=r"MNIST: cannot download it .*CUSTOMOPS_MIRROR to a folder holding "
        r"MNIST/raw/ .*train-images-idx3-ubyte.gz",
    ):
        MNISTDataModule(cache_dir=tmp_path / "cache").prepare_data()


def test_a_truncated_mnist_cache_is_named_with_the_fix(tmp_path, monkeypatch, mnist_cache):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)
    cache = mnist_cache(tmp_path / "cache", n_train=60, n_test=20)
    images = cache / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-16])
    dm = MNISTDataModule(cache_dir=cache, val_size=10)
    with pytest.raises(
        DataError, match=f"MNIST: {images} is truncated or corrupt .*: delete it and run again to re-fetch it"
    ):
        dm.prepare_data()
    with pytest.raises(DataError, match="delete it"):
        dm.setup("fit")  # read without prepare_data, as another rank would


# ---------------------------------------------------------------- shifts and distortions


def test_shift_batch_moves_each_image_within_max_shift():
    torch.manual_seed(0)
    x = torch.full((64, 1, 9, 9), -1.0)
    x[:, 0, 4, 4] = 5.0  # one bright pixel in the centre
    out = shift_batch(x, 2, fill=-1.0)
    assert out.shape == x.shape
    bright = (out == 5.0).nonzero()
    assert len(bright) == 64  # every image keeps its pixel (it can move by at most 2 from the centre)
    dy, dx = bright[:, 2] - 4, bright[:, 3] - 4
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # per-image offsets, not one for the batch
    assert ((out == -1.0).sum((1, 2, 3)) == 80).all()  # everything else is background
    assert torch.equal(shift_batch(x, 0, fill=-1.0), x)


def test_distort_batch_without_distortion_is_the_identity_and_keeps_the_background():
    x = torch.randn(4, 1, 12, 12)
    assert distort_batch(x, -0.4) is x  # nothing asked: the same tensor
    torch.manual_seed(0)
    blank = torch.full((8, 1, 12, 12), -0.4)
    out = distort_batch(blank, -0.4, max_shift=2, max_rotation=10, max_scale=0.1, elastic_alpha=30, elastic_sigma=4)
    torch.testing.assert_close(out, blank)  # pixels from outside take the fill value


def test_distort_batch_moves_each_image_its_own_way_and_keeps_the_ink():
    torch.manual_seed(0)
    x = torch.full((32, 1, 28, 28), 0.0)
    x[:, 0, 10:18, 12:16] = 1.0  # a bar in the middle, well inside the frame
    out = distort_batch(x, 0.0, max_shift=2, max_rotation=10, max_scale=0.1, elastic_alpha=20, elastic_sigma=5)
    assert out.shape == x.shape and torch.isfinite(out).all()
    ink = out.sum((1, 2, 3))
    # Bilinear resampling of a bar scaled by at most 10%: its ink is kept within the area change.
    assert ((ink / x[0].sum() - 1).abs() < 0.3).all()
    flat = out.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(32) * 1e3).min() > 0.1  # no two images moved alike
    # Rotation alone keeps the bar's centre of mass where it was (the image centre's neighbourhood).
    rot = distort_batch(x, 0.0, max_rotation=10)
    ys = torch.arange(28.0).view(1, 28, 1)
    centre = (rot[:, 0] * ys).sum((1, 2)) / rot[:, 0].sum((1, 2))
    assert (centre - 13.5).abs().max() < 1.0


@pytest.mark.parametrize(
    "bad", [{"max_rotation": -1.0}, {"max_scale": 1.0}, {"elastic_alpha": math.nan}, {"elastic_sigma": 0.0}]
)
def test_datamodule_rejects_bad_distortions(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"MNISTDataModule: {name}"):
        MNISTDataModule(**bad)


def test_elastic_field_blur_is_torchvisions_gaussian_blur():
    from torchvision.transforms.v2.functional import gaussian_blur

    from lightning_modules.data.mnist import _gaussian_blur

    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for sigma in (4.0, 5.5):
        k = 2 * round(2 * sigma) + 1
        torch.testing.assert_close(_gaussian_blur(x, sigma), gaussian_blur(x, [k, k], [sigma, sigma]))


def test_a_label_outside_0_to_9_is_named_with_its_file_and_item(tmp_path, monkeypatch, mnist_cache):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)
    cache = mnist_cache(tmp_path / "cache", n_train=60, n_test=20)
    labels = cache / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[8 + 7] = 12  # item 7 (after the 8-byte header)
    labels.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=f"MNIST: {labels} holds label 12 at item 7; digits are 0-9: delete it"):
        MNISTDataModule(cache_dir=cache, val_size=10).setup("fit")


def test_a_labels_file_where_the_images_belong_is_named(tmp_path, monkeypatch, mnist_cache):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)
    cache = mnist_cache(tmp_path / "cache", n_train=60, n_test=20)
    raw = cache / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds single-number items where 28x28 items belong"):
        MNISTDataModule(cache_dir=cache, val_size=10).setup("fit")


def test_a_validation_split_larger_than_the_data_is_an_option_error_before_the_digits_are_read(
    tmp_path, monkeypatch, mnist_cache
):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)
    cache = mnist_cache(tmp_path / "cache", n_train=60, n_test=20)
    monkeypatch.setattr("torchvision.datasets.MNIST", lambda *a, **k: pytest.fail("the digits were read"))
    with pytest.raises(
        OptionError, match="--data.val_size 60 leaves no training digits: the MNIST training set .* holds 60"
    ):
        MNISTDataModule(cache_dir=cache, val_size=60).setup("fit")


def test_a_cache_folder_that_cannot_be_written_is_named_not_taken_for_a_failed_download(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTOMOPS_MIRROR", raising=False)
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("torchvision.datasets.MNIST", lambda *a, **k: pytest.fail("a download was tried"))
    with pytest.raises(OSError) as err:
        MNISTDataModule(cache_dir=tmp_path / "file" / "cache").prepare_data()
    assert not isinstance(err.value, DataError) and err.value.filename.startswith(str(tmp_path / "file"))
