"""customops.convert (customops/convert.py): torchvision's resnet18, mobilenet_v2 and vgg11_bn and
the ImageNet-pretrained MobileNetV2 trunk give the same outputs, parameter gradients and, after a
training step, BatchNorm running statistics as the originals, in train and eval mode; a user's
nested module; strict errors, strict=False, inplace, and what the converted net is made of.

Tolerances, relative to the largest magnitude of the compared set (the output; all parameter
gradients; all buffers): float64 within 1e-10 of torch, everything, both modes. float32 within 1e-4
of torch, or, where torch's own float32 result is further than that from the exact (float64) one,
no further from it than twice torch's distance (training-mode BatchNorm divides by batch standard
deviations, and a small one amplifies rounding). In float32 the parameter gradients are compared
in evaluation mode only: in training mode a pre-activation within rounding of a ReLU kink (|y| ~
1e-6) flips its decision in one network and not the other, and that one entry moves every gradient
below it by percents -- measured on vgg11_bn over 3 seeds, such flips against float64 happened 3
times in the converted network and 2 times in torch's; float64 checks the same gradients exactly.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torch import nn

import customops as co

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _worst(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    scale = max(1.0, max(w.abs().max().item() for w in want))
    return max((g.double() - w.double()).abs().max().item() for g, w in zip(got, want)) / scale


def _grads(net: nn.Module) -> list[torch.Tensor]:
    """Parameter gradients in nn layout (co.Linear's (in, out) weight gradient transposed back);
    zeros for a parameter the forward did not use."""
    out = []
    for module in net.modules():
        for p_name, p in module.named_parameters(recurse=False):
            g = torch.zeros_like(p) if p.grad is None else p.grad
            out.append(g.t() if isinstance(module, co.Linear) and p_name == "weight" else g)
    return out


def _dropout_off(net: nn.Module) -> nn.Module:
    """Dropout in eval mode (its masks are random numbers: the two nets would draw different ones)."""
    for m in net.modules():
        if isinstance(m, (nn.Dropout, co.Dropout)):
            m.eval()
    return net


def _run(net: nn.Module, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """[output], parameter gradients, floating buffers after one forward and backward of net on x."""
    out = net(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out.backward(upstream.to(x.dtype))
    return [[out.detach()], _grads(net), [b for b in net.buffers() if b.is_floating_point()]]


def assert_same_network(native: nn.Module, x: torch.Tensor, train: bool) -> nn.Module:
    """Convert native, run both on x in train or eval mode, compare outputs, gradients and buffers
    (not the gradients in float32 training mode: see the module's docstring)."""
    native = _dropout_off(native.train(train))
    converted = _dropout_off(co.convert(native))
    exact = copy.deepcopy(native).double() if x.dtype == torch.float32 else None  # before any step
    tol = TOL[x.dtype]
    ours, theirs = _run(converted, x), _run(native, x)
    reference = None
    for what, got, want in zip(("output", "gradients", "buffers"), ours, theirs):
        if what == "gradients" and train and x.dtype == torch.float32:
            continue
        err = _worst(got, want)
        if err <= tol:
            continue
        assert exact is not None, f"{what}: {err:.1e} from torch (> {tol:.0e})"
        reference = reference or _run(exact, x.double())
        ref = reference[("output", "gradients", "buffers").index(what)]
        ours_err, torch_err = _worst(got, ref), _worst(want, ref)
        assert ours_err <= max(tol, 2 * torch_err), f"{what}: {ours_err:.1e} from float64, torch {torch_err:.1e}"
    return converted


def _images(dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    """64x64 images: the last blocks see 2x2 maps. In float32, 4 of them: 16 values per channel for
    training-mode BatchNorm's statistics there (with a handful, its division by a small standard
    deviation amplifies rounding differences beyond 1e-4, in either network)."""
    return torch.randn(
        2 if dtype == torch.float64 else 4, 3, 64, 64, generator=torch.Generator().manual_seed(seed), dtype=dtype
    )


@functools.cache
def _network(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def _fresh(name: str, dtype: torch.dtype) -> nn.Module:
    return copy.deepcopy(_network(name)).to(dtype)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_networks(name, dtype, train):
    x = _images(dtype)
    converted = assert_same_network(_fresh(name, dtype), x, train)
    assert not _native_compute_layers(converted)


def test_vgg11_bn():
    """Whole, in training mode and float32: its classifier holds 120M weights. Its convolutional
    part (with a small head) in float64 and both modes."""
    assert_same_network(_fresh("vgg11_bn", torch.float32), _images(torch.float32), train=True)
    vgg = _network("vgg11_bn")
    for train in (True, False):
        trunk = nn.Sequential(copy.deepcopy(vgg.features), vgg.avgpool, nn.Flatten(), nn.Linear(512 * 7 * 7, 10))
        assert_same_network(trunk.double(), _images(torch.float64), train)


def _native_compute_layers(net: nn.Module) -> list[str]:
    structural = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Flatten)
    return [
        name
        for name, m in net.named_modules()
        if type(m).__module__.startswith("torch.nn") and not isinstance(m, structural)
    ]


@pytest.fixture(scope="module")
def pretrained_trunk() -> nn.Module:
    from lightning_modules.pretrained import PretrainedWeightsError, mobilenet_v2_features

    try:
        return mobilenet_v2_features("imagenet")
    except PretrainedWeightsError as err:  # `make setup` installs them
        pytest.skip(f"the ImageNet MobileNetV2 weights are not installed: {err}")


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_pretrained_mobilenet_v2_trunk(pretrained_trunk, dtype, train):
    converted = assert_same_network(copy.deepcopy(pretrained_trunk).to(dtype), _images(dtype, seed=2), train)
    conv_types = {type(m) for m in converted.modules()} - {nn.Sequential}
    assert conv_types <= {co.Conv2d, co.BatchNorm2d, co.ReLU6} | {
        type(m) for m in converted.modules() if "torchvision" in type(m).__module__
    }


def test_pretrained_trunk_frozen_channels_last_inference_mode(pretrained_trunk):
    """As the captioning features and the frozen transfer trunk run it."""
    native = copy.deepcopy(pretrained_trunk).eval().requires_grad_(False)
    converted = co.convert(native).to(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in converted.parameters())
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3)).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        want, got = native(x), converted(x)
    assert _worst([got], [want]) <= 1e-4


def test_batchnorm_frozen_one_by_one_as_transfer_learning_does(pretrained_trunk):
    net = co.convert(pretrained_trunk).train()
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 52 and all(isinstance(m, co.BatchNorm2d) for m in bns)
    for m in bns:
        m.eval()
    before = [m.running_mean.clone() for m in bns]
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before))
    assert all(m.weight.grad is not None for m in bns)


