"""Word embedding: a table lookup whose gradient scatters back into the table.

Derivation: docs/derivations.md#word-embedding
"""

from __future__ import annotations

import torch

from ._checks import Function, apply, check_ids, check_index, check_tensor


class WordEmbeddingFunction(Function):
    """out[n, t] = W[x[n, t]].

    x : N x T int64 word ids in [0, V)
    W : V x D embedding table
    out : N x T x D
    """

    @staticmethod
    def forward(x, W):
        N, T = x.shape
        return W.index_select(0, x.reshape(N * T)).view(N, T, W.shape[1])  # (N*T, D) -> (N, T, D)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W = inputs
        ctx.num_words = W.shape[0]
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_x = grad_W = None
        if ctx.needs_input_grad[1]:
            # dW[v] = sum of grad_out[n, t] over every (n, t) with x[n, t] == v: a repeated
            # id accumulates (index_add), it is not an assignment.
            N, T, D = grad_out.shape
            grad_W = grad_out.new_zeros(ctx.num_words, D).index_add_(
                0,
                x.reshape(N * T),
                grad_out.reshape(N * T, D),  # (N*T,), (N*T, D)
            )
        return grad_x, grad_W


def word_embedding(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Look up word vectors (keeps W's dtype under autocast, like F.embedding).

    Args:
        x: (N, T) int64 (or int32) word ids in [0, V).
        W: (V, D) embedding table.

    Returns:
        (N, T, D) with out[n, t] = W[x[n, t]].
    """
    op = "word_embedding"
    check_index(op, "x", x, ndim=2)
    check_tensor(op, "W", W, ndim=2)
    if x.device != W.device:
        raise ValueError(f"{op}: x is on {x.device} but W is on {W.device}")
    check_ids(op, "x", x, W.shape[0], "word ids")
    return apply(WordEmbeddingFunction, x, W)
