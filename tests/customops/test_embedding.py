"""customops/embedding.py: repeated ids accumulate their gradients; a device mismatch is named;
padding_idx's row gets no gradient, as in F.embedding; the module takes ids of any shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import customops as co
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


@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
def test_padding_row_gets_no_gradient_as_in_torch(padding_idx):
    W = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0, 3, 3, 4], [4, 1, 0, 3]])
    g = torch.randn(2, 4, 3, dtype=torch.float64)
    (ours,) = torch.autograd.grad(co.word_embedding(x, W, padding_idx), W, g)
    (theirs,) = torch.autograd.grad(F.embedding(x, W, padding_idx), W, g)
    assert torch.equal(ours, theirs)
    if padding_idx is not None:
        assert torch.all(ours[padding_idx] == 0)
        assert torch.equal(co.word_embedding(x, W, padding_idx), F.embedding(x, W))  # the lookup itself is unchanged


def test_module_padding_row_starts_at_zero_and_ids_of_any_shape():
    layer = co.WordEmbedding(6, 4, padding_idx=-2)
    assert layer.padding_idx == 4 and torch.all(layer.weight[4] == 0)
    native = nn.Embedding(6, 4, padding_idx=4)
    native.load_state_dict(layer.state_dict())
    ids = torch.tensor([[[1, 4], [5, 0]]])  # (1, 2, 2): not (N, T)
    torch.testing.assert_close(layer(ids), native(ids))
    torch.testing.assert_close(layer(torch.tensor([2, 4, 4])), native(torch.tensor([2, 4, 4])))
    assert "padding_idx=4" in repr(layer)
