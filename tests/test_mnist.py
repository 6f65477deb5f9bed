"""MNIST data module, the two networks and their torch.nn twins, and the classification LightningModule.

All on tiny data written here (IDX files in tmp_path, random tensors), never the real set.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.mnist import MNISTDataModule, prepare_mnist_raw, shift_batch
from lightning_modules.networks import ConvNet, TwoLayerNet, build_net

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(t: torch.Tensor) -> bytes:
    """t: uint8 (N,) labels or (N, 28, 28) images, in the IDX format (big-endian header)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + t.numpy().tobytes()


def write_mirror(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> dict[str, str]:
    """Write a tiny MNIST mirror under folder/raw/; returns the md5 of each decompressed file."""
    g = torch.Generator().manual_seed(0)
    data = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(n_train, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": torch.arange(n_test, dtype=torch.uint8) % 10,
    }
    raw = folder / "raw"
    raw.mkdir(parents=True)
    md5s = {}
    for name, t in data.items():
        blob = idx_bytes(t)
        md5s[name] = hashlib.md5(blob).hexdigest()
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return md5s


def make_dm(tmp_path: Path, md5s: dict[str, str], **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(
        root=tmp_path / "mirror", cache_dir=tmp_path / "cache", val_size=10, md5s=md5s, batch_size=16, **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("gz", [True, False])
def test_datamodule_reads_mirror_and_splits_deterministically(tmp_path, gz):
    md5s = write_mirror(tmp_path / "mirror", gz=gz)
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


def test_datamodule_batches(tmp_path):
    md5s = write_mirror(tmp_path / "mirror")
    dm = make_dm(tmp_path, md5s)
    batches = list(dm.train_dataloader())
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    assert batches[0][0].shape == (16, 1, 28, 28)
    seen = torch.cat([b[1] for b in dm.val_dataloader()])
    assert torch.equal(seen, dm.val_set.tensors[1])  # evaluation keeps the order


def test_corrupt_file_is_named(tmp_path):
    md5s = write_mirror(tmp_path / "mirror")
    bad = tmp_path / "mirror" / "raw" / "train-labels-idx1-ubyte.gz"
    blob = bytearray(gzip.decompress(bad.read_bytes()))
    blob[-1] ^= 0xFF  # one wrong label
    bad.write_bytes(gzip.compress(bytes(blob)))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*md5"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)
    # Nothing half-written is left in the cache under the real name.
    assert not (tmp_path / "cache" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


def test_truncated_gz_is_named(tmp_path):
    md5s = write_mirror(tmp_path / "mirror")
    bad = tmp_path / "mirror" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz is truncated"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_truncated_plain_file_is_named(tmp_path):
    md5s = write_mirror(tmp_path / "mirror", gz=False)
    bad = tmp_path / "mirror" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_missing_file_is_named(tmp_path):
    md5s = write_mirror(tmp_path / "mirror")
    (tmp_path / "mirror" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache", md5s)


def test_default_md5s_reject_a_foreign_file(tmp_path):
    # Without md5s the real MNIST's are checked: tiny files must fail, naming the first file.
    write_mirror(tmp_path / "mirror")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        prepare_mnist_raw(tmp_path / "mirror", tmp_path / "cache")


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


# ---------------------------------------------------------------- networks


def small_nets(impl: str):
    return [TwoLayerNet(hidden=64, impl=impl), ConvNet(filters=8, kernel_size=5, hidden=32, impl=impl)]


@pytest.mark.parametrize("index", [0, 1], ids=["softmax", "cnn"])
def test_torch_twin_has_identical_init_and_outputs(index):
    torch.manual_seed(3)
    custom = small_nets("custom")[index]
    torch.manual_seed(3)
    twin = small_nets("torch")[index]
    for (name, p), (_, q) in zip(custom.named_parameters(), twin.named_parameters()):
        q = q.t() if (p.dim() == 2 and p.shape != q.shape) else q  # customops Linear is (in, out)
        assert torch.equal(p, q), name
    x = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(custom(x), twin(x), rtol=1e-5, atol=1e-5)


def test_build_net_round_trips_spec():
    for net in small_nets("custom") + small_nets("torch"):
        rebuilt = build_net(net.spec)
        assert type(rebuilt) is type(net) and rebuilt.spec == net.spec
    with pytest.raises(ValueError, match="impl"):
        TwoLayerNet(hidden=8, impl="numpy")
    with pytest.raises(ValueError, match="hidden"):
        ConvNet(hidden=0)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvNet(kernel_size=28)


def tiny_loader(n: int = 64, seed: int = 0, batch_size: int = 64) -> DataLoader:
    """n random images with random labels (nothing to generalise: only memorisation reaches 100%)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def fit(module: pl.LightningModule, loader: DataLoader, epochs: int, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(module, train_dataloaders=loader)
    return trainer


@torch.no_grad()
def accuracy(module: torch.nn.Module, loader: DataLoader) -> float:
    module.eval()
    x, y = next(iter(loader))
    return (module(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("impl", ["custom", "torch"])
@pytest.mark.parametrize("index", [0, 1], ids=["softmax", "cnn"])
def test_networks_overfit_64_samples(index, impl):
    torch.manual_seed(0)
    module = ClassifierModule(small_nets(impl)[index].spec, lr=3e-3, optimizer="adam", scheduler="constant")
    loader = tiny_loader()
    assert accuracy(module, loader) < 0.5
    module.train()
    fit(module, loader, epochs=60)
    assert accuracy(module, loader) == 1.0


def test_classifier_trains_a_network_passed_in_and_stores_only_its_spec(tmp_path):
    torch.manual_seed(0)
    net = TwoLayerNet(hidden=8)
    module = ClassifierModule(net, 10, lr=1e-2, scheduler="constant")
    before = net.fc1.weight.detach().clone()
    trainer = fit(module, tiny_loader(batch_size=16), epochs=1)
    assert module.net is net and not torch.equal(net.fc1.weight, before)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    assert torch.load(tmp_path / "m.ckpt", weights_only=True)["hyper_parameters"]["net"] == net.spec
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert torch.equal(loaded.net.fc1.weight, net.fc1.weight)
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierModule(net, 5)


def test_classifier_rejects_bad_hparams():
    spec = TwoLayerNet(hidden=8).spec
    with pytest.raises(ValueError, match="optimizer"):
        ClassifierModule(spec, optimizer="lbfgs")
    with pytest.raises(ValueError, match="scheduler"):
        ClassifierModule(spec, scheduler="plateau")
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierModule({**spec, "num_classes": 1})
    with pytest.raises(ValueError, match="unknown kind"):
        ClassifierModule({"kind": "mlp"})


@pytest.mark.parametrize("optimizer,scheduler", [("sgd", "onecycle"), ("adamw", "cosine")])
def test_checkpoint_reload_gives_identical_predictions(tmp_path, optimizer, scheduler):
    torch.manual_seed(0)
    spec = ConvNet(filters=4, kernel_size=3, hidden=16).spec
    module = ClassifierModule(spec, lr=1e-2, weight_decay=1e-4, optimizer=optimizer, scheduler=scheduler)
    loader = tiny_loader(batch_size=16)  # 4 steps an epoch, 12 in all: a real one-cycle schedule
    trainer = fit(module, loader, epochs=3)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 12
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    # Plain hyper-parameters only: the checkpoint loads with weights_only=True, and Lightning's
    # own load_from_checkpoint rebuilds the network from its spec.
    assert torch.load(path, weights_only=True)["hyper_parameters"]["net"] == spec
    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.hparams.optimizer == optimizer and loaded.hparams.net == spec
    x = next(iter(loader))[0]
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(module(x), loaded(x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in module.parameters())


def test_script_sweeps_and_reports_on_a_tiny_mirror(tmp_path, monkeypatch):
    """The sweep script on a tiny mirror: every artefact written, test accuracy from the chosen model."""
    import importlib.util
    import json

    md5s = write_mirror(tmp_path / "mirror", n_train=300, n_test=50)
    spec = importlib.util.spec_from_file_location(
        "digit_classification", Path(__file__).resolve().parent.parent / "scripts" / "digit_classification.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # The tiny mirror's md5s stand in for the real ones.
    monkeypatch.setattr("lightning_modules.data.mnist.MNIST_MD5", md5s)
    out = tmp_path / "out"
    results = script.main(
        [
            "--model",
            "cnn",
            "--data-root",
            str(tmp_path / "mirror"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--hidden",
            "16",
            "32",
            "--filter-sizes",
            "3",
            "5",
            "--filters",
            "4",
            "--sweep-epochs",
            "1",
            "--final-epochs",
            "2",
            "--val-size",
            "50",
            "--no-progress",
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["candidates"]) == 4
    assert saved["chosen"]["spec"] == max(saved["candidates"], key=lambda r: r["val_acc"])["spec"]
    assert saved["test_size"] == 50 and saved["test_acc"] == results["test_acc"]
    assert sum(map(sum, saved["confusion_matrix"])) == 50
    for name in (
        "sweep.md",
        "learning_curves.png",
        "sweep.png",
        "confusion_matrix.png",
        "first_layer_filters.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/version_0/metrics.csv",
    ):
        assert (out / name).is_file(), name
    assert saved["checkpoint"] == "checkpoints/best.ckpt" and saved["run"]["world_size"] == 1
    assert [row["epoch"] for row in saved["final"]["history"]] == [1, 2]
    # The run folder was built beside --out and moved into place: nothing is left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mirror", "out"]
