"""tta: the five views (one-pixel shifts, zero-filled, never wrapped), the mean softmax over them, and
the choice on validation (ties: plain)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules import tta


def test_the_views_are_the_image_and_its_four_one_pixel_shifts_filled_not_wrapped():
    x = torch.arange(1.0, 13.0).view(1, 1, 3, 4)  # rows [1 2 3 4], [5 6 7 8], [9 10 11 12]
    v = tta.views(x, fill=-1.0)
    assert v.shape == (5, 1, 1, 3, 4)
    assert torch.equal(v[0], x)
    # Moved up one row: the last row is brought in, as the fill.
    assert v[1, 0, 0].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12], [-1, -1, -1, -1]]
    assert v[2, 0, 0].tolist() == [[-1, -1, -1, -1], [1, 2, 3, 4], [5, 6, 7, 8]]  # down
    assert v[3, 0, 0].tolist() == [[2, 3, 4, -1], [6, 7, 8, -1], [10, 11, 12, -1]]  # left
    assert v[4, 0, 0].tolist() == [[-1, 1, 2, 3], [-1, 5, 6, 7], [-1, 9, 10, 11]]  # right
    assert not torch.equal(v[1], torch.roll(x, -1, dims=2))  # not wrapped round


class _PixelReader(nn.Module):
    """Scores (N, 2): class 1's score is the centre pixel, class 0's is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, 0, 1, 1]
        return torch.stack([torch.zeros_like(centre), centre], dim=1)


def test_tta_averages_the_softmax_over_the_views():
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 1, 1] = 4.0  # only the image itself sees the bright centre
    x[1, 0, 0, 1] = 4.0  # one of the shifts (down) brings it to the centre
    model = _PixelReader()
    plain = tta.probabilities(model, x, tta=False, fill=0.0)
    assert torch.allclose(plain, torch.tensor([[0.0, 4.0], [0.0, 0.0]]).softmax(1))
    averaged = tta.probabilities(model, x, tta=True, fill=0.0)
    one_view = torch.tensor([0.0, 4.0]).softmax(0)
    neutral = torch.tensor([0.5, 0.5])
    expected = (one_view + 4 * neutral) / 5
    assert torch.allclose(averaged[0], expected) and torch.allclose(averaged[1], expected)
    assert torch.allclose(averaged.sum(1), torch.ones(2))


def test_accuracy_scores_batches_plainly_or_with_tta():
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 1, 1] = 4.0
    x[1, 0, 0, 1] = 4.0
    y = torch.tensor([1, 1])
    acc, preds, labels = tta.accuracy(_PixelReader(), [(x, y)], False, 0.0, "cpu")
    assert acc == 0.5 and preds.tolist() == [1, 0] and labels.tolist() == [1, 1]
    # With TTA each image has one bright view of five: class 1 gets (0.98 + 4 * 0.5) / 5 > 1/2, so the
    # digit seen one pixel off is read right too.
    acc, preds, _ = tta.accuracy(_PixelReader(), [(x, y)], True, 0.0, "cpu")
    assert acc == 1.0 and preds.tolist() == [1, 1]


def test_the_choice_keeps_tta_only_when_it_is_strictly_better_on_validation():
    assert tta.choose(0.95, 0.96) == "tta"
    assert tta.choose(0.95, 0.95) == "plain"  # ties: plain
    assert tta.choose(0.96, 0.95) == "plain"
