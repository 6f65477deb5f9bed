"""pretrained: weight files loaded by order (renamed tensors) with counts and shapes checked; missing
weights an error, never a random trunk; every backbone on customops layers, or torchvision's on request."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import customops as co
from lightning_modules.pretrained import BACKBONES, backbone, load_state_dict_by_order
from lightning_modules.runs.errors import PretrainedWeightsError
from lightning_modules.transfer import build_transfer_net


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


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_is_built_on_customops_layers_or_natively_on_request(name):
    ours, channels = backbone(name, None)
    native, native_channels = backbone(name, None, "native")
    leaves = [m for m in ours.modules() if not list(m.children())]
    assert leaves and all(type(m).__module__.startswith("customops.") for m in leaves), {type(m) for m in leaves}
    assert any(isinstance(m, co.Conv2d) for m in leaves) and any(isinstance(m, co.BatchNorm2d) for m in leaves)
    assert any(type(m) is nn.Conv2d for m in native.modules()) and channels == native_channels
    assert list(ours.state_dict()) == list(native.state_dict())  # either kind loads the other's weights
    with pytest.raises(ValueError, match="trunk must be one of"):
        backbone(name, None, "torch")
