"""The op registry: inputs for checking each op, and benchmark rows against its native twin.

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
from .registry import BenchCase, Case, OpSpec
from .twins import fwd_bwd


def _randn(shape, dtype, device, gen, grad=True) -> torch.Tensor:
    t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    return t.requires_grad_(grad)


def _away_from_zero(shape, dtype, device, gen) -> torch.Tensor:
    """Random values with |v| >= 0.1, so a finite-difference step never crosses ReLU's kink."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1
    sign = torch.randint(0, 2, shape, generator=gen) * 2 - 1
    return (u * sign).to(dtype=dtype, device=device).requires_grad_()


def _distinct(shape, dtype, device, gen) -> torch.Tensor:
    """A random permutation of well-separated values: no ties inside any pooling window."""
    n = torch.Size(shape).numel()
    v = torch.randperm(n, generator=gen).to(torch.float64).view(shape) / 10
    return v.to(dtype=dtype, device=device).requires_grad_()


def _affine_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s, grad=True: _randn(s, dtype, device, gen, grad)  # noqa: E731
    # Non-contiguous x: the transpose of a (5, 4) tensor.
    x_t = _randn((5, 4), dtype, device, gen, grad=False).t().requires_grad_()
    return [
        ((r(4, 5), r(5, 3), r(3)), {}),
        ((r(3, 2, 3, 2), r(12, 4), r(4)), {}),  # (N, d1, d2, d3) flattened to (N, 12)
        ((x_t, r(5, 2), None), {}),
        ((r(1, 7), r(7, 1), r(1)), {}),
    ]


def _relu_cases(dtype, device, gen) -> list[Case]:
    a = lambda *s: _away_from_zero(s, dtype, device, gen)  # noqa: E731
    x_nc = _away_from_zero((6, 5), dtype, device, gen).detach()[:, ::2].requires_grad_()
    return [((a(4, 5),), {}), ((a(2, 3, 4, 5),), {}), ((x_nc,), {}), ((a(7),), {})]


def _conv_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    x_nc = _randn((1, 4, 5, 3), dtype, device, gen, grad=False).permute(0, 3, 1, 2).requires_grad_()  # (1, 3, 4, 5)
    return [
        ((r(2, 2, 5, 4), r(3, 2, 3, 2), r(3)), {}),  # valid, stride 1: the baseline layer
        ((r(1, 1, 4, 4), r(2, 1, 4, 4), r(2)), {}),  # kernel as large as the input: 1x1 output
        ((r(1, 2, 5, 6), r(2, 2, 3, 3), r(2)), {"stride": 2, "padding": 1}),
        ((x_nc, r(2, 3, 2, 3), None), {"stride": (1, 2), "padding": (1, 0)}),
    ]


def _pool_cases(dtype, device, gen) -> list[Case]:
    d = lambda *s: _distinct(s, dtype, device, gen)  # noqa: E731
    x_nc = _distinct((2, 7, 5, 3), dtype, device, gen).detach().permute(0, 3, 1, 2).requires_grad_()  # (2, 3, 7, 5)
    return [
        ((d(2, 3, 4, 6), 2), {}),  # the 2x2, stride-2 layer
        ((d(2, 3, 5, 7), 2), {}),  # odd sizes: the last row and column are dropped
        ((d(1, 2, 7, 7), 3, 2), {}),  # overlapping windows
        ((x_nc, (2, 3), (1, 2)), {}),
    ]


def _loss_cases(dtype, device, gen) -> list[Case]:
    def labels(n, c):
        return torch.randint(0, c, (n,), generator=gen).to(device)

    big = (_randn((4, 5), dtype, device, gen, grad=False) * 3 + 200).requires_grad_()  # large scores: stability
    nc = _randn((6, 8), dtype, device, gen, grad=False).t().requires_grad_()  # (8, 6), non-contiguous
    return [
        ((_randn((5, 7), dtype, device, gen), labels(5, 7)), {}),
        ((_randn((1, 3), dtype, device, gen), labels(1, 3)), {}),
        ((big, labels(4, 5)), {}),
        ((nc, labels(8, 6)), {}),
    ]


SPECS: list[OpSpec] = [
    OpSpec("affine", affine, twins.affine_twin, _affine_cases, autocast="lower"),
    OpSpec("relu", relu, F.relu, _relu_cases),
    OpSpec("conv2d", conv2d, F.conv2d, _conv_cases, autocast="lower"),
    OpSpec("max_pool2d", max_pool2d, F.max_pool2d, _pool_cases),
    OpSpec("softmax_loss", softmax_loss, F.cross_entropy, _loss_cases, autocast="fp32"),
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
