"""Transfer learning: freeze versus finetune, the weight loader, the safe zip extractor, the figures.

Everything runs on a tiny ImageFolder written here (32x32 images, two classes) with the small
stand-in trunk ``small_cnn`` (convolutions and BatchNorm) or a randomly initialised MobileNetV2,
so the file runs in seconds.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

import lightning_modules.data.hymenoptera as hymenoptera
import lightning_modules.tasks.transfer_learning as tl
from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.hymenoptera import HymenopteraDataModule, safe_extract
from lightning_modules.pretrained import PretrainedWeightsError, load_state_dict_by_order
from lightning_modules.transfer import build_transfer_net

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("tiny") / "hymenoptera_data")


def write_tiny_folder(root: Path) -> Path:
    """hymenoptera-shaped folder: {train,val}/{ants,bees}/*.png, 32x32, a colour cue per class."""
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 4)):
        for label, name in enumerate(("ants", "bees")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 120, (32, 32, 3), generator=gen, dtype=torch.uint8)
                pixels[..., label] += 120  # ants reddish, bees greenish
                Image.fromarray(pixels.numpy()).save(folder / f"{name}_{i}.png")
    return root


def _datamodule(folder: Path) -> HymenopteraDataModule:
    # Batch 4 over 12 training images: no batch of one, which BatchNorm cannot train on.
    dm = HymenopteraDataModule(folder, batch_size=4, num_workers=0, image_size=32)
    dm.setup("fit")
    return dm


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    # On the CPU: Lightning trains on a GPU where there is one and hands the model back on the CPU.
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _spec(mode: str, bn_stats: str = "pretrained", backbone: str = "small_cnn") -> dict:
    """A transfer net on the two-block small_cnn trunk: (N, 3, 32, 32) -> (N, 16, 16, 16) -> (N, 2)."""
    return {
        "kind": "transfer",
        "backbone": backbone,
        "weights": "none",
        "num_classes": 2,
        "mode": mode,
        "bn_stats": bn_stats,
    }


def _module(spec: dict, lr: float = 0.05, **kwargs) -> ClassifierModule:
    return ClassifierModule(spec, lr=lr, optimizer="sgd", nesterov=False, scheduler="step", **kwargs)


def _args(epochs: int = 2):
    return tl.parse_args(["--max-epochs", str(epochs), "--accelerator", "cpu", "--no-progress"])


def _train(mode: str, folder: Path, tmp_path: Path, bn_stats: str = "pretrained"):
    torch.manual_seed(0)
    dm = _datamodule(folder)
    model = _module(_spec(mode, bn_stats), step_size=10)
    trunk_before, head_before = _snapshot(model.net.trunk), _snapshot(model.net.head)
    model, history, _ = tl.train_model(model, dm, _args(), tmp_path / mode)
    return model.net, trunk_before, head_before, history


def test_freeze_keeps_trunk_bit_identical_and_trains_head(tiny_folder, tmp_path):
    net, trunk_before, head_before, history = _train("freeze", tiny_folder, tmp_path)
    # Parameters and BatchNorm buffers (running stats, num_batches_tracked) alike.
    for name, after in net.trunk.state_dict().items():
        assert torch.equal(after, trunk_before[name]), f"freeze changed trunk tensor {name}"
    assert any(not torch.equal(v, head_before[k]) for k, v in net.head.state_dict().items()), "head did not learn"
    assert all(not p.requires_grad for p in net.trunk.parameters())
    assert len(history) == 2 and {"train_loss", "val_acc"} <= history[0].keys()


def test_freeze_builds_no_graph_and_keeps_trunk_in_eval(tiny_folder):
    net = build_transfer_net("mobilenet_v2", "none", 2, "freeze")
    assert build_transfer_net(**{k: v for k, v in net.spec.items() if k != "kind"}).spec == net.spec
    net.train()
    assert not net.trunk.training and net.head.training
    x = torch.randn(2, 3, 32, 32)
    assert net.features(x).grad_fn is None
    assert net(x).requires_grad  # the head still learns


@pytest.mark.parametrize("bn_stats", ["pretrained", "update"])
def test_finetune_changes_trunk(tiny_folder, tmp_path, bn_stats):
    net, trunk_before, head_before, _ = _train("finetune", tiny_folder, tmp_path, bn_stats)
    changed = {k for k, v in net.trunk.state_dict().items() if not torch.equal(v, trunk_before[k])}
    params = {k for k, _ in net.trunk.named_parameters()}
    # Every trunk parameter learns: convolutions and BatchNorm scale and shift.
    assert params <= changed, f"finetune left {sorted(params - changed)} unchanged"
    assert any(not torch.equal(v, head_before[k]) for k, v in net.head.state_dict().items())
    stats_changed = {k for k in changed if "running_" in k}
    assert bool(stats_changed) == (bn_stats == "update")


class _Snapshots(pl.Callback):
    """The network's weights after each epoch's validation."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.states.append(_snapshot(pl_module.net))


def test_train_model_restores_best_epoch(tiny_folder, tmp_path):
    dm = _datamodule(tiny_folder)
    torch.manual_seed(0)
    snapshots = _Snapshots()
    # A large learning rate makes later epochs worse, so the best epoch is not the last one.
    model = _module(_spec("finetune", "update"), lr=0.5, head_lr=0.5)
    model, history, _ = tl.train_model(model, dm, _args(4), tmp_path / "finetune", callbacks=[snapshots])
    best = tl.best_epoch(history)
    assert best["epoch"] < len(history), f"best epoch is the last one, restoring is not tested: {history}"
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, snapshots.states[best["epoch"] - 1][name]), name
    # Re-evaluating the returned model on the validation set gives the best epoch's accuracy.
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            correct += (model(x).argmax(dim=1) == y).sum().item()
    assert correct / len(dm.val_set) == pytest.approx(best["val_acc"])


def _tiny_module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_load_state_dict_by_order_loads_renamed_tensors(tmp_path):
    source = _tiny_module()
    renamed = {f"renamed.{i}": v for i, v in enumerate(source.state_dict().values())}
    torch.save(renamed, tmp_path / "ok.pt")
    target = _tiny_module()
    load_state_dict_by_order(target, tmp_path / "ok.pt")
    for (name, want), got in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(want, got), name


def test_load_state_dict_by_order_rejects_wrong_count(tmp_path):
    tensors = list(_tiny_module().state_dict().values())
    torch.save({f"t{i}": v for i, v in enumerate(tensors[:-1])}, tmp_path / "short.pt")
    with pytest.raises(
        PretrainedWeightsError, match=rf"holds {len(tensors) - 1} tensors but Sequential has {len(tensors)}"
    ):
        load_state_dict_by_order(_tiny_module(), tmp_path / "short.pt")


def test_load_state_dict_by_order_rejects_wrong_shape(tmp_path):
    sd = _tiny_module().state_dict()
    sd["0.weight"] = torch.zeros(4, 3, 5, 5)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(PretrainedWeightsError, match=r"tensor #0 '0.weight' has shape \(4, 3, 5, 5\)"):
        load_state_dict_by_order(_tiny_module(), tmp_path / "shape.pt")


def test_missing_mobilenet_weights_is_an_error_not_random(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMOPS_MOBILENET_WEIGHTS", str(tmp_path / "absent.pt"))
    with pytest.raises(PretrainedWeightsError, match="absent.pt"):
        build_transfer_net("mobilenet_v2", "imagenet", 2, "freeze")


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name), text)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "hymenoptera_data/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_safe_extract_refuses_members_leaving_the_folder(tmp_path, evil):
    archive = _zip(tmp_path / "evil.zip", {"hymenoptera_data/ok.txt": "fine", evil: "gotcha"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(ValueError, match="evil.zip: refusing member"):
        safe_extract(archive, dest)
    # Nothing is written, neither the good member nor the escaping one.
    assert not any(dest.rglob("*"))
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_extracts_a_clean_zip(tmp_path):
    archive = _zip(tmp_path / "good.zip", {"hymenoptera_data/train/ants/a.txt": "ant"})
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "hymenoptera_data" / "train" / "ants" / "a.txt").read_text() == "ant"


def test_download_extracts_into_the_cache(tmp_path, monkeypatch):
    def fake_download(url, root):  # stands in for the official zip on an offline machine
        _zip(
            Path(root) / Path(url).name,
            {"hymenoptera_data/train/ants/a.txt": "ant", "hymenoptera_data/val/bees/b.txt": "bee"},
        )

    monkeypatch.setattr(hymenoptera, "download_url", fake_download)
    root = hymenoptera.download_hymenoptera(tmp_path / "cache")
    assert root == tmp_path / "cache" / "hymenoptera_data"
    assert (root / "val" / "bees" / "b.txt").read_text() == "bee"
    # No temporary extraction folder is left behind.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["hymenoptera_data", "hymenoptera_data.zip"]


def test_datamodule_rejects_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HymenopteraDataModule(tmp_path / "nowhere").setup()
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no val/ folder"):
        HymenopteraDataModule(tmp_path / "half").setup()
    with pytest.raises(ValueError, match="batch_size"):
        HymenopteraDataModule(tmp_path, batch_size=0)


def test_build_transfer_net_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        build_transfer_net("mobilenet_v2", "none", 2, "thaw")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_transfer_net("vgg", "none", 2, "freeze")
    with pytest.raises(ValueError, match="bn_stats must be one of"):
        build_transfer_net("mobilenet_v2", "none", 2, "finetune", "batch")


def test_visualize_model_writes_png(tiny_folder, tmp_path):
    dm = _datamodule(tiny_folder)
    model = _module(_spec("freeze", backbone="mobilenet_v2"))
    path = tl.visualize_model(model, dm, tmp_path / "grid.png", num_images=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


def test_script_runs_both_scenarios_and_writes_report(tiny_folder, tmp_path):
    out = tmp_path / "out"
    summary = tl.main(
        [
            "--weights",
            "none",
            "--data-root",
            str(tiny_folder),
            "--max-epochs",
            "1",
            "--no-progress",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--image-size",
            "32",
            "--out",
            str(out),
        ]
    )
    tmp_path = out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    for mode in ("finetune", "freeze"):
        result = saved["scenarios"][mode]
        assert 0.0 <= result["best_val_acc"] <= 1.0 and result["best_epoch"] == 1
        assert result["wall_time_s"] > 0 and len(result["history"]) == 1
        assert (tmp_path / f"visualize_{mode}.png").stat().st_size > 0
    # The freeze head alone: 1280 * 2 weights + 2 biases.
    assert saved["scenarios"]["freeze"]["trainable_parameters"] == 1280 * 2 + 2
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| freeze |" in (tmp_path / "results.md").read_text()


def test_optimizer_sees_only_trainable_parameters():
    finetune = _module(_spec("finetune", backbone="mobilenet_v2"), lr=1e-3, head_lr=1e-2)
    groups = finetune.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert groups[1]["params"] == list(finetune.net.head.parameters())
    frozen = _module(_spec("freeze", backbone="mobilenet_v2"), lr=1e-2, head_lr=1e-2)
    (group,) = frozen.configure_optimizers()["optimizer"].param_groups
    assert group["params"] == list(frozen.net.head.parameters())
