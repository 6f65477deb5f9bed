"""The homework's two classifiers as plain nn.Modules, built from customops layers or from torch.nn.

Each network takes ``impl="custom"`` (customops layers, hand-written backward) or
``impl="torch"`` (the identical torch.nn twin). Both draw their initial weights with the
same calls in the same order, in torch.nn's layout, so under the same seed the twin
starts from exactly the custom network's weights and a speed or accuracy comparison
is fair.

``small_cnn`` is the transfer task's stand-in trunk (two conv-BatchNorm-ReLU blocks), on the same
two kinds of layers.

Both classifiers are registered in ``models`` (``two_layer_net``, ``conv_net``); ``models.build_model(net.spec)``
rebuilds a network from the plain dict ``net.spec`` that a checkpoint stores in its hyper-parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.models import register_model

IMPLS = ("custom", "torch")


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"networks: impl must be one of {IMPLS}, got {impl!r}")


def _check_positive(name: str, **sizes: int) -> None:
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive int, got {value!r}")


def _linear(in_features: int, out_features: int, impl: str) -> nn.Module:
    if impl == "custom":
        import customops as co

        return co.Linear(in_features, out_features)
    return nn.Linear(in_features, out_features)


def _init_generator() -> torch.Generator:
    """A generator seeded by one draw from the global RNG, taken before any layer is built.

    The layers' own constructors may consume the global stream differently in the two impls;
    the initial weights come from this private generator, so they do not depend on that.
    """
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))


@torch.no_grad()
def _init_(layer: nn.Module, impl: str, gen: torch.Generator) -> None:
    """torch.nn's default init (uniform in +-1/sqrt(fan_in) for weight and bias), drawn in torch.nn's layout.

    customops.Linear stores its weight as (in, out), torch.nn.Linear as (out, in): drawing the
    (out, in) tensor and transposing it for the custom layer makes both impls consume the random
    stream identically.
    """
    weight = layer.weight
    shape = weight.shape[::-1] if (impl == "custom" and weight.dim() == 2) else weight.shape
    fan_in = math.prod(shape[1:])  # (out, in) or (F, C, HH, WW)
    bound = 1.0 / math.sqrt(fan_in)
    w = torch.empty(shape).uniform_(-bound, bound, generator=gen)
    weight.copy_(w.t() if (impl == "custom" and weight.dim() == 2) else w)
    if layer.bias is not None:
        layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=gen))


@register_model("two_layer_net")
class TwoLayerNet(nn.Module):
    """fc - relu - fc: images x (N, 1, 28, 28) (or any (N, d1..dk) with prod = input_dim) -> scores (N, num_classes)."""

    def __init__(self, hidden: int = 1024, input_dim: int = 784, num_classes: int = 10, impl: str = "custom") -> None:
        super().__init__()
        _check_impl(impl)
        gen = _init_generator()
        _check_positive("TwoLayerNet", hidden=hidden, input_dim=input_dim, num_classes=num_classes)
        self.spec = {
            "name": "two_layer_net",
            "impl": impl,
            "hidden": hidden,
            "input_dim": input_dim,
            "num_classes": num_classes,
        }
        if impl == "custom":
            import customops as co

            self.relu = co.ReLU()
        else:
            self.relu = nn.ReLU()
        self.fc1 = _linear(input_dim, hidden, impl)
        self.fc2 = _linear(hidden, num_classes, impl)
        for layer in (self.fc1, self.fc2):
            _init_(layer, impl, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, input_dim)
        return self.fc2(self.relu(self.fc1(x)))


def pooled_size(image_size: int, kernel_size: int) -> int:
    """The side of ConvNet's pooled map (a valid k x k convolution, then 2x2 pooling); ValueError when
    nothing is left to pool."""
    pooled = (image_size - kernel_size + 1) // 2
    if pooled < 1:
        raise ValueError(
            f"ConvNet: kernel_size={kernel_size} leaves nothing of a {image_size}x{image_size} image to pool "
            f"(at most {image_size - 1})"
        )
    return pooled


@register_model("conv_net")
class ConvNet(nn.Module):
    """conv (F filters, k x k, valid) - relu - 2x2 max pool - fc (hidden) - relu - fc.

    x (N, in_channels, H, W) -> scores (N, num_classes); the conv output is
    (N, F, H-k+1, W-k+1) and the pooled one (N, F, (H-k+1)//2, (W-k+1)//2).
    """

    def __init__(
        self,
        filters: int = 32,
        kernel_size: int = 5,
        hidden: int = 256,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        impl: str = "custom",
    ) -> None:
        super().__init__()
        _check_impl(impl)
        gen = _init_generator()
        _check_positive(
            "ConvNet",
            filters=filters,
            kernel_size=kernel_size,
            hidden=hidden,
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
        )
        pooled = pooled_size(image_size, kernel_size)
        self.spec = {
            "name": "conv_net",
            "impl": impl,
            "filters": filters,
            "kernel_size": kernel_size,
            "hidden": hidden,
            "in_channels": in_channels,
            "image_size": image_size,
            "num_classes": num_classes,
        }
        if impl == "custom":
            import customops as co

            self.conv = co.Conv2d(in_channels, filters, kernel_size)
            self.relu = co.ReLU()
            self.pool = co.MaxPool2d(2)
        else:
            self.conv = nn.Conv2d(in_channels, filters, kernel_size)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
        self.fc1 = _linear(filters * pooled * pooled, hidden, impl)
        self.fc2 = _linear(hidden, num_classes, impl)
        for layer in (self.conv, self.fc1, self.fc2):
            _init_(layer, impl, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv(x)))  # (N, F, H', W')
        x = x.flatten(1)  # (N, F * H' * W')
        return self.fc2(self.relu(self.fc1(x)))


def small_cnn(impl: str = "custom") -> nn.Sequential:
    """Two conv-BatchNorm-ReLU blocks, (B, 3, H, W) -> (B, 16, H/2, W/2): customops layers, or with
    ``impl="torch"`` the torch.nn twin (the transfer task's ``--trunk native``); the same parameter and
    buffer names either way."""
    _check_impl(impl)
    if impl == "custom":
        import customops as co

        conv, norm, relu = co.Conv2d, co.BatchNorm2d, co.ReLU
    else:
        conv, norm, relu = nn.Conv2d, nn.BatchNorm2d, nn.ReLU
    return nn.Sequential(
        conv(3, 8, 3, padding=1), norm(8), relu(), conv(8, 16, 3, stride=2, padding=1), norm(16), relu()
    )
