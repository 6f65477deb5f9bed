"""models: one registry of the networks, one key each, built from a plain config."""

from __future__ import annotations

import pytest
import torch

from lightning_modules import models
from lightning_modules.captioners import CaptioningRNN, TransformerCaptioner
from lightning_modules.networks import ConvNet, TwoLayerNet
from lightning_modules.transfer import TransferNet


def test_every_network_has_one_key():
    assert models.list_models() == [
        "conv_net",
        "lstm_captioner",
        "rnn_captioner",
        "transfer_mobilenet_v2",
        "transfer_resnet18",
        "transfer_small_cnn",
        "transformer_captioner",
        "two_layer_net",
    ]


@pytest.mark.parametrize(
    "name,config,kind",
    [
        ("two_layer_net", {"hidden": 8}, TwoLayerNet),
        ("conv_net", {"filters": 2, "kernel_size": 3, "hidden": 8}, ConvNet),
        ("rnn_captioner", {"vocab_size": 10, "feature_dim": 6, "wordvec_dim": 4, "hidden_dim": 8}, CaptioningRNN),
        ("lstm_captioner", {"vocab_size": 10, "feature_dim": 6, "wordvec_dim": 4, "hidden_dim": 8}, CaptioningRNN),
        (
            "transformer_captioner",
            {"vocab_size": 10, "feature_dim": 6, "positions": 4, "model_dim": 8},
            TransformerCaptioner,
        ),
        ("transfer_small_cnn", {"weights": "none", "mode": "freeze"}, TransferNet),
    ],
)
def test_get_model_builds_the_key_and_the_spec_rebuilds_it(name, config, kind):
    torch.manual_seed(0)
    net = models.get_model(name, **config)
    assert isinstance(net, kind) and net.spec["name"] == name
    assert {k: net.spec[k] for k in config} == config
    torch.manual_seed(0)
    again = models.build_model(net.spec)  # what a checkpoint stores rebuilds the same network
    assert again.spec == net.spec
    for (key, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    if name == "lstm_captioner":
        assert net.config.cell == "lstm"


def test_unknown_keys_and_specs_are_named():
    with pytest.raises(ValueError, match="unknown model 'mlp'; choose one of conv_net, "):
        models.get_model("mlp")
    with pytest.raises(ValueError, match="expected a dict with a 'name' key"):
        models.build_model({"kind": "softmax", "hidden": 8})
    with pytest.raises(ValueError, match="registered already"):
        models.register_model("two_layer_net")(lambda: torch.nn.Identity())
