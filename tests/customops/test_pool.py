"""customops/pool.py: hand-computed values, ties and overlapping windows; max pooling's padding
and dilation, average and adaptive average pooling against torch in every option and memory format,
the modules."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import customops as co


def test_max_pool_hand_computed_and_ties():
    x = torch.tensor([[[[1.0, 2.0, 5.0, 5.0], [3.0, 0.0, 5.0, 5.0], [7.0, 7.0, 9.0, 8.0]]]], requires_grad=True)
    y = co.max_pool2d(x)  # the odd last row is dropped
    assert torch.equal(y, torch.tensor([[[[3.0, 5.0]]]]))
    y.backward(torch.tensor([[[[10.0, 20.0]]]]))
    expected = torch.zeros(1, 1, 3, 4)
    expected[0, 0, 1, 0] = 10.0
    expected[0, 0, 0, 2] = 20.0  # four tied 5s: the first in row-major order takes it all
    assert torch.equal(x.grad, expected)


def test_max_pool_overlapping_windows_accumulate():
    x = torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    co.max_pool2d(x, 2, 1).sum().backward()  # the 9 wins all four windows
    assert x.grad[0, 0, 1, 1] == 4.0 and x.grad.sum() == 4.0


def test_max_pool_empty_batch_gives_empty_results_and_gradients():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    out = co.max_pool2d(x)
    assert out.shape == (0, 2, 3, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape


def _both(op, twin, x, *args, **kwargs):
    """Outputs and input gradients of op and twin for the same input and upstream gradient."""
    results = []
    for fn in (op, twin):
        leaf = x.detach().clone().requires_grad_()
        out = fn(leaf, *args, **kwargs)
        gen = torch.Generator().manual_seed(1)
        out.backward(torch.randn(out.shape, generator=gen, dtype=out.dtype))
        results.append((out.detach(), leaf.grad))
    return results


def test_max_pool_padding_is_minus_infinity():
    x = -torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # all negative: zero padding would win every window
    x.requires_grad_()
    y = co.max_pool2d(x, 2, 2, 1)  # windows at rows/cols (-1, 0) and (1, 2)
    assert torch.equal(y, torch.tensor([[[[-1.0, -2.0], [-4.0, -5.0]]]]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_max_pool_options_equal_torch(channels_last):
    gen = torch.Generator().manual_seed(0)
    for k, s, p, d in itertools.product([2, 3], [1, 2], [0, 1], [1, 2]):
        x = torch.randperm(2 * 3 * 9 * 8, generator=gen).double().view(2, 3, 9, 8)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        (y, gx), (y_t, gx_t) = _both(co.max_pool2d, F.max_pool2d, x, k, s, p, d)
        assert torch.equal(y, y_t) and torch.equal(gx, gx_t), (k, s, p, d)


def test_avg_pool_hand_computed_divisors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # 3x3 windows, stride 2, padding 1: the corner window covers 4 entries of the input
    corner = (0 + 1 + 4 + 5) / 9  # count_include_pad: the 5 padding zeros count
    assert co.avg_pool2d(x, 3, 2, 1)[0, 0, 0, 0] == pytest.approx(corner)
    assert co.avg_pool2d(x, 3, 2, 1, count_include_pad=False)[0, 0, 0, 0] == pytest.approx(10 / 4)
    assert co.avg_pool2d(x, 3, 2, 1, divisor_override=2)[0, 0, 0, 0] == pytest.approx(10 / 2)
    assert torch.equal(co.avg_pool2d(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_avg_pool_options_equal_torch(channels_last):
    gen = torch.Generator().manual_seed(0)
    options = itertools.product([1, 2, 3], [None, 1, 2], [0, 1], [False, True], [False, True], [None, 5])
    for k, s, p, ceil, include, divisor in options:
        if p > k // 2:
            continue
        x = torch.randn(2, 3, 7, 8, generator=gen, dtype=torch.float64)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        (y, gx), (y_t, gx_t) = _both(co.avg_pool2d, F.avg_pool2d, x, k, s, p, ceil, include, divisor)
        torch.testing.assert_close(y, y_t, rtol=0, atol=1e-12)
        torch.testing.assert_close(gx, gx_t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, (3, 4), (2, None), (5, 3), (7, 7), (14, 16)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_adaptive_avg_pool_equals_torch(size, channels_last):
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (y, gx), (y_t, gx_t) = _both(co.adaptive_avg_pool2d, F.adaptive_avg_pool2d, x, size)
    torch.testing.assert_close(y, y_t, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, gx_t, rtol=0, atol=1e-12)


def test_global_pooling_is_the_mean_and_keeps_channels_last():
    x = torch.randn(4, 5, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = co.adaptive_avg_pool2d(x, 1)
    torch.testing.assert_close(y, x.mean((2, 3), keepdim=True))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 49))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_modules():
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(co.MaxPool2d(3, 2, 1)(x), F.max_pool2d(x, 3, 2, 1))
    torch.testing.assert_close(
        co.AvgPool2d(3, 2, 1, count_include_pad=False)(x), F.avg_pool2d(x, 3, 2, 1, False, False)
    )
    torch.testing.assert_close(co.AdaptiveAvgPool2d((2, 3))(x), F.adaptive_avg_pool2d(x, (2, 3)))
    assert "padding=(1, 1)" in repr(co.MaxPool2d(3, 2, 1)) and "output_size=(2, 3)" in repr(
        co.AdaptiveAvgPool2d((2, 3))
    )
    with pytest.raises(ValueError, match="MaxPool2d: ceil_mode=True is not supported"):
        co.MaxPool2d(2, ceil_mode=True)
