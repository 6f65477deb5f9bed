"""Registry entries of the layers standard CNNs are made of: batch and group normalisation, grouped,
depthwise and dilated convolution, padded max pooling, average and adaptive average pooling,
hardtanh and relu6, and softmax_loss's ignore_index and label_smoothing.

Twins: F.batch_norm, F.group_norm, F.conv2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
F.hardtanh, F.relu6, F.cross_entropy, with the same arguments. The benchmark rows time
forward+backward at MobileNetV2 / ResNet shapes against them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..activation import hardtanh, relu6
from ..batchnorm import batch_norm
from ..conv import conv2d
from ..losses import softmax_loss
from ..norm import group_norm
from ..pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .registry import BenchCase, Case, OpSpec
from .twins import fwd_bwd


def _randn(shape, dtype, device, gen, grad=True, scale=1.0, shift=0.0) -> torch.Tensor:
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype=dtype, device=device)
    return t.requires_grad_(grad)


def _channels_last(shape, dtype, device, gen, **kw) -> torch.Tensor:
    """A (N, C, H, W) tensor in channels-last memory (not contiguous), requiring grad."""
    t = _randn(shape, dtype, device, gen, grad=False, **kw).contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


def _transposed(shape, dtype, device, gen, **kw) -> torch.Tensor:
    """A tensor of `shape` that is a transposed view (not contiguous), requiring grad."""
    base = _randn(tuple(reversed(shape)), dtype, device, gen, grad=False, **kw)
    return base.permute(*reversed(range(len(shape)))).requires_grad_()


def _away_from(points, shape, dtype, device, gen) -> torch.Tensor:
    """Random values at least 0.1 from every kink in `points`, so finite differences never cross one."""
    v = torch.rand(shape, generator=gen, dtype=torch.float64) * 10 - 3  # in [-3, 7)
    for p in points:
        near = (v - p).abs() < 0.1
        v = torch.where(near, v + 0.25, v)
    return v.to(dtype=dtype, device=device).requires_grad_()


def _distinct(shape, dtype, device, gen) -> torch.Tensor:
    """A random permutation of well-separated values: no ties inside any pooling window."""
    n = torch.Size(shape).numel()
    v = torch.randperm(n, generator=gen).to(torch.float64).view(shape) / 10
    return v.to(dtype=dtype, device=device).requires_grad_()


# --------------------------------------------------------------------------- batch and group norm


def batch_norm_train(x, weight=None, bias=None, eps=1e-5):
    """co.batch_norm in training mode with no running statistics (they are tested apart: see the tests)."""
    return batch_norm(x, None, None, weight, bias, True, 0.1, eps)


def batch_norm_train_twin(x, weight=None, bias=None, eps=1e-5):
    return F.batch_norm(x, None, None, weight, bias, True, 0.1, eps)


def batch_norm_eval(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """co.batch_norm in evaluation mode: the running statistics are (non-differentiable) inputs."""
    return batch_norm(x, running_mean, running_var, weight, bias, False, 0.1, eps)


def batch_norm_eval_twin(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.1, eps)


def _batch_norm_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s, **k: _randn(s, dtype, device, gen, **k)  # noqa: E731
    return [
        ((r(5, 3), r(3), r(3)), {}),  # (N, C)
        ((r(4, 2, 5, scale=3.0, shift=4.0), r(2), None), {"eps": 1e-3}),  # (N, C, L), far from zero mean
        ((_channels_last((3, 4, 3, 2), dtype, device, gen), r(4), r(4)), {}),  # (N, C, H, W), channels-last
        ((_transposed((2, 3, 2, 3), dtype, device, gen), None, None), {}),  # no affine parameters
    ]


def _batch_norm_eval_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s, **k: _randn(s, dtype, device, gen, **k)  # noqa: E731

    def stats(c):
        mean = _randn((c,), dtype, device, gen, grad=False)
        var = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(dtype=dtype, device=device)
        return mean, var

    return [
        ((r(5, 3), *stats(3), r(3), r(3)), {}),
        ((r(4, 2, 5), *stats(2), r(2), None), {"eps": 1e-3}),
        ((_channels_last((3, 4, 3, 2), dtype, device, gen), *stats(4), r(4), r(4)), {}),
        ((_transposed((2, 3, 2, 3), dtype, device, gen), *stats(3), None, None), {}),
    ]


def _group_norm_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s, **k: _randn(s, dtype, device, gen, **k)  # noqa: E731
    return [
        ((r(2, 6, 3, 2), 3, r(6), r(6)), {}),  # 3 groups of 2 channels
        ((r(3, 4, 5, scale=3.0, shift=4.0), 1, r(4), None), {"eps": 1e-3}),  # one group: layer norm over (C, L)
        ((_channels_last((2, 4, 3, 3), dtype, device, gen), 4, r(4), r(4)), {}),  # instance norm, channels-last
        ((_transposed((3, 6), dtype, device, gen), 2, None, None), {}),  # (N, C), no affine parameters
    ]


# --------------------------------------------------------------------------- convolution


def _grouped_conv_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    return [
        ((r(2, 4, 5, 6), r(6, 2, 3, 2), r(6)), {"groups": 2}),  # 2 groups of 2 channels -> 3 filters each
        ((r(1, 2, 7, 6), r(3, 2, 3, 3), r(3)), {"dilation": 2, "padding": 1}),  # dilated
        ((r(2, 6, 6, 5), r(6, 2, 2, 3), None), {"groups": 3, "stride": 2, "dilation": (2, 1), "padding": (1, 0)}),
        ((_channels_last((1, 4, 5, 5), dtype, device, gen), r(8, 1, 3, 3), r(8)), {"groups": 4, "padding": 1}),
    ]  # (the last: depthwise with a channel multiplier of 2, the grouped path)


def _depthwise_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    return [
        ((r(2, 3, 5, 6), r(3, 1, 3, 3), r(3)), {"padding": 1, "groups": 3}),  # MobileNet's 3x3, stride 1
        ((r(1, 4, 7, 6), r(4, 1, 3, 3), None), {"stride": 2, "padding": 1, "groups": 4}),  # stride 2
        ((_channels_last((2, 3, 6, 5), dtype, device, gen), r(3, 1, 2, 3), r(3)), {"dilation": 2, "groups": 3}),
        (
            (_transposed((1, 2, 5, 5), dtype, device, gen), r(2, 1, 3, 1), r(2)),
            {"stride": (1, 2), "padding": (2, 0), "groups": 2},
        ),
    ]


# --------------------------------------------------------------------------- pooling


def _max_pool_padded_cases(dtype, device, gen) -> list[Case]:
    d = lambda *s: _distinct(s, dtype, device, gen)  # noqa: E731
    x_cl = _distinct((2, 7, 6, 3), dtype, device, gen).detach().permute(0, 3, 1, 2).requires_grad_()  # (2, 3, 7, 6)
    return [
        ((d(2, 3, 7, 7), 3, 2, 1), {}),  # ResNet's stem pooling: 3x3, stride 2, padding 1
        ((d(1, 2, 6, 5), 2, 1, 1), {}),  # padding as large as allowed (half the kernel)
        ((d(1, 2, 7, 7), 3, 1, 1, 2), {}),  # dilation 2
        ((x_cl, (3, 2), (2, 1), (1, 0)), {}),  # channels-last
    ]


def _avg_pool_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    return [
        ((r(2, 3, 4, 6), 2), {}),  # 2x2 tiles (the fast path)
        ((r(1, 2, 7, 6), 3, 2, 1), {}),  # overlapping windows with zero padding, divided by 9
        ((_channels_last((2, 3, 7, 7), dtype, device, gen), 3, 2, 1), {"count_include_pad": False, "ceil_mode": True}),
        ((_transposed((1, 2, 5, 6), dtype, device, gen), (2, 3), (1, 2)), {"divisor_override": 4}),
    ]


def _adaptive_avg_pool_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    return [
        ((r(2, 3, 4, 5), 1), {}),  # global average pooling (ResNet, MobileNetV2)
        ((r(1, 2, 6, 4), (3, 2)), {}),  # sizes dividing the input: tiles
        ((_channels_last((2, 3, 5, 7), dtype, device, gen), (3, 4)), {}),  # overlapping windows, channels-last
        ((_transposed((1, 2, 2, 3), dtype, device, gen), (7, 7)), {}),  # larger than the input (VGG on small images)
    ]


# --------------------------------------------------------------------------- activations and loss options


def _hardtanh_cases(dtype, device, gen) -> list[Case]:
    def a(*s, kinks=(-1.0, 1.0)):
        return _away_from(kinks, s, dtype, device, gen)

    x_t = _away_from((-2.0, 0.5), (5, 4), dtype, device, gen).detach().t().requires_grad_()
    return [
        ((a(4, 5),), {}),
        ((a(2, 3, 4, 5),), {}),
        ((x_t, -2.0, 0.5), {}),  # other bounds, non-contiguous
        ((a(7, kinks=(-0.5, 6.0)), -0.5, 6.0), {}),
    ]


def _relu6_cases(dtype, device, gen) -> list[Case]:
    a = lambda *s: _away_from((0.0, 6.0), s, dtype, device, gen)  # noqa: E731
    x_cl = _away_from((0.0, 6.0), (2, 3, 4, 5), dtype, device, gen).detach()
    x_cl = x_cl.contiguous(memory_format=torch.channels_last).requires_grad_()
    return [((a(4, 5),), {}), ((a(2, 3, 4, 5),), {}), ((x_cl,), {}), ((a(7) * 2,), {})]


def _loss_option_cases(dtype, device, gen) -> list[Case]:
    def labels(n, c, ignored=()):
        y = torch.randint(0, c, (n,), generator=gen)
        y[list(ignored)] = -100
        return y.to(device)

    big = (_randn((4, 5), dtype, device, gen, grad=False) * 3 + 200).requires_grad_()
    return [
        ((_randn((5, 7), dtype, device, gen), labels(5, 7, ignored=(1, 3))), {}),  # ignored rows (-100)
        ((_randn((4, 3), dtype, device, gen), labels(4, 3)), {"label_smoothing": 0.2}),
        ((big, labels(4, 5, ignored=(0,))), {"label_smoothing": 0.1}),  # both, at large scores
        ((_transposed((6, 4), dtype, device, gen), labels(6, 4)), {"ignore_index": 2, "label_smoothing": 0.3}),
    ]


SPECS: list[OpSpec] = [
    OpSpec("batch_norm", batch_norm_train, batch_norm_train_twin, _batch_norm_cases),
    OpSpec("batch_norm_eval", batch_norm_eval, batch_norm_eval_twin, _batch_norm_eval_cases),
    OpSpec("group_norm", group_norm, F.group_norm, _group_norm_cases),
    OpSpec("conv2d_grouped", conv2d, F.conv2d, _grouped_conv_cases, autocast="lower"),
    OpSpec("conv2d_depthwise", conv2d, F.conv2d, _depthwise_cases, autocast="lower"),
    OpSpec("max_pool2d_padded", max_pool2d, F.max_pool2d, _max_pool_padded_cases),
    OpSpec("avg_pool2d", avg_pool2d, F.avg_pool2d, _avg_pool_cases),
    OpSpec("adaptive_avg_pool2d", adaptive_avg_pool2d, F.adaptive_avg_pool2d, _adaptive_avg_pool_cases),
    OpSpec("hardtanh", hardtanh, F.hardtanh, _hardtanh_cases),
    OpSpec("relu6", relu6, F.relu6, _relu6_cases),
    OpSpec("softmax_loss_options", softmax_loss, F.cross_entropy, _loss_option_cases, autocast="fp32"),
]


# --------------------------------------------------------------------------- benchmark rows


def _bench_batch_norm(shape, training: bool):
    def setup(device):
        c = shape[1]
        x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.ones(c, device=device, requires_grad=True)
        b = torch.zeros(c, device=device, requires_grad=True)
        stats = [torch.zeros(c, device=device), torch.ones(c, device=device)]
        native_stats = [t.clone() for t in stats]
        return (
            fwd_bwd(batch_norm, (x, *stats, w, b, training), (x, w, b)),
            fwd_bwd(F.batch_norm, (x, *native_stats, w, b, training), (x, w, b)),
        )

    return setup


def _bench_group_norm(shape, groups):
    def setup(device):
        c = shape[1]
        x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.ones(c, device=device, requires_grad=True)
        b = torch.zeros(c, device=device, requires_grad=True)
        return fwd_bwd(group_norm, (x, groups, w, b), (x, w, b)), fwd_bwd(F.group_norm, (x, groups, w, b), (x, w, b))

    return setup


def _bench_conv(x_shape, w_shape, **options):
    def setup(device):
        x = torch.randn(x_shape, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = (torch.randn(w_shape, device=device) * 0.1).requires_grad_()
        b = torch.zeros(w_shape[0], device=device, requires_grad=True)
        args = (x, w, b, options.get("stride", 1), options.get("padding", 0), 1, options.get("groups", 1))
        return fwd_bwd(conv2d, args, (x, w, b)), fwd_bwd(F.conv2d, args, (x, w, b))

    return setup


def _bench_pool(op, twin, shape, *args):
    def setup(device):
        x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
        return fwd_bwd(op, (x, *args), (x,)), fwd_bwd(twin, (x, *args), (x,))

    return setup


def _bench_activation(op, twin, shape):
    def setup(device):
        x = (torch.randn(shape, device=device) * 4).contiguous(memory_format=torch.channels_last).requires_grad_()
        return fwd_bwd(op, (x,), (x,)), fwd_bwd(twin, (x,), (x,))

    return setup


def _bench_loss_options(device):
    s = torch.randn(128, 10, device=device, requires_grad=True)
    y = torch.randint(0, 10, (128,), device=device)
    y[::8] = -100
    args = (s, y, -100, 0.1)
    return fwd_bwd(softmax_loss, args, (s,)), fwd_bwd(
        F.cross_entropy, (s, y, None, None, -100, None, "mean", 0.1), (s,)
    )


# MobileNetV2 (224x224 images, batch 32): the depthwise layers, the normalisation of an expanded
# block, the classifier's pooling; ResNet-18's stem pooling. Channels-last, as the trunk runs.
BENCH: list[BenchCase] = [
    BenchCase(
        "conv2d depthwise 32x144x56x56 * 3x3", _bench_conv((32, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144)
    ),
    BenchCase(
        "conv2d depthwise 32x144x56x56 * 3x3/2",
        _bench_conv((32, 144, 56, 56), (144, 1, 3, 3), stride=2, padding=1, groups=144),
    ),
    BenchCase("conv2d 1x1 32x144x28x28 -> 32", _bench_conv((32, 144, 28, 28), (32, 144, 1, 1))),
    BenchCase(
        "conv2d grouped 32x64x14x14 * 3x3, 4 groups", _bench_conv((32, 64, 14, 14), (64, 16, 3, 3), padding=1, groups=4)
    ),
    BenchCase("batch_norm train 32x144x28x28", _bench_batch_norm((32, 144, 28, 28), True)),
    BenchCase("batch_norm eval 32x144x28x28", _bench_batch_norm((32, 144, 28, 28), False)),
    BenchCase("group_norm 32x144x28x28, 8 groups", _bench_group_norm((32, 144, 28, 28), 8)),
    BenchCase("relu6 32x144x28x28", _bench_activation(relu6, F.relu6, (32, 144, 28, 28))),
    BenchCase("hardtanh 32x144x28x28", _bench_activation(hardtanh, F.hardtanh, (32, 144, 28, 28))),
    BenchCase("max_pool2d 32x64x56x56, 3x3/2 pad 1", _bench_pool(max_pool2d, F.max_pool2d, (32, 64, 56, 56), 3, 2, 1)),
    BenchCase("avg_pool2d 32x64x28x28, 2x2/2", _bench_pool(avg_pool2d, F.avg_pool2d, (32, 64, 28, 28), 2)),
    BenchCase(
        "adaptive_avg_pool2d 64x1280x7x7 -> 1x1",
        _bench_pool(adaptive_avg_pool2d, F.adaptive_avg_pool2d, (64, 1280, 7, 7), 1),
    ),
    BenchCase("softmax_loss 128x10, ignore_index + smoothing", _bench_loss_options),
]
