"""classifier: the one classification LightningModule: it trains the digit networks and their twins,
rejects bad hyper-parameters, and its checkpoints hold only plain data and reload identically."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.classifier import ClassifierModule
from lightning_modules.networks import ConvNet, TwoLayerNet


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
def test_networks_overfit_64_samples(index, impl, small_nets):
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
    with pytest.raises(ValueError, match="unknown model 'mlp'"):
        ClassifierModule({"name": "mlp"})


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
