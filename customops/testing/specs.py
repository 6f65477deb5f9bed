"""The op registry: the specs of the core ops (customops.testing.registry has the format), and
benchmark rows against their native twins.

Tests, `python -m customops.check` and `python -m customops.bench` all read these lists,
so adding an op here puts it under every check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..affine import affine
from ..conv import conv2d
from ..losses import softmax_loss
from ..pool import max_pool2d
from ..relu import relu
from . import twins
from .registry import BenchCase, ErrorInput, OpSpec, SampleInput, tensor_maker, transposed
from .twins import fwd_bwd


def away_from_zero(make, *shape, noncontiguous: bool = False) -> torch.Tensor:
    """Values with 0.1 <= |v| <= 1, so a finite-difference step never crosses a kink at 0."""
    requires_grad = make.keywords["requires_grad"]
    magnitude = make(*shape, low=0.1, high=1.0, requires_grad=False, noncontiguous=noncontiguous)
    sign = torch.randint(0, 2, magnitude.shape, device=magnitude.device).to(magnitude.dtype) * 2 - 1
    return magnitude.mul_(sign).requires_grad_(requires_grad)  # in place: keeps the layout


def distinct(make, *shape, noncontiguous: bool = False) -> torch.Tensor:
    """A random permutation of well-separated values (a quarter apart, exact in bfloat16 up to
    ±64): no ties inside any pooling window, whatever the dtype."""
    requires_grad = make.keywords["requires_grad"]
    out = make(*shape, requires_grad=False, noncontiguous=noncontiguous)
    n = out.numel()
    values = (torch.randperm(n) - n // 2).to(torch.float64) / 4
    with torch.no_grad():
        out.copy_(values.view(out.shape))
    return out.requires_grad_(requires_grad)


def channels_last_tensor(make, *shape, **kw) -> torch.Tensor:
    """A (N, C, H, W) tensor in channels-last memory (not contiguous), requiring grad as make does."""
    requires_grad = make.keywords["requires_grad"]
    t = make(*shape, requires_grad=False, **kw).contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


# ---- affine -----------------------------------------------------------------------------------


def sample_affine(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(4, 5), make(5, 3), make(3)))
    yield SampleInput((make(3, 2, 3, 2), make(12, 4), make(4)), desc="(N, d1, d2, d3) flattened to (N, 12)")
    yield SampleInput((transposed(make, 4, 5), make(5, 2), None), desc="transposed x, no bias")
    yield SampleInput((make(1, 7), make(7, 1, noncontiguous=True), make(1)), desc="non-contiguous w")


def error_affine(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(4), make(4, 3))), ValueError, "dimensions|shape")
    yield ErrorInput(SampleInput((make(4, 5), make(6, 3))), ValueError, "5 features")
    yield ErrorInput(SampleInput((make(4, 5), make(5, 3), make(4))), ValueError, "b has 4")
    yield ErrorInput(
        SampleInput((torch.ones(4, 5, dtype=torch.int64, device=device), make(5, 3))), TypeError, "floating"
    )
    yield ErrorInput(SampleInput((make(4, 5), make(5, 3, dtype=torch.float64))), TypeError, "mixed")
    yield ErrorInput(SampleInput((make(4, 5), torch.randn(5, 3, device="meta"))), ValueError, "devices")
    yield ErrorInput(SampleInput((make(4, 5), make(5))), ValueError, "dimensions")


# ---- relu ---------------------------------------------------------------------------------------


def sample_relu(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((away_from_zero(make, 4, 5),))
    yield SampleInput((away_from_zero(make, 2, 3, 4, 5),))
    yield SampleInput((away_from_zero(make, 6, 3, noncontiguous=True),), desc="non-contiguous x")
    yield SampleInput((away_from_zero(make, 7),))


def error_relu(device):
    yield ErrorInput(SampleInput((torch.ones(3, dtype=torch.int32, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput((torch.ones(3, dtype=torch.bool, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput(([1.0, -1.0],)), TypeError, "torch.Tensor")
    yield ErrorInput(SampleInput((None,)), TypeError, "torch.Tensor")


# ---- conv2d -------------------------------------------------------------------------------------


def sample_conv2d_grouped(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(1, 4, 4, 3), make(4, 2, 2, 2), make(4)), {"groups": 2}, desc="2 groups, 2 filters each")
    yield SampleInput((make(1, 2, 5, 5), make(2, 2, 2, 2), make(2)), {"dilation": 2, "padding": 1}, desc="dilated")
    yield SampleInput(
        (make(1, 6, 5, 4), make(3, 2, 2, 2), None),
        {"groups": 3, "stride": 2, "dilation": (2, 1), "padding": (1, 0)},
        desc="3 groups, stride, dilation, no bias",
    )
    yield SampleInput(
        (channels_last_tensor(make, 1, 2, 4, 4), make(4, 1, 2, 2, noncontiguous=True), make(4)),
        {"groups": 2, "padding": 1},
        desc="depthwise with a channel multiplier of 2 (the grouped path), channels-last x",
    )


def sample_conv2d_depthwise(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput(
        (make(1, 2, 4, 5), make(2, 1, 3, 3), make(2)), {"padding": 1, "groups": 2}, desc="MobileNet's 3x3"
    )
    yield SampleInput(
        (make(1, 2, 5, 4), make(2, 1, 3, 3), None), {"stride": 2, "padding": 1, "groups": 2}, desc="stride 2"
    )
    yield SampleInput(
        (channels_last_tensor(make, 1, 2, 5, 5), make(2, 1, 2, 2), make(2)),
        {"dilation": 2, "groups": 2},
        desc="dilated",
    )
    yield SampleInput(
        (transposed(make, 1, 2, 4, 4), make(2, 1, 3, 1), make(2)),
        {"stride": (1, 2), "padding": (2, 0), "groups": 2},
        desc="transposed x, a 3x1 kernel",
    )


def sample_conv2d(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    channels_last = make(1, 4, 5, 3, requires_grad=False).permute(0, 3, 1, 2).requires_grad_(requires_grad)
    yield SampleInput((make(2, 2, 5, 4), make(3, 2, 3, 2), make(3)), desc="valid, stride 1: the baseline layer")
    yield SampleInput((make(1, 1, 4, 4), make(2, 1, 4, 4), make(2)), desc="kernel as large as the input: 1x1 output")
    yield SampleInput((make(1, 2, 5, 6), make(2, 2, 3, 3), make(2)), {"stride": 2, "padding": 1})
    yield SampleInput(
        (channels_last, make(2, 3, 2, 3, noncontiguous=True), None),
        {"stride": (1, 2), "padding": (1, 0)},
        desc="channels-last x (1, 3, 4, 5), non-contiguous w, no bias",
    )

    yield from sample_conv2d_grouped(device, dtype, requires_grad)
    yield from sample_conv2d_depthwise(device, dtype, requires_grad)


def error_conv2d_groups(device):
    make = tensor_maker(device, torch.float32)
    x1 = make(1, 4, 6, 6)
    yield ErrorInput(SampleInput((x1, make(6, 2, 3, 3)), {"groups": 3}), ValueError, "groups=3 must divide")
    yield ErrorInput(SampleInput((x1, make(6, 4, 3, 3)), {"groups": 2}), ValueError, "2 groups of 4")
    yield ErrorInput(SampleInput((x1, make(4, 1, 3, 3)), {"groups": 0}), ValueError, "groups must be a positive int")
    yield ErrorInput(SampleInput((x1, make(4, 1, 3, 3)), {"groups": 4, "dilation": 0}), ValueError, "dilation")
    yield ErrorInput(SampleInput((x1, make(2, 4, 3, 3)), {"dilation": 4}), ValueError, r"dilated to \(9, 9\)")
    yield ErrorInput(SampleInput((x1, make(2, 4, 3, 3)), {"stride": 2, "padding": "same"}), ValueError, "stride 1")
    yield ErrorInput(SampleInput((x1, make(2, 4, 2, 2)), {"padding": "same"}), ValueError, "one side more")
    yield ErrorInput(SampleInput((x1, make(2, 4, 3, 3)), {"padding": "full"}), TypeError, "padding")


def error_conv2d(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(1, 6, 6), make(2, 1, 3, 3))), ValueError, "4 dimensions")
    yield ErrorInput(SampleInput((make(1, 2, 6, 6), make(2, 3, 3, 3))), ValueError, "2 channels")
    yield ErrorInput(SampleInput((make(1, 1, 3, 3), make(2, 1, 4, 4))), ValueError, "larger")
    yield ErrorInput(
        SampleInput((torch.ones(1, 1, 5, 5, dtype=torch.uint8, device=device), make(2, 1, 3, 3))), TypeError, "floating"
    )
    yield ErrorInput(SampleInput((make(1, 1, 5, 5, dtype=torch.float64), make(2, 1, 3, 3))), TypeError, "mixed")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), make(2, 1, 3, 3), make(3))), ValueError, "b has 3")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), make(2, 1, 3, 3)), {"stride": 0}), ValueError, "stride")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), make(2, 1, 3, 3)), {"padding": 1.5}), TypeError, "padding")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), torch.randn(2, 1, 3, 3, device="meta"))), ValueError, "devices")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), make(2, 1, 0, 0))), ValueError, "the kernel must be at least 1x1")
    yield ErrorInput(SampleInput((make(1, 1, 5, 5), make(2, 1, 3, 0))), ValueError, "the kernel must be at least 1x1")

    yield from error_conv2d_groups(device)


# ---- max_pool2d ---------------------------------------------------------------------------------


def sample_max_pool2d_padded(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    channels_last = distinct(make, 2, 7, 6, 3).detach().permute(0, 3, 1, 2).requires_grad_(requires_grad)
    yield SampleInput((distinct(make, 2, 3, 7, 7), 3, 2, 1), desc="ResNet's stem pooling: 3x3, stride 2, padding 1")
    yield SampleInput((distinct(make, 1, 2, 6, 5), 2, 1, 1), desc="padding as large as allowed")
    yield SampleInput((distinct(make, 1, 2, 7, 7), 3, 1, 1, 2), desc="dilation 2")
    yield SampleInput((channels_last, (3, 2), (2, 1), (1, 0)), desc="channels-last x")


def sample_max_pool2d(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    channels_last = distinct(make, 2, 7, 5, 3).detach().permute(0, 3, 1, 2).requires_grad_(requires_grad)
    yield SampleInput((distinct(make, 2, 3, 4, 6), 2), desc="the 2x2, stride-2 layer")
    yield SampleInput((distinct(make, 2, 3, 5, 7), 2), desc="odd sizes: the last row and column are dropped")
    yield SampleInput((distinct(make, 1, 2, 7, 7), 3, 2), desc="overlapping windows")
    yield SampleInput((channels_last, (2, 3), (1, 2)), desc="channels-last x (2, 3, 7, 5), 2x3 windows")

    yield from sample_max_pool2d_padded(device, dtype, requires_grad)


def error_max_pool2d_padded(device):
    make = tensor_maker(device, torch.float32)
    x4 = make(1, 2, 6, 6)
    yield ErrorInput(SampleInput((x4, 2, 2, 2)), ValueError, "at most half the kernel")
    yield ErrorInput(SampleInput((x4, 2, 2, -1)), ValueError, "non-negative")
    yield ErrorInput(SampleInput((x4, 3, 1, 0, 0)), ValueError, "dilation")
    yield ErrorInput(SampleInput((x4, 3, 1, 0, 3)), ValueError, "larger than the input")
    yield ErrorInput(SampleInput((x4, 2), {"ceil_mode": True}), ValueError, "ceil_mode=True is not supported")
    yield ErrorInput(SampleInput((x4, 2, 2, 1.5)), TypeError, "padding")


def error_max_pool2d(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(4, 4),)), ValueError, "4 dimensions")
    yield ErrorInput(SampleInput((make(1, 1, 1, 4),)), ValueError, "larger")
    yield ErrorInput(SampleInput((torch.ones(1, 1, 4, 4, dtype=torch.int64, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput((make(1, 1, 4, 4), 0)), ValueError, "positive")
    yield ErrorInput(SampleInput((make(1, 1, 4, 4), (2, 2, 2))), TypeError, "kernel_size")

    yield from error_max_pool2d_padded(device)


# ---- softmax_loss -------------------------------------------------------------------------------


def sample_softmax_loss_options(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)

    def labels(n, c, ignored=()):
        y = torch.randint(0, c, (n,))
        y[list(ignored)] = -100
        return y.to(device)

    yield SampleInput((make(5, 7), labels(5, 7, ignored=(1, 3))), desc="ignored rows (-100)")
    yield SampleInput((make(4, 3), labels(4, 3)), {"label_smoothing": 0.2}, desc="label smoothing")
    yield SampleInput(
        (make(4, 5, low=195.0, high=205.0), labels(4, 5, ignored=(0,))), {"label_smoothing": 0.1},
        desc="both, scores near 200",
    )  # fmt: skip
    yield SampleInput(
        (transposed(make, 6, 4), labels(6, 4)), {"ignore_index": 2, "label_smoothing": 0.3},
        desc="an ignore_index in [0, C), transposed scores",
    )  # fmt: skip


def sample_softmax_loss(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)

    def labels(n, c):
        return torch.randint(0, c, (n,), device=device)

    large = make(4, 5, low=195.0, high=205.0)  # large scores: the shift by the row maximum
    yield SampleInput((make(5, 7), labels(5, 7)))
    yield SampleInput((make(1, 3), labels(1, 3)))
    yield SampleInput((large, labels(4, 5)), desc="scores near 200: stability")
    yield SampleInput((transposed(make, 8, 6), labels(8, 6)), desc="transposed scores")

    yield from sample_softmax_loss_options(device, dtype, requires_grad)


def error_softmax_loss_options(device):
    s4 = tensor_maker(device, torch.float32)(3, 4)

    def ids(*values):
        return torch.tensor(values, device=device)

    yield ErrorInput(SampleInput((s4, ids(0, -100, 7))), ValueError, r"ignore_index=-100\) in \[0, 4\)")
    yield ErrorInput(SampleInput((s4, ids(0, 1, 9)), {"ignore_index": 1}), ValueError, r"\[0, 4\)")
    yield ErrorInput(SampleInput((s4, ids(0, 1, 2)), {"label_smoothing": 1.5}), ValueError, "label_smoothing")
    yield ErrorInput(SampleInput((s4, ids(0, 1, 2)), {"label_smoothing": -0.1}), ValueError, "label_smoothing")
    yield ErrorInput(SampleInput((s4, ids(0, 1, 2)), {"ignore_index": 1.0}), TypeError, "ignore_index")


def error_softmax_loss(device):
    make = tensor_maker(device, torch.float32)

    def ids(*values):
        return torch.tensor(values, device=device)

    yield ErrorInput(SampleInput((make(3, 4), ids(0, 4, 1))), ValueError, r"\[0, 4\)")
    yield ErrorInput(SampleInput((make(3, 4), ids(0, -1, 1))), ValueError, "-1")
    yield ErrorInput(SampleInput((make(3, 4), ids(0, 1))), ValueError, "3 rows")
    yield ErrorInput(SampleInput((make(3, 4), ids(0.0, 1.0, 2.0))), TypeError, "integer")
    yield ErrorInput(SampleInput((make(4), ids(0))), ValueError, "2 dimensions")
    yield ErrorInput(SampleInput((make(3, 4), torch.tensor([[0, 1, 2]], device=device))), ValueError, "1 dimensions")
    yield ErrorInput(SampleInput((make(0, 4), torch.zeros(0, dtype=torch.long, device=device))), ValueError, "empty")
    yield ErrorInput(SampleInput((make(2, 4), torch.tensor([0, 1], device="meta"))), ValueError, "meta")
    yield ErrorInput(
        SampleInput((make(3, 0), torch.zeros(3, dtype=torch.long, device=device))), ValueError, "scores has 0 classes"
    )

    yield from error_softmax_loss_options(device)


SPECS: list[OpSpec] = [
    OpSpec(
        "affine",
        affine,
        sample_inputs=sample_affine,
        error_inputs=error_affine,
        twin=twins.affine_twin,
        autocast="lower",
    ),
    OpSpec("relu", relu, sample_inputs=sample_relu, error_inputs=error_relu, twin=F.relu, autocast="same"),
    OpSpec("conv2d", conv2d, sample_inputs=sample_conv2d, error_inputs=error_conv2d, twin=F.conv2d, autocast="lower"),
    OpSpec(
        "max_pool2d",
        max_pool2d,
        sample_inputs=sample_max_pool2d,
        error_inputs=error_max_pool2d,
        twin=F.max_pool2d,
        autocast="same",
    ),
    OpSpec(
        "softmax_loss",
        softmax_loss,
        sample_inputs=sample_softmax_loss,
        error_inputs=error_softmax_loss,
        twin=F.cross_entropy,
        autocast="fp32",
    ),
]


# ---- benchmark rows: MNIST-scale shapes -------------------------------------------------


def _bench_affine(device):
    x = torch.randn(128, 784, device=device, requires_grad=True)
    w = (torch.randn(784, 512, device=device) * 0.03).requires_grad_()
    b = torch.zeros(512, device=device, requires_grad=True)
    w_native = w.detach().t().contiguous().requires_grad_()  # nn.Linear stores (out, in)
    return fwd_bwd(affine, (x, w, b), (x, w, b)), fwd_bwd(F.linear, (x, w_native, b), (x, w_native, b))


def _bench_relu(device):
    x = torch.randn(64, 32, 24, 24, device=device, requires_grad=True)
    return fwd_bwd(relu, (x,), (x,)), fwd_bwd(F.relu, (x,), (x,))


def _bench_conv(x_shape, w_shape, input_grad):
    def setup(device):
        x = torch.randn(x_shape, device=device, requires_grad=input_grad)
        w = (torch.randn(w_shape, device=device) * 0.1).requires_grad_()
        b = torch.zeros(w_shape[0], device=device, requires_grad=True)
        wrt = (x, w, b) if input_grad else (w, b)
        return fwd_bwd(conv2d, (x, w, b), wrt), fwd_bwd(F.conv2d, (x, w, b), wrt)

    return setup


def _bench_pool(device):
    x = torch.randn(64, 32, 24, 24, device=device, requires_grad=True)
    return fwd_bwd(max_pool2d, (x, 2, 2), (x,)), fwd_bwd(F.max_pool2d, (x, 2, 2), (x,))


def _bench_loss(device):
    s = torch.randn(128, 10, device=device, requires_grad=True)
    y = torch.randint(0, 10, (128,), device=device)
    return fwd_bwd(softmax_loss, (s, y), (s,)), fwd_bwd(F.cross_entropy, (s, y), (s,))


BENCH_CASES: list[BenchCase] = [
    BenchCase("affine 128x784 -> 512", _bench_affine),
    BenchCase("relu 64x32x24x24", _bench_relu),
    BenchCase("conv2d 64x1x28x28 * 32x1x5x5 (no x grad)", _bench_conv((64, 1, 28, 28), (32, 1, 5, 5), False)),
    BenchCase("conv2d 64x32x12x12 * 64x32x3x3", _bench_conv((64, 32, 12, 12), (64, 32, 3, 3), True)),
    BenchCase("max_pool2d 64x32x24x24, 2x2/2", _bench_pool),
    BenchCase("softmax_loss 128x10", _bench_loss),
]


# ---- every op: the core above plus the captioning, attention and CNN layers -----------------

from .specs_attention import BENCH as _ATTENTION_BENCH  # noqa: E402
from .specs_attention import SPECS as _ATTENTION_SPECS  # noqa: E402
from .specs_captioning import BENCH as _CAPTIONING_BENCH  # noqa: E402
from .specs_captioning import SPECS as _CAPTIONING_SPECS  # noqa: E402
from .specs_cnn import BENCH as _CNN_BENCH  # noqa: E402
from .specs_cnn import SPECS as _CNN_SPECS  # noqa: E402

ALL_SPECS: list[OpSpec] = SPECS + _CAPTIONING_SPECS + _ATTENTION_SPECS + _CNN_SPECS
ALL_BENCH_CASES: list[BenchCase] = BENCH_CASES + _CAPTIONING_BENCH + _ATTENTION_BENCH + _CNN_BENCH
