"""co.word_embedding's padding_idx and co.WordEmbedding (customops/embedding.py): the padding row
gets no gradient, as in F.embedding; the module takes ids of any shape; clear errors. (The op's
other tests are in tests/test_captioning_ops.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import customops as co


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


W5 = torch.randn(5, 3)
BAD_INPUTS = [
    ("word_embedding", lambda: co.word_embedding(torch.tensor([[0, 1]]), W5, 5), ValueError, r"\[-5, 5\)"),
    ("word_embedding", lambda: co.word_embedding(torch.tensor([[0, 1]]), W5, -6), ValueError, "padding_idx"),
    ("word_embedding", lambda: co.word_embedding(torch.tensor([[0, 1]]), W5, 1.0), TypeError, "padding_idx"),
    ("word_embedding", lambda: co.word_embedding(torch.tensor([[0, 1]]), W5, True), TypeError, "padding_idx"),
]


@pytest.mark.parametrize("op,call,error,match", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(op, call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert str(info.value).startswith(op + ":")
