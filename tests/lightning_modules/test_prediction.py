"""prediction: a captioning checkpoint's image encoder is rebuilt on the kind of trunk it records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import customops as co
from lightning_modules.prediction import image_encoder
from lightning_modules.pretrained import small_cnn_trunk


@pytest.mark.parametrize(("recorded", "conv"), [("customops", co.Conv2d), ("native", nn.Conv2d), (None, co.Conv2d)])
def test_the_image_encoder_is_rebuilt_on_the_recorded_trunk(recorded, conv):
    torch.manual_seed(0)
    trained = small_cnn_trunk(trunk=recorded or "customops")
    spec = {"backbone": "small_cnn", "weights": "none", "pooling": "mean"}
    if recorded is not None:  # a checkpoint from before the trunk was recorded has no "trunk"
        spec["trunk"] = recorded
    module = SimpleNamespace(hparams={"image_encoder": spec}, image_encoder_state=trained.state_dict())
    encoder, described = image_encoder(module)
    assert described is spec and not encoder.training
    assert [type(m) for m in encoder if isinstance(m, (nn.Conv2d, co.Conv2d))] == [conv, conv]
    for (name, want), got in zip(trained.state_dict().items(), encoder.state_dict().values()):
        assert torch.equal(want, got), name  # the checkpoint's weights
