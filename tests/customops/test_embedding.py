"""customops/embedding.py: repeated ids accumulate their gradients; a device mismatch is named."""

from __future__ import annotations

import pytest
import torch

from customops import word_embedding


def test_embedding_gradient_accumulates_repeated_ids():
    W = torch.arange(12.0).view(4, 3).requires_grad_()
    x = torch.tensor([[2, 2, 0], [2, 1, 1]])
    out = word_embedding(x, W)
    assert torch.equal(out[1, 0], W[2].detach())
    grad = torch.arange(18.0).view(2, 3, 3)
    out.backward(grad)
    expected = torch.zeros(4, 3)
    expected[2] = grad[0, 0] + grad[0, 1] + grad[1, 0]  # id 2 appears three times
    expected[0] = grad[0, 2]
    expected[1] = grad[1, 1] + grad[1, 2]
    torch.testing.assert_close(W.grad, expected)  # row 3 never looked up: zero


@pytest.mark.cuda
def test_device_mismatch_is_named(cuda):
    with pytest.raises(ValueError, match="word_embedding"):
        word_embedding(torch.tensor([[0]]), torch.randn(2, 3, device=cuda))
