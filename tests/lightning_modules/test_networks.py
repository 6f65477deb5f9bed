"""networks: the two digit networks and their torch.nn twins (identical initial weights and outputs), rebuilt
from their specs."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.models import build_model
from lightning_modules.networks import ConvNet, TwoLayerNet


@pytest.mark.parametrize("index", [0, 1], ids=["softmax", "cnn"])
def test_torch_twin_has_identical_init_and_outputs(index, small_nets):
    torch.manual_seed(3)
    custom = small_nets("custom")[index]
    torch.manual_seed(3)
    twin = small_nets("torch")[index]
    for (name, p), (_, q) in zip(custom.named_parameters(), twin.named_parameters()):
        q = q.t() if (p.dim() == 2 and p.shape != q.shape) else q  # customops Linear is (in, out)
        assert torch.equal(p, q), name
    x = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(custom(x), twin(x), rtol=1e-5, atol=1e-5)


def test_build_model_round_trips_spec(small_nets):
    for net in small_nets("custom") + small_nets("torch"):
        rebuilt = build_model(net.spec)
        assert type(rebuilt) is type(net) and rebuilt.spec == net.spec
    with pytest.raises(ValueError, match="impl"):
        TwoLayerNet(hidden=8, impl="numpy")
    with pytest.raises(ValueError, match="hidden"):
        ConvNet(hidden=0)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvNet(kernel_size=28)
