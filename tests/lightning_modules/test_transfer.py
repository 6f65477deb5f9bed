"""transfer: the transfer-learning net, frozen or fine-tuned, on a tiny ImageFolder written here (32x32
images, two classes) with the small stand-in trunk ``small_cnn`` or a randomly initialised MobileNetV2."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import lightning_modules.tasks.transfer_learning as tl
from lightning_modules.classifier import ClassifierModule
from lightning_modules.data.hymenoptera import HymenopteraDataModule
from lightning_modules.runs import training
from lightning_modules.transfer import build_transfer_net


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
        "name": f"transfer_{backbone}",
        "weights": "none",
        "num_classes": 2,
        "mode": mode,
        "bn_stats": bn_stats,
    }


def _module(spec: dict, lr: float = 0.05, **kwargs) -> ClassifierModule:
    return ClassifierModule(spec, lr=lr, optimizer="sgd", nesterov=False, scheduler="step", **kwargs)


def _args(epochs: int = 2):
    return tl.PROGRAM.parse(
        ["fit", "--max_epochs", str(epochs), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    )[1]


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
    assert build_transfer_net("mobilenet_v2", **{k: v for k, v in net.spec.items() if k != "name"}).spec == net.spec
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
    best = training.best_row(history, "val_acc", "max")
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


def test_build_transfer_net_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        build_transfer_net("mobilenet_v2", "none", 2, "thaw")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_transfer_net("vgg", "none", 2, "freeze")
    with pytest.raises(ValueError, match="bn_stats must be one of"):
        build_transfer_net("mobilenet_v2", "none", 2, "finetune", "batch")


def test_optimizer_sees_only_trainable_parameters():
    finetune = _module(_spec("finetune", backbone="mobilenet_v2"), lr=1e-3, head_lr=1e-2)
    groups = finetune.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert groups[1]["params"] == list(finetune.net.head.parameters())
    frozen = _module(_spec("freeze", backbone="mobilenet_v2"), lr=1e-2, head_lr=1e-2)
    (group,) = frozen.configure_optimizers()["optimizer"].param_groups
    assert group["params"] == list(frozen.net.head.parameters())
