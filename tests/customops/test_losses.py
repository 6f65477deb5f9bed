"""customops/losses.py: the softmax loss on hand-computed values and very large scores;
ignore_index and label_smoothing with torch's semantics, ignored rows that hold inf or NaN, the module."""

from __future__ import annotations

import itertools

import pytest
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


@pytest.mark.parametrize("ignore_index,smoothing", list(itertools.product([-100, 2], [0.0, 0.1, 1.0])))
def test_options_equal_torch(ignore_index, smoothing):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (7,), generator=gen)
    y[[1, 4]] = ignore_index
    results = []
    for fn in (co.softmax_loss, F.cross_entropy):
        s = scores.clone().requires_grad_()
        loss = fn(s, y, ignore_index=ignore_index, label_smoothing=smoothing)
        (g,) = torch.autograd.grad(loss * 1.7, s)
        results.append((loss, g))
    (loss, g), (want_loss, want_g) = results
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(g, want_g, rtol=0, atol=1e-12)
    assert torch.all(g[[1, 4]] == 0)


def test_label_smoothing_hand_computed():
    scores = torch.zeros(1, 4, requires_grad=True)  # uniform softmax: -log p_j = log 4 for every j
    loss = co.softmax_loss(scores, torch.tensor([2]), label_smoothing=0.4)
    torch.testing.assert_close(loss, torch.log(torch.tensor(4.0)))
    loss.backward()
    # p - (1 - eps) onehot - eps / C = 0.25 - 0.6 - 0.1 at the label, 0.25 - 0.1 elsewhere
    torch.testing.assert_close(scores.grad, torch.tensor([[0.15, 0.15, -0.45, 0.15]]))


def test_ignored_rows_count_for_nothing_even_when_not_finite():
    scores = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, -100, 2, -100])
    dirty = scores.clone()
    dirty[1] = float("nan")
    dirty[3, 0] = float("inf")
    clean_loss = F.cross_entropy(scores[[0, 2]], y[[0, 2]])
    for eps in (0.0, 0.2):
        s = dirty.clone().requires_grad_()
        loss = co.softmax_loss(s, y, label_smoothing=eps)
        loss.backward()
        want = F.cross_entropy(scores[[0, 2]], y[[0, 2]], label_smoothing=eps)
        torch.testing.assert_close(loss, want)
        assert torch.isfinite(s.grad).all() and torch.all(s.grad[[1, 3]] == 0)
    assert torch.isfinite(clean_loss)


def test_every_row_ignored_is_nan_as_in_torch():
    s = torch.randn(3, 4, requires_grad=True)
    y = torch.full((3,), -100)
    assert torch.isnan(co.softmax_loss(s, y)) and torch.isnan(F.cross_entropy(s, y))


def test_module_options():
    s, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(
        co.SoftmaxLoss(ignore_index=1, label_smoothing=0.1)(s, y),
        F.cross_entropy(s, y, ignore_index=1, label_smoothing=0.1),
    )
