"""Test-time augmentation for the digit classifiers, chosen on validation.

A digit is scored by the mean of the network's softmax over five views: the image itself and its
four one-pixel shifts (up, down, left, right), the pixels shifted in taking the background value
(zero-filled, never wrapped round). Whether that beats scoring the image alone is a question for
the validation digits: ``choose`` keeps TTA only when its validation accuracy is strictly higher
(ties: plain), and only the chosen way ever scores the test digits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

# (rows, columns) each view moves the image by: itself, then one pixel up, down, left and right.
SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
Choice = Literal["plain", "tta"]


def shifted(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """x (N, C, H, W) moved by dy rows and dx columns (|dy|, |dx| < H, W); pixels shifted in are `fill`."""
    out = torch.full_like(x, fill)
    H, W = x.shape[-2:]
    rows_to, rows_from = slice(max(dy, 0), H + min(dy, 0)), slice(max(-dy, 0), H + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), W + min(dx, 0)), slice(max(-dx, 0), W + min(-dx, 0))
    out[..., rows_to, cols_to] = x[..., rows_from, cols_from]
    return out


def views(x: torch.Tensor, fill: float) -> torch.Tensor:
    """x (N, C, H, W) -> (V, N, C, H, W): the images and their one-pixel shifts, in ``SHIFTS``' order."""
    return torch.stack([shifted(x, dy, dx, fill) for dy, dx in SHIFTS])


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, tta: bool, fill: float) -> torch.Tensor:
    """Class probabilities (N, K) of images x (N, C, H, W): the softmax of the scores, or with `tta`
    its mean over ``views(x, fill)``."""
    if not tta:
        return model(x).softmax(dim=1)
    stacked = views(x, fill)  # (V, N, C, H, W)
    scores = model(stacked.flatten(0, 1))  # (V*N, K)
    return scores.softmax(dim=1).view(len(SHIFTS), x.shape[0], -1).mean(0)  # (N, K)


def accuracy(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tta: bool, fill: float, device
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(accuracy, predictions, labels) of `model` in eval mode over (images, labels) batches."""
    model.eval().to(device)
    preds, labels = [], []
    for x, y in batches:
        preds.append(probabilities(model, x.to(device), tta, fill).argmax(1).cpu())
        labels.append(y)
    preds_all, labels_all = torch.cat(preds), torch.cat(labels)
    return (preds_all == labels_all).float().mean().item(), preds_all, labels_all


def choose(val_plain: float, val_tta: float) -> Choice:
    """ "tta" when it scores strictly better on validation, else "plain" (ties keep the cheaper way)."""
    return "tta" if val_tta > val_plain else "plain"
