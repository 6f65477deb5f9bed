"""Layers applied independently at every time step of a (N, T, ...) sequence:
temporal affine and the masked temporal softmax loss.

Derivations: docs/derivations.md#temporal-affine, docs/derivations.md#masked-temporal-softmax-loss
"""

from __future__ import annotations

import torch

from ._checks import (
    FP32,
    LOWER,
    Function,
    apply,
    autocast_cast,
    check_ids,
    check_index,
    check_same_dtype_device,
    check_shape,
    check_tensor,
    in_place_ok,
)


class TemporalAffineFunction(Function):
    """out[n, t] = x[n, t] w + b.

    x : N x T x D
    w : D x M
    b : M (or None)
    out : N x T x M
    """

    @staticmethod
    def forward(x, w, b):
        N, T, D = x.shape
        M = w.shape[1]
        rows = x.reshape(N * T, D)  # (N*T, D)
        out = rows @ w if b is None else torch.addmm(b, rows, w)  # (N*T, M)
        return out.view(N, T, M)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        N, T, D = x.shape
        M = w.shape[1]
        # The time axis is just more rows of an affine layer.  docs/derivations.md#temporal-affine
        grad_rows = grad_out.reshape(N * T, M)  # (N*T, M)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_rows @ w.t()).view(N, T, D)  # (N, T, D)
        if ctx.needs_input_grad[1]:
            grad_w = x.reshape(N * T, D).t() @ grad_rows  # (D, M)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        return grad_x, grad_w, grad_b


def temporal_affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """An affine layer at every time step (a matrix product under autocast: low precision).

    Args:
        x: (N, T, D).
        w: (D, M).
        b: (M,) or None.

    Returns:
        (N, T, M) with out[n, t] = x[n, t] w + b.
    """
    op = "temporal_affine"
    check_tensor(op, "x", x, ndim=3)
    check_tensor(op, "w", w, ndim=2)
    if b is not None:
        check_tensor(op, "b", b, ndim=1)
    x, w, b = autocast_cast(LOWER, x, w, b)
    check_same_dtype_device(op, x=x, w=w, b=b)
    D = x.shape[2]
    if w.shape[0] != D:
        raise ValueError(f"{op}: w must be (D={D}, M) for x {tuple(x.shape)}, got {tuple(w.shape)}")
    if b is not None:
        check_shape(op, "b", b, (w.shape[1],))
    return apply(TemporalAffineFunction, x, w, b)


