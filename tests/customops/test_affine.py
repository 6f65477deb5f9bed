"""customops/affine.py: hand-computed values and shapes (gradient checks and parity with
F.linear run over the registry, tests/customops/testing/test_specs.py)."""

from __future__ import annotations

import torch

import customops as co


def test_affine_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])
    b = torch.tensor([0.0, 1.0, 2.0])
    assert torch.equal(co.affine(x, w, b), torch.tensor([[2.0, 3.0, 5.0], [5.0, 5.0, 7.0]]))
    x.requires_grad_()
    w.requires_grad_()
    co.affine(x, w, b).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]]))  # X^T 1
    assert torch.equal(x.grad, torch.tensor([[0.0, 3.5], [0.0, 3.5]]))  # 1 W^T


def test_affine_flattens_trailing_dims():
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    w = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(co.affine(x, w), x.reshape(3, 8) @ w)


def test_affine_empty_batch_gives_empty_results_and_gradients():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    w = torch.randn(72, 3, requires_grad=True)
    out = co.affine(x, w, torch.zeros(3, requires_grad=True))
    assert out.shape == (0, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.all(w.grad == 0)
