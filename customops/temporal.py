"""Layers applied independently at every time step of a (N, T, ...) sequence:
temporal affine and the masked temporal softmax loss.

Derivations: docs/derivations.md#temporal-affine, docs/derivations.md#masked-temporal-softmax-loss
"""
from __future__ import annotations

import torch

from ._checks import (
    FP32,
    LOWER,
    apply,
    autocast_cast,
    check_ids,
    check_index,
    check_same_dtype_device,
    check_shape,
    check_tensor,
)


class TemporalAffineFunction(torch.autograd.Function):
    """out[n, t] = x[n, t] w + b.

    x : N x T x D
    w : D x M
    b : M (or None)
    out : N x T x M
    """

    generate_vmap_rule = True

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


class TemporalSoftmaxLossFunction(torch.autograd.Function):
    """loss = -(1/N) sum_{n,t: mask[n,t]} log softmax(scores[n, t])[y[n, t]].

    scores : N x T x V
    y : N x T int64 targets in [0, V) (any value in [0, V) where masked)
    mask : N x T bool
    loss : scalar (second output: the log-normalisers N x T x 1)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(scores, y, mask):
        N = scores.shape[0]
        # log softmax(s)[y] = s[y] - logsumexp(s): only the (N, T, 1) normaliser is kept,
        # never a full (N, T, V) log-probability tensor.
        lse = torch.logsumexp(scores, 2, keepdim=True)  # (N, T, 1)
        picked = (scores.gather(2, y.unsqueeze(2)) - lse).squeeze(2)  # (N, T)
        # where, not a product with the mask: a masked step contributes nothing even if its
        # scores are inf or NaN.
        loss = -torch.where(mask, picked, 0).sum() / N
        return loss, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, y, mask = inputs
        _, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(scores, y, mask, lse)

    @staticmethod
    def backward(ctx, grad_loss, _grad_lse):
        scores, y, mask, lse = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            N = scores.shape[0]
            live = mask.unsqueeze(2)  # (N, T, 1)
            # d/ds of -log softmax(s)[y] is softmax(s) - onehot(y), zeroed where masked.
            # docs/derivations.md#masked-temporal-softmax-loss
            weight = live.to(scores.dtype) * (grad_loss / N)  # (N, T, 1)
            if torch.is_grad_enabled():  # create_graph=True: build it out of place, lse with its graph
                shifted = torch.where(live, scores - torch.logsumexp(scores, 2, keepdim=True), -torch.inf)
                grad_scores = (shifted.exp() * weight).scatter_add(2, y.unsqueeze(2), -weight)
            else:
                # exp(-inf) = 0 at masked steps, whatever their scores hold.
                shifted = (scores - lse).masked_fill_(~live, -torch.inf)  # (N, T, V)
                # (weight multiplies out of place: under torch.func it may be batched where scores is not)
                grad_scores = (shifted.exp_() * weight).scatter_add_(2, y.unsqueeze(2), -weight)
        return grad_scores, None, None


def temporal_softmax_loss(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked softmax loss summed over time steps and averaged over the minibatch (float32 under autocast).

    Masked positions contribute neither loss nor gradient, whatever their scores and targets hold.

    Args:
        scores: (N, T, V) vocabulary scores.
        y: (N, T) int64 (or int32) targets, in [0, V) where mask is true.
        mask: (N, T) bool, true where the step counts.

    Returns:
        A scalar: -(1/N) sum over unmasked (n, t) of log softmax(scores[n, t])[y[n, t]].
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
    y = y.long().masked_fill(~mask, 0)  # masked targets are ignored; 0 keeps gather in range
    check_ids(op, "y", y, V, "targets (where mask is true)")
    (scores,) = autocast_cast(FP32, scores)
    return apply(TemporalSoftmaxLossFunction, scores, y, mask)[0]
