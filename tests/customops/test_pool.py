"""customops/pool.py: hand-computed values, ties and overlapping windows."""

from __future__ import annotations

import torch

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
