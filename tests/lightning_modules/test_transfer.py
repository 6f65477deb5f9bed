"""transfer: the transfer-learning net, frozen or fine-tuned, on a tiny ImageFolder written here (32x32
images, two classes) with the small stand-in trunk ``small_cnn`` or a randomly initialised MobileNetV2;
the trunk on customops layers only (the modules and the loss's autograd graph), or native on request."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import customops as co
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


# ------------------------------------------------------------------ the trunk's layers: customops or native

# Modules of torch.nn that hold no computation of their own: they only call their children.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _torch_nn_compute_layers(net: nn.Module) -> list[str]:
    """The paths of the modules that compute with torch.nn's own layers: a torch.nn class that is not a
    container, or a leaf module that is not customops'."""
    found = []
    for path, module in net.named_modules():
        kind = type(module)
        ours = kind.__module__.startswith("customops.")
        if (kind.__module__.startswith("torch.nn.") and not isinstance(module, _CONTAINERS)) or (
            not ours and not list(module.children())
        ):
            found.append(f"{path}: {kind.__module__}.{kind.__name__}")
    return found


def _graph_nodes(loss: torch.Tensor) -> list:
    """Every node of loss's autograd graph, each once."""
    seen, stack, nodes = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(child for child, _ in node.next_functions)
    return nodes


def _node_name(node) -> str:
    """A customops Function's node as customops.<file>.<Function>; any other node by its class."""
    forward = getattr(node, "_forward_cls", None)
    return f"{forward.__module__}.{forward.__name__}" if forward is not None else type(node).__name__


@pytest.mark.parametrize(
    ("mode", "bn_stats"), [("finetune", "pretrained"), ("finetune", "update"), ("freeze", "pretrained")]
)
def test_the_trunk_runs_on_customops_layers_only(mode, bn_stats):
    net = build_transfer_net("mobilenet_v2", "none", 2, mode, bn_stats)
    assert net.spec["trunk"] == "customops"
    assert _torch_nn_compute_layers(net) == []
    convs = [m for m in net.trunk.modules() if isinstance(m, co.Conv2d)]
    norms = [m for m in net.trunk.modules() if isinstance(m, co.BatchNorm2d)]
    assert (len(convs), len(norms)) == (52, 52)  # MobileNetV2's features: 52 convolutions, 52 BatchNorms
    net.train()
    loss = co.softmax_loss(net(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1]))
    names = [_node_name(n) for n in _graph_nodes(loss)]
    count = {name: names.count(name) for name in set(names)}
    conv_nodes = count.get("customops.conv.Conv2dFunction", 0) + count.get("customops.conv.DepthwiseConv2dFunction", 0)
    if mode == "freeze":
        # No graph through the frozen trunk: the head's affine layer and the loss only.
        assert conv_nodes == 0 and not any("batchnorm" in name for name in names)
        assert {"customops.affine.AffineFunction", "customops.losses.SoftmaxLossFunction"} <= count.keys()
        return
    # One customops backward node per convolution and per BatchNorm (evaluation mode: statistics kept).
    norm_node = (
        "customops.batchnorm.BatchNormEvalFunction"
        if bn_stats == "pretrained"
        else "customops.batchnorm.BatchNormFunction"
    )
    assert conv_nodes == 52 and count.get(norm_node, 0) == 52, count
    # Beside them only the residual sums, the flattening of the pooled features and the leaves.
    others = {name for name in count if not name.startswith("customops.")}
    assert others <= {"AddBackward0", "ViewBackward0", "AccumulateGrad"}, others


def test_small_cnn_trunk_is_customops_and_native_on_request():
    assert _torch_nn_compute_layers(build_transfer_net("small_cnn", "none", 2, "finetune")) == []
    native = build_transfer_net("small_cnn", "none", 2, "finetune", trunk="native")
    assert native.spec["trunk"] == "native"
    assert [type(m) for m in native.trunk] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2


def test_native_trunk_is_torchvisions_and_equals_the_customops_one():
    ours = build_transfer_net("mobilenet_v2", "none", 2, "finetune")
    native = build_transfer_net("mobilenet_v2", "none", 2, "finetune", trunk="native")
    assert sum(isinstance(m, nn.Conv2d) for m in native.modules()) == 52
    assert not any(isinstance(m, nn.Conv2d) for m in ours.modules())
    # The same state_dict names and shapes: either kind loads the other's weights.
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in native.state_dict().items()}
    native.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), native.eval()(x), rtol=1e-4, atol=1e-5)


def test_build_transfer_net_rejects_an_unknown_trunk():
    with pytest.raises(ValueError, match=r"trunk must be one of \('customops', 'native'\), got 'torch'"):
        build_transfer_net("small_cnn", "none", 2, "finetune", trunk="torch")


@pytest.mark.parametrize("bn_stats", ["pretrained", "update"])
def test_finetune_keeps_or_updates_the_customops_batchnorm_statistics(bn_stats):
    torch.manual_seed(0)
    net = build_transfer_net("mobilenet_v2", "none", 2, "finetune", bn_stats).train()
    norms = [m for m in net.trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 52 and all(type(m) is co.BatchNorm2d for m in norms)  # found as torch's are
    assert all(m.training == (bn_stats == "update") for m in norms)
    before = {k: v.clone() for k, v in net.trunk.state_dict().items() if "running_" in k or "num_batches" in k}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        co.softmax_loss(net(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 0, 1])).backward()
        opt.step()
    after = net.trunk.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if bn_stats == "pretrained":
        assert changed == []  # bit-identical running statistics and counters
    else:
        assert len(changed) == len(before)  # every running mean, variance and counter moved
    # BatchNorm's scale and shift still get gradients either way (they are tiny through a random trunk:
    # test_finetune_changes_trunk sees them learn on small_cnn).
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in norms)
    assert all(m.bias.grad is not None and m.bias.grad.abs().sum() > 0 for m in norms)
