"""Softmax cross-entropy loss, averaged over the batch (F.cross_entropy's ignore_index and
label_smoothing included).

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
    unwrapped,
    values_readable,
)

_MINUS_ONE: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _minus_one(like: torch.Tensor) -> torch.Tensor:
    """A (1, 1) tensor holding -1 in like's dtype and device (made once; expanded, never written)."""
    key = (like.dtype, like.device)
    if key not in _MINUS_ONE:
        _MINUS_ONE[key] = torch.full((1, 1), -1.0, dtype=like.dtype, device=like.device)
    return _MINUS_ONE[key]


class SoftmaxLossFunction(Function):
    """scores : N x C; y : N int64 labels in [0, C) -> scalar mean cross-entropy (and the softmax
    N x C, kept for backward, not differentiable).

    Options, as F.cross_entropy's: with `masked`, rows whose label is `ignore_index` count for
    nothing and the mean is over the others; `label_smoothing` eps mixes the one-hot target with
    the uniform one, (1 - eps) onehot(y) + eps / C.
    """

    @staticmethod
    def forward(scores, y, ignore_index, label_smoothing, masked):
        # -log softmax(s)[y] = log sum_j exp(s_j - m) - (s_y - m), on scores shifted by each row's
        # maximum m (softmax is shift-invariant), so exp never overflows.
        eager = in_place_ok()
        shifted = scores - scores.amax(1, keepdim=True)  # (N, C), each row's max is 0
        if masked:
            keep = (y != ignore_index).unsqueeze(1)  # (N, 1)
            y = torch.where(keep.squeeze(1), y, 0)  # any class for an ignored row: it is weighted 0
        nll = shifted.gather(1, y.view(-1, 1))  # (N, 1): s_y - m, before exp_ overwrites shifted
        if label_smoothing:
            # -sum_j eps/C log softmax(s)_j = eps (log sum_j exp(s_j - m) - mean_j (s_j - m))
            nll = (1.0 - label_smoothing) * nll + label_smoothing * shifted.mean(1, keepdim=True)
        e = shifted.exp_() if eager else shifted.exp()  # in place: one (N, C) buffer in eager mode
        sum_e = e.sum(1, keepdim=True)  # (N, 1), >= 1, so its log is safe
        probs = e.div_(sum_e) if eager else e / sum_e  # softmax
        nll = sum_e.log_().sub_(nll) if eager else sum_e.log() - nll  # (N, 1)
        if masked:
            # where, not a product: an ignored row counts for nothing even if its scores are inf or NaN
            return torch.where(keep, nll, 0).sum() / keep.sum(), probs
        return nll.mean(), probs

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, y, ignore_index, label_smoothing, masked = inputs
        _, probs = output
        ctx.mark_non_differentiable(probs)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for that output
        ctx.ignore_index, ctx.label_smoothing, ctx.masked = ignore_index, label_smoothing, masked
        ctx.save_for_backward(scores, y, probs)

    @staticmethod
    def backward(ctx, grad_out, _grad_probs):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None
        scores, y, probs = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            eps, n = ctx.label_smoothing, scores.shape[0]
            if torch.is_grad_enabled():
                # Double backward: rebuild the softmax from scores, so the result stays a function of them.
                probs = (scores - torch.logsumexp(scores, 1, keepdim=True)).exp()
            # dL/ds_nj = (p_nj - (1 - eps) 1[j = y_n] - eps/C) w_n, with w_n = 1/N (masked: 1/kept, 0 if ignored)
            # docs/derivations.md#ignored-labels-and-label-smoothing
            if ctx.masked:
                keep = (y != ctx.ignore_index).unsqueeze(1)  # (N, 1)
                y = torch.where(keep.squeeze(1), y, 0)
            minus = _minus_one(probs).expand(n, 1)
            # (out of place: probs is saved, and under torch.func grad_out may be batched where probs is not)
            grad_scores = probs.scatter_add(1, y.view(-1, 1), minus * (1.0 - eps) if eps else minus)
            if eps:
                grad_scores = grad_scores - eps / scores.shape[1]
            if ctx.masked:
                weight = keep * (grad_out / keep.sum())  # (N, 1)
                grad_scores = torch.where(keep, grad_scores * weight, 0)  # an ignored row's inf or NaN: 0
            elif in_place_ok() and unwrapped(grad_out, probs):
                grad_scores.mul_(grad_out).div_(n)
            else:
                grad_scores = grad_scores * (grad_out / n)
        return grad_scores, None, None, None, None


def softmax_loss(
    scores: torch.Tensor, y: torch.Tensor, ignore_index: int = -100, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean softmax cross-entropy (a loss: runs in float32 under autocast, like F.cross_entropy).

    Args:
        scores: (N, C) class scores.
        y: (N,) int64 (or int32) labels in [0, C), or ignore_index.
        ignore_index: rows with this label count for nothing; the mean is over the other rows
            (all rows ignored: NaN, as in torch).
        label_smoothing: eps in [0, 1]: the target is (1 - eps) onehot(y) + eps / C.

    Returns:
        A scalar: mean over the rows n not ignored of -sum_j target[n, j] log softmax(scores[n])[j].
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
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"softmax_loss: ignore_index must be an int, got {ignore_index!r}")
    if (
        not isinstance(label_smoothing, (int, float))
        or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"softmax_loss: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    eps = float(label_smoothing)
    if y.dtype != torch.int64:
        y = y.long()
    (scores,) = autocast_cast(FP32, scores)
    # Whether some label may be ignore_index: a label in [0, C) always may; one outside it (the
    # default -100) only where values cannot be read (tracing, torch.func), or, on CPU, when
    # gather refuses a label: the masked form runs then (no cost to the common case).
    if not values_readable(scores, y):
        return apply(SoftmaxLossFunction, scores, y, ignore_index, eps, True)[0]
    masked = 0 <= ignore_index < c
    if scores.device.type != "cpu":
        # On accelerators an out-of-range label would trip a device-side assert, so check first.
        masked = masked or bool((y == ignore_index).any())
        check_ids(op, "y", y[y != ignore_index] if masked else y, c, _labels(ignore_index, masked))
        return apply(SoftmaxLossFunction, scores, y, ignore_index, eps, masked)[0]
    try:
        return apply(SoftmaxLossFunction, scores, y, ignore_index, eps, masked)[0]
    except RuntimeError:
        # On CPU, gather checks its indices itself: only pay for these checks on failure.
        if not masked and bool((y == ignore_index).any()):
            check_ids(op, "y", y[y != ignore_index], c, _labels(ignore_index, True))
            return apply(SoftmaxLossFunction, scores, y, ignore_index, eps, True)[0]
        check_ids(op, "y", y[y != ignore_index] if masked else y, c, _labels(ignore_index, masked))
        raise


def _labels(ignore_index: int, masked: bool) -> str:
    return f"labels (or ignore_index={ignore_index})" if masked else "labels"