class Block(nn.Module):
    """A user's module: children in a ModuleList and a ModuleDict, functional calls in forward."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2)])
        self.norms = nn.ModuleDict({"a": nn.BatchNorm2d(4), "b": nn.GroupNorm(2, 4)})
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(4 * 4 * 4, 5), nn.Hardtanh(-2, 2))

    def forward(self, x):
        h = torch.nn.functional.relu(self.norms["a"](self.convs[0](x)))  # functional: stays as it is
        h = h + self.norms["b"](self.convs[1](h))
        return self.head(self.pool(h))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.embed = nn.Embedding(10, 3, padding_idx=0)
        self.norm = nn.LayerNorm(5)

    def forward(self, x):
        return self.norm(self.block(x))


def test_a_users_nested_module():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    converted = assert_same_network(Net().double(), x, train=True)
    assert type(converted.block) is Block and type(converted.block.convs) is nn.ModuleList
    assert [type(m) for m in converted.block.convs] == [co.Conv2d, co.Conv2d]
    assert type(converted.block.norms["a"]) is co.BatchNorm2d and type(converted.block.norms["b"]) is co.GroupNorm
    assert type(converted.embed) is co.WordEmbedding and converted.embed.padding_idx == 0
    assert type(converted.norm) is co.LayerNorm and type(converted.block.head[0]) is nn.Flatten
    assert [name for name, _ in converted.named_parameters()] == [name for name, _ in Net().named_parameters()]


def test_sharing_nothing_unless_inplace():
    native = Net()
    converted = co.convert(native)
    assert type(native.block.convs[0]) is nn.Conv2d  # the original is untouched
    ours = {p.untyped_storage().data_ptr() for p in converted.parameters()}
    assert not ours & {p.untyped_storage().data_ptr() for p in native.parameters()}
    weight = native.block.convs[0].weight
    same = co.convert(native, inplace=True)
    assert same is native and type(native.block.convs[0]) is co.Conv2d
    assert native.block.convs[0].weight is weight  # the twin took the very Parameter


def test_options_state_and_mode_carry_over():
    layers = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, groups=2, bias=False),
        nn.BatchNorm2d(4, eps=1e-3, momentum=None, affine=False),
        nn.ReLU6(inplace=True),
        nn.MaxPool2d(3, 2, 1, dilation=1),
        nn.AdaptiveAvgPool2d((1, None)),
    )
    layers[1].eval()
    layers[0].weight.requires_grad_(False)
    converted = co.convert(layers)
    conv, bn, act, pool, gap = converted
    assert (conv.stride, conv.padding, conv.groups, conv.bias) == ((2, 2), (1, 1), 2, None)
    assert not conv.weight.requires_grad
    assert (bn.eps, bn.momentum, bn.affine, bn.training) == (1e-3, None, False, False)
    assert act.inplace and (pool.kernel_size, pool.stride, pool.padding) == ((3, 3), (2, 2), (1, 1))
    assert gap.output_size == (1, None)
    assert isinstance(co.convert(nn.Linear(3, 2)), co.Linear)  # a layer itself


def test_linear_weight_is_transposed():
    native = nn.Linear(3, 2)
    ours = co.convert(native)
    assert ours.weight.shape == (3, 2) and torch.equal(ours.weight, native.weight.t())
    x = torch.randn(4, 3)
    torch.testing.assert_close(ours(x), native(x))


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_strict_names_every_unsupported_layer_and_its_path():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Sequential(nn.SiLU(), nn.MaxPool2d(2, ceil_mode=True)),
        MyConv(4, 4, 1),
        nn.Conv1d(4, 4, 1),
        nn.Embedding(3, 2, max_norm=1.0),
        nn.LayerNorm((4, 4)),
    )
    with pytest.raises(ValueError) as info:
        co.convert(net)
    message = str(info.value)
    assert message.startswith("convert: 7 layer(s) cannot be converted")
    for line in (
        "0: Conv2d: padding_mode='reflect' is not supported",
        "1.0: SiLU: no customops twin",
        "1.1: MaxPool2d: ceil_mode=True is not supported",
        "2: MyConv, a subclass of torch.nn.Conv2d",
        "3: Conv1d: no customops twin",
        "4: Embedding: max_norm=1.0 is not supported",
        "5: LayerNorm: normalized_shape=(4, 4) is not supported",
    ):
        assert line in message, line
    assert type(net[0]) is nn.Conv2d  # nothing was changed


def test_strict_false_keeps_them_native_and_lists_them():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2, ceil_mode=True))
    assert co.unsupported_layers(net) == [
        ("1", "SiLU: no customops twin"),
        ("3", "MaxPool2d: ceil_mode=True is not supported (only ceil_mode=False)"),
    ]
    with pytest.warns(co.ConversionWarning, match=r"2 layer\(s\) left as torch.nn layers:\n  1: SiLU"):
        converted = co.convert(net, strict=False)
    assert [type(m) for m in converted] == [co.Conv2d, nn.SiLU, co.BatchNorm2d, nn.MaxPool2d]
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(converted(x), net(x))


def test_bad_arguments():
    with pytest.raises(TypeError, match="convert: module must be a torch.nn.Module"):
        co.convert("resnet18")
    with pytest.raises(TypeError, match="convert: strict must be a bool"):
        co.convert(nn.ReLU(), strict="no")
    with pytest.raises(TypeError, match="convert: inplace must be a bool"):
        co.convert(nn.ReLU(), inplace=None)


def test_the_readme_example_prints_what_it_shows():
    """README.md's customops.convert section: its code runs and prints exactly the output shown beside it."""
    import contextlib
    import io
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Standard CNNs on customops layers") :]
    section = section[: section.index("\n## ")]
    (code, shown) = re.findall(r"^```(?:python|text)\n(.*?)^```", section, re.S | re.M)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == shown.splitlines()
