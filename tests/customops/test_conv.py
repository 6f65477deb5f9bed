"""customops/conv.py: the homework's convolution identities, against the literal 1-indexed
definitions (customops/testing/reference.py), and the gradients it skips."""

from __future__ import annotations

import torch

import customops as co
from customops.testing import reference


def test_conv2d_equals_sums_of_valid_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=gen, dtype=torch.float64)
    y = co.conv2d(x, w)
    for n in range(2):
        for f in range(4):
            by_filt = sum(reference.filt(x[n, c], w[f, c]) for c in range(3))
            by_valid = sum(reference.conv_valid(x[n, c], w[f, c].flip(0, 1)) for c in range(3))
            torch.testing.assert_close(y[n, f], by_filt)
            torch.testing.assert_close(y[n, f], by_valid)


def test_conv2d_gradients_equal_full_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = co.conv2d(x, w)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    for n in range(2):
        for c in range(2):
            expected = sum(reference.conv_full(w[f, c].detach(), dy[n, f]) for f in range(3))
            torch.testing.assert_close(x.grad[n, c], expected)
    for f in range(3):
        for c in range(2):
            expected = sum(reference.filt(x[n, c].detach(), dy[n, f]) for n in range(2))
            torch.testing.assert_close(w.grad[f, c], expected)


def test_conv2d_skips_unneeded_gradients():
    x = torch.randn(2, 1, 6, 6)  # data: no gradient wanted
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    co.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


def test_conv2d_empty_batch_gives_empty_results_and_gradients():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    out = co.conv2d(x, w)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.all(w.grad == 0)
