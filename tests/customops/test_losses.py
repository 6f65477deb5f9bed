"""customops/losses.py: the softmax loss on hand-computed values and very large scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import customops as co


def test_softmax_loss_hand_computed():
    scores = torch.zeros(2, 4, requires_grad=True)
    y = torch.tensor([1, 3])
    loss = co.softmax_loss(scores, y)
    torch.testing.assert_close(loss, torch.log(torch.tensor(4.0)))  # uniform scores: log C
    loss.backward()
    expected = torch.full((2, 4), 0.25 / 2)
    expected[0, 1] -= 0.5
    expected[1, 3] -= 0.5
    torch.testing.assert_close(scores.grad, expected)


def test_softmax_loss_stable_for_large_scores():
    scores = torch.tensor([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]], requires_grad=True)
    loss = co.softmax_loss(scores, torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(scores, torch.tensor([0, 2])))
    loss.backward()
    assert torch.isfinite(scores.grad).all()
