"""customops/temporal.py: the masked temporal softmax loss on hand-computed values; masked steps
contribute nothing, not even their non-finite scores."""

from __future__ import annotations

import math

import torch

import customops as co
from customops import temporal_softmax_loss


def test_softmax_loss_fully_masked_step_contributes_nothing():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 3, 0], [2, 0, 1]])
    mask = torch.tensor([[True, False, True], [True, False, False]])
    loss = temporal_softmax_loss(scores, y, mask)
    log_p = torch.log_softmax(scores.detach(), dim=2)
    expected = -(log_p[0, 0, 1] + log_p[0, 2, 0] + log_p[1, 0, 2]) / 2  # summed over steps, / N
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert torch.all(scores.grad[:, 1] == 0) and torch.all(scores.grad[1, 2] == 0)
    # Changing a masked step's scores or target changes nothing.
    other = scores.detach().clone()
    other[:, 1] += 100.0
    y2 = y.clone()
    y2[:, 1] = 99  # out of range, but masked
    torch.testing.assert_close(temporal_softmax_loss(other, y2, mask), loss.detach())


def test_temporal_softmax_loss_ignores_non_finite_scores_at_masked_steps():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 4), generator=gen)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    clean = scores.clone().requires_grad_()
    want = co.temporal_softmax_loss(clean, y, mask)
    want.backward()
    dirty = scores.clone()
    dirty[0, 2, 1], dirty[0, 3] = float("nan"), float("inf")
    dirty[1, 1, :] = float("-inf")
    dirty.requires_grad_()
    loss = co.temporal_softmax_loss(dirty, y, mask)
    loss.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.all(dirty.grad[~mask] == 0)


def test_temporal_softmax_loss_label_smoothing_hand_computed():
    """Uniform scores: the smoothed loss is still log V per live step, and the gradient is
    (1 - eps) (1/V - onehot(y)) / N at live steps, zero at masked ones."""
    N, T, V, eps = 2, 3, 4, 0.2
    scores = torch.zeros(N, T, V, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0, 1, 2], [3, 3, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = co.temporal_softmax_loss(scores, y, mask, label_smoothing=eps)
    torch.testing.assert_close(loss, torch.tensor(3 * math.log(V) / N, dtype=torch.float64))
    loss.backward()
    expected = torch.full((N, T, V), (1 - eps) / V / N, dtype=torch.float64)
    expected.scatter_add_(2, y.unsqueeze(2), torch.full((N, T, 1), -(1 - eps) / N, dtype=torch.float64))
    expected[~mask] = 0
    torch.testing.assert_close(scores.grad, expected)
