"""Word embedding: a table lookup whose gradient scatters back into the table."""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_embedding(x: torch.Tensor, W: torch.Tensor) -> None:
    op = "word_embedding"
    if not isinstance(x, torch.Tensor) or not isinstance(W, torch.Tensor):
        raise TypeError(f"{op}: x and W must be tensors, got {type(x).__name__} and {type(W).__name__}")
    if x.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: x must hold int64 (or int32) word ids, got {x.dtype}")
    if not W.is_floating_point():
        raise TypeError(f"{op}: W must be floating point, got {W.dtype}")
    if W.dim() != 2:
        raise ValueError(f"{op}: W must be (V, D), got shape {tuple(W.shape)}")
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be (N, T) word ids, got shape {tuple(x.shape)}")
    if x.device != W.device:
        raise ValueError(f"{op}: x is on {x.device} but W is on {W.device}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= W.shape[0]):
        raise ValueError(
            f"{op}: word ids must lie in [0, {W.shape[0]}), got min {int(x.min())} and max {int(x.max())}"
        )


class WordEmbeddingFunction(torch.autograd.Function):
    """out[n, t] = W[x[n, t]].

    x : N x T int64 word ids in [0, V)
    W : V x D embedding table
    out : N x T x D
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        _check_embedding(x, W)
        ctx.save_for_backward(x)
        ctx.num_words = W.shape[0]
        return W[x]  # (N, T, D)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x = grad_W = None
        if ctx.needs_input_grad[1]:
            # dW[v] = sum of grad_out[n, t] over every (n, t) with x[n, t] == v: a repeated
            # id accumulates (accumulate=True), it is not an assignment.
            # docs/derivations.md#word-embedding
            # (index_put with accumulate is several times faster than index_add on CPU.)
            D = grad_out.shape[-1]
            grad_W = grad_out.new_zeros(ctx.num_words, D).index_put(
                (x.reshape(-1),), grad_out.reshape(-1, D), accumulate=True  # (N*T,), (N*T, D)
            )
        return grad_x, grad_W


word_embedding = WordEmbeddingFunction.apply


class WordEmbedding(nn.Module):
    """Owns the (vocab_size, dim) table; forward (N, T) ids -> (N, T, dim)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        # Small N(0, 1/D) entries keep the first RNN pre-activations out of tanh's flat tails.
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return word_embedding(x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}"
