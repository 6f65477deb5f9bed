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
    padding_idx : a row of W that gets no gradient (or None)
    """

    @staticmethod
    def forward(x, W, padding_idx):
        N, T = x.shape
        return W.index_select(0, x.reshape(N * T)).view(N, T, W.shape[1])  # (N*T, D) -> (N, T, D)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W, padding_idx = inputs
        ctx.num_words, ctx.padding_idx = W.shape[0], padding_idx
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
            if ctx.padding_idx is not None:
                grad_W[ctx.padding_idx] = 0  # the padding row is a constant: it gets no gradient
        return grad_x, grad_W, None


def word_embedding(x: torch.Tensor, W: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """Look up word vectors (keeps W's dtype under autocast, like F.embedding).

    Args:
        x: (N, T) int64 (or int32) word ids in [0, V).
        W: (V, D) embedding table.
        padding_idx: a word id whose row of W gets no gradient (negative: counted from the end, as
            in F.embedding), or None.

    Returns:
        (N, T, D) with out[n, t] = W[x[n, t]].
    """
    op = "word_embedding"
    check_index(op, "x", x, ndim=2)
    check_tensor(op, "W", W, ndim=2)
    if x.device != W.device:
        raise ValueError(f"{op}: x is on {x.device} but W is on {W.device}")
    if padding_idx is not None:
        if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
            raise TypeError(f"{op}: padding_idx must be an int or None, got {padding_idx!r}")
        V = W.shape[0]
        if not -V <= padding_idx < V:
            raise ValueError(f"{op}: padding_idx must be in [-{V}, {V}) for W of {V} rows, got {padding_idx}")
        padding_idx %= V
    check_ids(op, "x", x, W.shape[0], "word ids")
    return apply(WordEmbeddingFunction, x, W, padding_idx)
