"""Layers applied independently at every time step of a (N, T, ...) sequence."""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_tensor(op: str, name: str, t, dims: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"{op}: {name} must have {dims} dims, got shape {tuple(t.shape)}")


class TemporalAffineFunction(torch.autograd.Function):
    """out[n, t] = x[n, t] w + b.

    x : N x T x D
    w : D x M
    b : M (optional)
    out : N x T x M
    """

    @staticmethod
    def forward(ctx, x, w, b=None):
        op = "temporal_affine"
        _check_tensor(op, "x", x, 3)
        _check_tensor(op, "w", w, 2)
        if b is not None:
            _check_tensor(op, "b", b)
        for name, t in (("x", x), ("w", w), ("b", b)):
            if t is None:
                continue
            if not t.is_floating_point():
                raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
            if t.dtype != x.dtype or t.device != x.device:
                raise TypeError(f"{op}: {name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}")
        N, T, D = x.shape
        if w.shape[0] != D:
            raise ValueError(f"{op}: w must be (D={D}, M) for x {tuple(x.shape)}, got {tuple(w.shape)}")
        M = w.shape[1]
        if b is not None and tuple(b.shape) != (M,):
            raise ValueError(f"{op}: b must have shape ({M},), got {tuple(b.shape)}")
        out = x.reshape(N * T, D) @ w  # (N*T, M)
        if b is not None:
            out = out + b
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return out.reshape(N, T, M)  # (N, T, M)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        N, T, D = x.shape
        M = w.shape[1]
        # The time axis is just more rows of an affine layer.  docs/derivations.md#temporal-affine
        grad_rows = grad_out.reshape(N * T, M)  # (N*T, M)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_rows @ w.t()).reshape(N, T, D)  # (N, T, D)
        if ctx.needs_input_grad[1]:
            grad_w = x.reshape(N * T, D).t() @ grad_rows  # (D, M)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        return grad_x, grad_w, grad_b


temporal_affine = TemporalAffineFunction.apply


def _logsumexp(scores: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(scores[..., k]) as (..., 1), shifted by the row maximum for stability."""
    # Softmax is shift-invariant, so the shift carries no gradient and may be detached.
    top = scores.detach().amax(dim=-1, keepdim=True)
    return top + (scores - top).exp().sum(dim=-1, keepdim=True).log()


class TemporalSoftmaxLossFunction(torch.autograd.Function):
    """loss = -(1/N) sum_{n,t: mask[n,t]} log softmax(scores[n, t])[y[n, t]].

    The homework's definition: summed over unmasked time steps, averaged over the
    minibatch. Masked positions contribute neither loss nor gradient, and their
    targets are ignored (they may be any value).

    scores : N x T x V
    y : N x T int64 targets in [0, V) where mask is true
    mask : N x T bool
    loss : scalar
    """

    @staticmethod
    def forward(ctx, scores, y, mask):
        op = "temporal_softmax_loss"
        _check_tensor(op, "scores", scores, 3)
        _check_tensor(op, "y", y)
        _check_tensor(op, "mask", mask)
        if not scores.is_floating_point():
            raise TypeError(f"{op}: scores must be floating point, got {scores.dtype}")
        if y.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{op}: y must hold int64 (or int32) class ids, got {y.dtype}")
        if mask.dtype != torch.bool:
            raise TypeError(f"{op}: mask must be a bool tensor, got {mask.dtype}")
        N, T, V = scores.shape
        for name, t in (("y", y), ("mask", mask)):
            if tuple(t.shape) != (N, T):
                raise ValueError(f"{op}: {name} must have shape (N, T) = {(N, T)}, got {tuple(t.shape)}")
            if t.device != scores.device:
                raise ValueError(f"{op}: {name} is on {t.device} but scores is on {scores.device}")
        if N == 0:
            raise ValueError(f"{op}: empty minibatch (N = 0)")
        y = y.long().masked_fill(~mask, 0)  # masked targets are ignored; 0 keeps gather in range
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= V):
            raise ValueError(f"{op}: targets must lie in [0, {V}) where mask is true, got {int(y.min())}..{int(y.max())}")
        # log softmax(s)[y] = s[y] - logsumexp(s): only the (N, T, 1) normaliser is kept,
        # never a full (N, T, V) log-probability tensor.
        lse = _logsumexp(scores)  # (N, T, 1)
        picked = scores.gather(2, y.unsqueeze(2)) - lse  # (N, T, 1)
        loss = -(picked.squeeze(2) * mask).sum() / N
        ctx.save_for_backward(scores, y, mask, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        scores, y, mask, lse = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[0]:
            N = scores.shape[0]
            if torch.is_grad_enabled():  # create_graph=True: lse must carry its graph
                lse = _logsumexp(scores)
            # d/ds of -log softmax(s)[y] is softmax(s) - onehot(y), zeroed where masked.
            # docs/derivations.md#masked-temporal-softmax-loss
            weight = mask.to(scores.dtype).unsqueeze(2) * (grad_loss / N)  # (N, T, 1)
            grad_scores = (scores - lse).exp() * weight  # softmax(s) * weight, (N, T, V)
            grad_scores = grad_scores.scatter_add(2, y.unsqueeze(2), -weight)
        return grad_scores, None, None


temporal_softmax_loss = TemporalSoftmaxLossFunction.apply


class TemporalAffine(nn.Module):
    """Owns w (in_features, out_features) and b; forward (N, T, in) -> (N, T, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(in_features, out_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_affine(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class TemporalSoftmaxLoss(nn.Module):
    """(scores (N, T, V), y (N, T), mask (N, T) bool) -> scalar masked loss."""

    def forward(self, scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return temporal_softmax_loss(scores, y, mask)
