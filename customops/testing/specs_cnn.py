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
from .registry import BenchCase, ErrorInput, OpSpec, SampleInput, tensor_maker, transposed
from .twins import fwd_bwd

LOW = (torch.float16, torch.bfloat16)


def _channels_last(make, *shape, **kw) -> torch.Tensor:
    """A (N, C, H, W) tensor in channels-last memory (not contiguous), requiring grad as make does."""
    requires_grad = make.keywords["requires_grad"]
    t = make(*shape, requires_grad=False, **kw).contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def _away_from(make, points, *shape, noncontiguous: bool = False) -> torch.Tensor:
    """Values in [-3, 7) at least 0.1 from every kink in `points`, so finite differences never cross one."""
    requires_grad = make.keywords["requires_grad"]
    v = make(*shape, low=-3.0, high=7.0, requires_grad=False, noncontiguous=noncontiguous)
    with torch.no_grad():
        for p in points:
            v.copy_(torch.where((v - p).abs() < 0.1, v + 0.25, v))
    return v.requires_grad_(requires_grad)


def _distinct(make, *shape) -> torch.Tensor:
    """A random permutation of well-separated values (a quarter apart, exact in bfloat16 up to +-64): no
    ties inside any pooling window."""
    requires_grad = make.keywords["requires_grad"]
    out = make(*shape, requires_grad=False)
    n = out.numel()
    with torch.no_grad():
        out.copy_(((torch.randperm(n) - n // 2).to(torch.float64) / 4).view(out.shape))
    return out.requires_grad_(requires_grad)


def _float32(device):
    return tensor_maker(device, torch.float32)


# --------------------------------------------------------------------------- batch and group norm


def sample_batch_norm(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    # training mode without running statistics (their update is tested apart: tests/customops/test_batchnorm.py)
    yield SampleInput((make(5, 3), None, None, make(3), make(3), True), desc="(N, C)")
    yield SampleInput(
        (make(4, 2, 5, low=2.0, high=8.0), None, None, make(2), None, True), {"eps": 1e-3},
        desc="(N, C, L), mean far from 0",
    )  # fmt: skip
    yield SampleInput((_channels_last(make, 3, 4, 3, 2), None, None, make(4), make(4), True), desc="channels-last x")
    yield SampleInput((transposed(make, 2, 3, 2, 3), None, None, None, None, True), desc="transposed x, no affine")
    yield from sample_batch_norm_eval(device, dtype, requires_grad)


def error_batch_norm(device):
    make = _float32(device)
    x3, stats = make(4, 3, 5), (torch.zeros(3, device=device), torch.ones(3, device=device))
    yield ErrorInput(SampleInput((make(4), None, None, None, None, True)), ValueError, "at least 2")
    yield ErrorInput(SampleInput((x3, torch.zeros(3, device=device), None), {"training": True}), ValueError, "both")
    yield ErrorInput(SampleInput((x3, make(4), make(4))), ValueError, r"must have shape \(3,\)")
    yield ErrorInput(SampleInput((x3, *stats, make(2))), ValueError, r"weight must have shape \(3,\)")
    yield ErrorInput(SampleInput((x3, None, None)), ValueError, "evaluation mode")
    yield ErrorInput(SampleInput((make(1, 3), None, None), {"training": True}), ValueError, "more than 1 value")
    yield ErrorInput(SampleInput((x3, *stats), {"momentum": 1.5}), ValueError, "momentum")
    yield ErrorInput(SampleInput((x3, *stats), {"eps": -1.0}), ValueError, "eps")
    yield ErrorInput(SampleInput((x3, *stats), {"training": 1}), TypeError, "training must be a bool")
    yield ErrorInput(SampleInput((make(4, 3, 5, dtype=torch.float64), *stats)), TypeError, "mixed")
    yield ErrorInput(SampleInput((torch.ones(4, 3, dtype=torch.long, device=device), *stats)), TypeError, "floating")


def sample_batch_norm_eval(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)

    def stats(c):
        return make(c, requires_grad=False), make(c, low=0.5, high=1.5, requires_grad=False)

    # evaluation mode: the running statistics are (non-differentiable) inputs
    yield SampleInput((make(5, 3), *stats(3), make(3), make(3), False), desc="eval, (N, C)")
    yield SampleInput((make(4, 2, 5), *stats(2), make(2), None, False), {"eps": 1e-3}, desc="eval, (N, C, L)")
    yield SampleInput(
        (_channels_last(make, 3, 4, 3, 2), *stats(4), make(4), make(4), False), desc="eval, channels-last x"
    )
    yield SampleInput(
        (transposed(make, 2, 3, 2, 3), *stats(3), None, None, False), desc="eval, transposed x, no affine"
    )


def sample_group_norm(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(2, 6, 3, 2), 3, make(6), make(6)), desc="3 groups of 2 channels")
    yield SampleInput((make(3, 4, 5, low=2.0, high=8.0), 1, make(4), None), {"eps": 1e-3}, desc="one group: layer norm")
    yield SampleInput((_channels_last(make, 2, 4, 3, 3), 4, make(4), make(4)), desc="instance norm, channels-last x")
    yield SampleInput((transposed(make, 3, 6), 2, None, None), desc="(N, C), transposed, no affine parameters")


def error_group_norm(device):
    make = _float32(device)
    x4 = make(2, 6, 3, 3)
    yield ErrorInput(SampleInput((x4, 4)), ValueError, "must divide the 6 channels")
    yield ErrorInput(SampleInput((x4, 0)), ValueError, "positive int")
    yield ErrorInput(SampleInput((make(6), 2)), ValueError, "at least 2 dimensions")
    yield ErrorInput(SampleInput((x4, 2, make(4))), ValueError, r"weight must have shape \(6,\)")
    yield ErrorInput(SampleInput((x4, 2), {"eps": -1}), ValueError, "eps")
    yield ErrorInput(SampleInput((x4, 2, make(6, dtype=torch.float64))), TypeError, "mixed")
    yield ErrorInput(SampleInput((make(0, 6), 2)), ValueError, "empty")


# --------------------------------------------------------------------------- convolution


# --------------------------------------------------------------------------- pooling


def sample_avg_pool2d(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(2, 3, 4, 6), 2), desc="2x2 tiles (the fast path)")
    yield SampleInput((make(1, 2, 7, 6), 3, 2, 1), desc="overlapping windows, zero padding, divided by 9")
    yield SampleInput(
        (_channels_last(make, 2, 3, 7, 7), 3, 2, 1), {"count_include_pad": False, "ceil_mode": True},
        desc="channels-last x, ceil_mode, padding not counted",
    )  # fmt: skip
    yield SampleInput((transposed(make, 1, 2, 5, 6), (2, 3), (1, 2)), {"divisor_override": 4}, desc="divisor_override")


def error_avg_pool2d(device):
    make = _float32(device)
    x4 = make(1, 2, 6, 6)
    yield ErrorInput(SampleInput((make(2, 6, 6), 2)), ValueError, "4 dimensions")
    yield ErrorInput(SampleInput((x4, 3, 1, 2)), ValueError, "at most half the kernel")
    yield ErrorInput(SampleInput((x4, 7)), ValueError, "too small")
    yield ErrorInput(SampleInput((x4, 2), {"divisor_override": 0}), ValueError, "divisor_override")
    yield ErrorInput(SampleInput((x4, 2), {"ceil_mode": 1}), TypeError, "ceil_mode must be a bool")
    yield ErrorInput(SampleInput((torch.ones(1, 2, 6, 6, dtype=torch.long, device=device), 2)), TypeError, "floating")


def sample_adaptive_avg_pool2d(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(2, 3, 4, 5), 1), desc="global average pooling (ResNet, MobileNetV2)")
    yield SampleInput((make(1, 2, 6, 4), (3, 2)), desc="sizes dividing the input: tiles")
    yield SampleInput((_channels_last(make, 2, 3, 5, 7), (3, 4)), desc="overlapping windows, channels-last x")
    yield SampleInput((transposed(make, 1, 2, 2, 3), (7, 7)), desc="larger than the input (VGG on small images)")


def error_adaptive_avg_pool2d(device):
    make = _float32(device)
    x4 = make(1, 2, 6, 6)
    yield ErrorInput(SampleInput((x4, 0)), ValueError, "output_size")
    yield ErrorInput(SampleInput((x4, (2, 2, 2))), ValueError, "output_size")
    yield ErrorInput(SampleInput((x4, 1.5)), ValueError, "output_size")
    yield ErrorInput(SampleInput((make(6, 6), 1)), ValueError, "4 dimensions")
    yield ErrorInput(SampleInput((make(1, 2, 0, 3), 1)), ValueError, "empty")


# --------------------------------------------------------------------------- activations and loss options


def sample_hardtanh(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((_away_from(make, (-1.0, 1.0), 4, 5),))
    yield SampleInput((_away_from(make, (-1.0, 1.0), 2, 3, 4, 5),))
    yield SampleInput((_away_from(make, (-2.0, 0.5), 6, 5, noncontiguous=True), -2.0, 0.5), desc="other bounds")
    yield SampleInput((_away_from(make, (-0.5, 6.0), 7), -0.5, 6.0))


def error_hardtanh(device):
    make = _float32(device)
    yield ErrorInput(SampleInput((torch.ones(3, dtype=torch.int64, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput(([1.0, 2.0],)), TypeError, "torch.Tensor")
    yield ErrorInput(SampleInput((make(3), 1.0, -1.0)), ValueError, "min_val must be less")
    yield ErrorInput(SampleInput((make(3), "0", 1.0)), TypeError, "min_val must be a number")
    yield ErrorInput(SampleInput((make(3), float("nan"), 1.0)), TypeError, "min_val")
    yield ErrorInput(SampleInput((make(3),), {"inplace": 1}), TypeError, "inplace must be a bool")


def sample_relu6(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    x_cl = _away_from(make, (0.0, 6.0), 2, 3, 4, 5).detach().contiguous(memory_format=torch.channels_last)
    yield SampleInput((_away_from(make, (0.0, 6.0), 4, 5),))
    yield SampleInput((_away_from(make, (0.0, 6.0), 2, 3, 4, 5),))
    yield SampleInput((x_cl.requires_grad_(requires_grad),), desc="channels-last x")
    yield SampleInput((_away_from(make, (0.0, 6.0), 7, noncontiguous=True),), desc="non-contiguous x")


def error_relu6(device):
    yield ErrorInput(SampleInput((torch.ones(3, dtype=torch.bool, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput((None,)), TypeError, "torch.Tensor")
    yield ErrorInput(SampleInput((3.0,)), TypeError, "torch.Tensor")
    yield ErrorInput(SampleInput((_float32(device)(3),), {"inplace": "yes"}), TypeError, "inplace must be a bool")


# The new options of conv2d (groups, dilation, the depthwise path), max_pool2d (padding, dilation) and
# softmax_loss (ignore_index, label_smoothing) are samples and error inputs of those ops' specs, in
# customops/testing/specs.py.
SPECS: list[OpSpec] = [
    OpSpec(
        "batch_norm", batch_norm, sample_inputs=sample_batch_norm, error_inputs=error_batch_norm,
        twin=F.batch_norm, autocast="same",
    ),
    OpSpec(
        "group_norm", group_norm, sample_inputs=sample_group_norm, error_inputs=error_group_norm, twin=F.group_norm,
        autocast="same",
    ),

    OpSpec(
        "avg_pool2d", avg_pool2d, sample_inputs=sample_avg_pool2d, error_inputs=error_avg_pool2d,
        twin=F.avg_pool2d, autocast="same",
    ),
    OpSpec(
        "adaptive_avg_pool2d", adaptive_avg_pool2d, sample_inputs=sample_adaptive_avg_pool2d,
        error_inputs=error_adaptive_avg_pool2d, twin=F.adaptive_avg_pool2d, autocast="same",
    ),
    OpSpec(
        "hardtanh", hardtanh, sample_inputs=sample_hardtanh, error_inputs=error_hardtanh, twin=F.hardtanh,
        autocast="same",
    ),
    OpSpec("relu6", relu6, sample_inputs=sample_relu6, error_inputs=error_relu6, twin=F.relu6, autocast="same"),
]  # fmt: skip


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
