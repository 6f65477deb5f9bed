"""Softmax cross-entropy loss, averaged over the batch.

Derivation: docs/derivations.md#softmax-loss
"""

from __future__ import annotations

import torch

from ._checks import (
    FP32,
    Function,
    apply,
    autocast_cast,
    check_ids,
    check_index,
    check_tensor,
    describe,
    in_place_ok,
    values_readable,
)


class SoftmaxLossFunction(Function):
    """scores : N x C; y : N int64 labels in [0, C) -> scalar mean cross-entropy (and the softmax N x C).

    The softmax probabilities are the second, non-differentiable output: backward needs
    exactly them, and torch.func and double backward need every saved tensor to be an input
    or an output.
    """

    @staticmethod
    def forward(scores, y):
        # L = mean_n [ log sum_j exp(s_nj) - s_{n,y_n} ], computed on scores shifted by each
        # row's maximum (softmax is shift-invariant), so exp never overflows.
        shifted = scores - scores.amax(1, keepdim=True)  # (N, C), each row's max is 0
        picked = shifted.gather(1, y.view(-1, 1))  # (N, 1), before exp_ overwrites shifted
        e = shifted.exp_() if in_place_ok() else shifted.exp()  # in place: one (N, C) buffer in eager mode
        sum_e = e.sum(1, keepdim=True)  # (N, 1), >= 1, so its log is safe
        loss = (sum_e.log() - picked).mean()
        return loss, e.div_(sum_e) if in_place_ok() else e / sum_e  # softmax

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, y = inputs
        _, probs = output
        ctx.mark_non_differentiable(probs)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.save_for_backward(scores, y, probs)

    @staticmethod
    def backward(ctx, grad_out, _grad_probs):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None
        scores, y, probs = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            # dL/ds_nj = (p_nj - 1[j = y_n]) / N
            if torch.is_grad_enabled():
                # Double backward: rebuild the softmax from scores, so the result stays a function of them.
                probs = (scores - torch.logsumexp(scores, 1, keepdim=True)).exp()
            minus_one = probs.new_full((1, 1), -1.0).expand(y.shape[0], 1)
            # (out of place: under torch.func grad_out may be batched where probs is not)
            grad_scores = probs.scatter_add(1, y.view(-1, 1), minus_one) * (grad_out / y.shape[0])
        return grad_scores, None


def softmax_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy (a loss: runs in float32 under autocast, like F.cross_entropy).

    Args:
        scores: (N, C) class scores.
        y: (N,) int64 (or int32) labels in [0, C).

    Returns:
        A scalar: mean over the N samples of -log softmax(scores[n])[y[n]].
    """
    op = "softmax_loss"
    check_tensor(op, "scores", scores, ndim=2)
    check_index(op, "y", y, ndim=1)
    if y.device != scores.device:
        raise ValueError(f"softmax_loss: scores on {scores.device} but y on {y.device}")
    n, c = scores.shape
    if y.shape[0] != n:
        raise ValueError(f"softmax_loss: scores {describe(scores)} has {n} rows but y has shape {tuple(y.shape)}")
    if n == 0:
        raise ValueError("softmax_loss: empty batch (scores has 0 rows)")
    if c == 0:
        raise ValueError("softmax_loss: scores has 0 classes (shape (N, 0))")
    if y.dtype != torch.int64:
        y = y.long()
    (scores,) = autocast_cast(FP32, scores)
    if scores.device.type != "cpu":
        # On accelerators an out-of-range label would trip a device-side assert, so check first.
        check_ids(op, "y", y, c, "labels")
        return apply(SoftmaxLossFunction, scores, y)[0]
    if not values_readable(scores, y):
        return apply(SoftmaxLossFunction, scores, y)[0]
    try:
        return apply(SoftmaxLossFunction, scores, y)[0]
    except RuntimeError:
        # On CPU, gather checks its indices itself: only pay for the check on failure.
        check_ids(op, "y", y, c, "labels")
        raise
