"""Softmax cross-entropy loss, averaged over the batch.

Derivation: docs/derivations.md#softmax-loss
"""
from __future__ import annotations

import torch

from ._checks import check_same_dtype_device, check_tensor, describe


class SoftmaxLossFunction(torch.autograd.Function):
    """scores : N x C; y : N int64 labels in [0, C) -> scalar mean cross-entropy."""

    @staticmethod
    def forward(ctx, scores, y):
        y_col = y.view(-1, 1)  # (N, 1)
        shifted = scores - scores.amax(1, keepdim=True)  # (N, C); each row's max is 0, so exp <= 1
        e = shifted.exp()
        sum_e = e.sum(1, keepdim=True)  # (N, 1), >= 1, so its log is safe
        # L = mean_n [ log sum_j exp(s_nj) - s_{n,y_n} ], on the shifted scores
        loss = (sum_e.log() - shifted.gather(1, y_col)).mean()
        # dL/ds_nj = (p_nj - 1[j = y_n]) / N: keep P - onehot(y) for backward
        probs_minus_onehot = e.div_(sum_e)  # softmax, reusing e's memory
        probs_minus_onehot.scatter_add_(1, y_col, _minus_ones(scores).expand(y_col.shape))
        ctx.save_for_backward(scores, y, probs_minus_onehot)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        scores, y, probs_minus_onehot = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():
                # Double backward: rebuild P - onehot from scores so the result stays a function of them.
                probs = (scores - torch.logsumexp(scores, 1, keepdim=True)).exp()
                probs_minus_onehot = probs.scatter_add(1, y.view(-1, 1), _minus_ones(scores).expand(y.numel(), 1))
            grad_scores = probs_minus_onehot * (grad_out / y.numel())
        return grad_scores, None


_MINUS_ONE: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _minus_ones(like: torch.Tensor) -> torch.Tensor:
    """A (1, 1) tensor holding -1 in like's dtype and device, made once (this op runs every step)."""
    key = (like.dtype, like.device)
    if key not in _MINUS_ONE:
        _MINUS_ONE[key] = torch.full((1, 1), -1.0, dtype=like.dtype, device=like.device)
    return _MINUS_ONE[key]


def _check_labels(y: torch.Tensor, c: int) -> None:
    lo, hi = (int(v) for v in torch.aminmax(y))
    if lo < 0 or hi >= c:
        raise ValueError(f"softmax_loss: labels must lie in [0, {c}), got values from {lo} to {hi}")


def softmax_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of scores (N, C) against integer labels y (N,) in [0, C)."""
    op = "softmax_loss"
    check_tensor(op, "scores", scores, ndim=2)
    check_tensor(op, "y", y, ndim=1, floating=False)
    if y.device != scores.device:
        raise ValueError(f"softmax_loss: scores on {scores.device} but y on {y.device}")
    n, c = scores.shape
    if y.shape[0] != n:
        raise ValueError(f"softmax_loss: scores {describe(scores)} has {n} rows but y has shape {tuple(y.shape)}")
    if n == 0:
        raise ValueError("softmax_loss: empty batch (scores has 0 rows)")
    if y.dtype != torch.int64:
        y = y.long()
    if scores.device.type != "cpu":
        # On accelerators an out-of-range label would trip a device-side assert, so check first.
        _check_labels(y, c)
        return SoftmaxLossFunction.apply(scores, y)
    try:
        return SoftmaxLossFunction.apply(scores, y)
    except RuntimeError:
        # On CPU, gather/scatter check their indices themselves: only pay for the check on failure.
        _check_labels(y, c)
        raise
