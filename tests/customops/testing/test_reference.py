"""customops/testing/reference.py: the literal 1-indexed operations on hand-computed values."""

from __future__ import annotations

import torch

from customops.testing import reference


def test_reference_operations_hand_computed():
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert torch.equal(reference.filt(a, b), torch.tensor([[-4.0, -4.0], [-4.0, -4.0]]))
    assert torch.equal(reference.conv_valid(a, b), torch.tensor([[4.0, 4.0], [4.0, 4.0]]))  # kernel flipped
    full = reference.conv_full(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [3.0]]))
    assert torch.equal(full, torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