class TemporalSoftmaxLossFunction(Function):
    """loss = -(1/N) sum_{n,t: mask[n,t]} log softmax(scores[n, t])[y[n, t]].

    scores : N x T x V
    y : N x T int64 targets in [0, V) (any value in [0, V) where masked)
    mask : N x T bool
    loss : scalar (second output: the softmax N x T x V, kept for backward, not differentiable)

    `label_smoothing` eps mixes each step's one-hot target with the uniform one,
    (1 - eps) onehot(y) + eps / V, as F.cross_entropy's option does.
    """

    @staticmethod
    def forward(scores, y, mask, label_smoothing):
        N = scores.shape[0]
        # log softmax(s)[y] = (s[y] - m) - log sum_k exp(s_k - m), with m each step's maximum.
        shifted = scores - scores.amax(2, keepdim=True)  # (N, T, V)
        picked = shifted.gather(2, y.unsqueeze(2))  # (N, T, 1), before exp_ overwrites shifted
        if label_smoothing:
            # sum_k target_k log p_k = (1 - eps) (s_y - m) + eps mean_k (s_k - m) - log sum_k exp(s_k - m)
            picked = (1.0 - label_smoothing) * picked + label_smoothing * shifted.mean(2, keepdim=True)
        e = shifted.exp_() if in_place_ok() else shifted.exp()  # in place: one (N, T, V) buffer in eager mode
        sum_e = e.sum(2, keepdim=True)  # (N, T, 1)
        log_p = (picked - sum_e.log()).squeeze(2)  # (N, T)
        # where, not a product with the mask: a masked step contributes nothing even if its
        # scores are inf or NaN.
        loss = -torch.where(mask, log_p, 0).sum() / N
        return loss, e.div_(sum_e) if in_place_ok() else e / sum_e  # softmax

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, y, mask, label_smoothing = inputs
        _, probs = output
        ctx.mark_non_differentiable(probs)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.label_smoothing = label_smoothing
        ctx.save_for_backward(scores, y, mask, probs)

    @staticmethod
    def backward(ctx, grad_loss, _grad_probs):
        if grad_loss is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None
        scores, y, mask, probs = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            N, eps = scores.shape[0], ctx.label_smoothing
            # d/ds of -sum_k target_k log softmax(s)_k is softmax(s) - target, target = (1 - eps) onehot(y)
            # + eps / V, zeroed where masked. docs/derivations.md#masked-temporal-softmax-loss
            weight = mask.unsqueeze(2).to(scores.dtype) * (grad_loss / N)  # (N, T, 1)
            if torch.is_grad_enabled():  # create_graph=True: rebuild the softmax with its graph
                shifted = scores - torch.logsumexp(scores, 2, keepdim=True)
                probs = torch.where(mask.unsqueeze(2), shifted, -torch.inf).exp()  # 0 where masked
            # (out of place: under torch.func the weight may be batched where probs is not)
            grad_scores = probs * weight  # (N, T, V)
            if not torch.is_grad_enabled():
                # A masked step's softmax may be NaN (its scores may hold inf or NaN), and
                # NaN * 0 stays NaN: zero it. A live step with such scores makes the loss
                # itself NaN, which is where the fault shows.
                grad_scores.nan_to_num_(nan=0.0, posinf=torch.inf, neginf=-torch.inf)
            if eps:
                grad_scores = grad_scores - weight * (eps / scores.shape[2])  # the uniform part, live steps only
            grad_scores = grad_scores.scatter_add_(2, y.unsqueeze(2), -weight * (1.0 - eps) if eps else -weight)
        return grad_scores, None, None, None


def temporal_softmax_loss(
    scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Masked softmax loss summed over time steps and averaged over the minibatch (float32 under autocast).

    Masked positions contribute neither loss nor gradient, whatever their scores and targets hold.

    Args:
        scores: (N, T, V) vocabulary scores.
        y: (N, T) int64 (or int32) targets, in [0, V) where mask is true.
        mask: (N, T) bool, true where the step counts.
        label_smoothing: eps in [0, 1]: each step's target is (1 - eps) onehot(y) + eps / V
            (F.cross_entropy's label_smoothing).

    Returns:
        A scalar: -(1/N) sum over unmasked (n, t) of sum_k target[n, t, k] log softmax(scores[n, t])[k].
    """
    op = "temporal_softmax_loss"
    check_tensor(op, "scores", scores, ndim=3)
    check_index(op, "y", y)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{op}: mask must be a bool tensor, got {got}")
    N, T, V = scores.shape
    for name, t in (("y", y), ("mask", mask)):
        check_shape(op, name, t, (N, T), " = (N, T)")
        if t.device != scores.device:
            raise ValueError(f"{op}: {name} is on {t.device} but scores is on {scores.device}")
    if N == 0:
        raise ValueError(f"{op}: empty minibatch (N = 0)")
    if V == 0:
        raise ValueError(f"{op}: scores has an empty vocabulary (V = 0)")
    if (
        not isinstance(label_smoothing, (int, float))
        or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"{op}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    y = y.long().masked_fill(~mask, 0)  # masked targets are ignored; 0 keeps gather in range
    check_ids(op, "y", y, V, "targets (where mask is true)")
    (scores,) = autocast_cast(FP32, scores)
    return apply(TemporalSoftmaxLossFunction, scores, y, mask, float(label_smoothing))[0]
