"""customops/relu.py: hand-computed values, the gradient at 0 and at NaN."""

from __future__ import annotations

import torch

import customops as co


def test_relu_hand_computed():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = co.relu(x)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 0.0, 4.0, 5.0]))  # gradient 0 at the kink


def test_relu_at_nan_matches_torch():
    """NaN stays NaN and passes its gradient through, as torch.relu (its backward tests Y <= 0)."""
    x = torch.tensor([float("nan"), -1.0, 0.0, 2.0], requires_grad=True)
    y = co.relu(x)
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x_ref = x.detach().clone().requires_grad_()
    y_ref = torch.relu(x_ref)
    y_ref.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert torch.equal(x.grad, x_ref.grad) and x.grad[0] == 1.0


def test_relu_empty_batch_gives_empty_results_and_gradients():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    out = co.relu(x)
    assert out.shape == (0, 2, 6, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape
