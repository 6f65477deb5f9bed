"""Scaled dot-product attention: out = softmax(Q K^T / sqrt(E), masked) V, per batch and head.

Derivation: docs/derivations.md#scaled-dot-product-attention
"""

from __future__ import annotations

import math

import torch

from ._checks import (
    LOWER,
    Function,
    apply,
    autocast_cast,
    check_same_dtype_device,
    check_tensor,
    in_place_ok,
    unwrapped,
)


def _weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Attention weights P (N, H, S, T): a softmax over keys of the scaled scores; masked keys get 0.

    A query that may attend to no key gets all-zero weights (so a zero output), as in torch;
    with no keys at all (T = 0) the weights are empty and the output is zero, as in torch.
    In eager mode the steps overwrite one (S, T) buffer; otherwise they stay out of place.
    """
    inplace = in_place_ok() and unwrapped(q, k, mask)
    # Scaled before the product, as torch does: q k^T itself can overflow float16 (E = 64 and
    # entries of 40 give 102400 > 65504) where the scaled scores cannot.
    scores = (q * scale) @ k.transpose(-2, -1)  # (N, H, S, T)
    if scores.shape[-1] == 0:  # no keys: nothing to normalise (amax over no entries is undefined)
        return scores
    if mask is not None:
        scores = scores.masked_fill_(~mask, -torch.inf) if inplace else scores.masked_fill(~mask, -torch.inf)
    top = scores.amax(-1, keepdim=True)  # (N, H, S, 1); -inf on a fully masked row
    if mask is not None:
        top = top.nan_to_num(neginf=0.0)  # any finite shift works: softmax is shift-invariant
    e = scores.sub_(top).exp_() if inplace else (scores - top).exp()
    total = e.sum(-1, keepdim=True)  # >= 1, or 0 on a fully masked row
    if mask is not None:
        total = total.clamp_min(torch.finfo(total.dtype).tiny)  # 0 / tiny = 0 there
    return e.div_(total) if inplace else e / total


class ScaledDotProductAttentionFunction(Function):
    """q : N x H x S x E; k : N x H x T x E; v : N x H x T x Ev; mask : broadcastable to N x H x S x T
    (bool, True where a query may attend to a key) -> N x H x S x Ev (and the weights N x H x S x T).

    The weights P are the one (S, T)-sized tensor kept for backward, returned as a second,
    non-differentiable output; the scores before the softmax are not kept.
    """

    @staticmethod
    def forward(q, k, v, mask, scale):
        weights = _weights(q, k, mask, scale)  # (N, H, S, T)
        return weights @ v, weights  # (N, H, S, Ev)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, scale = inputs
        out, weights = output
        ctx.mark_non_differentiable(weights)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, mask, out, weights)

    @staticmethod
    def backward(ctx, grad_out, _grad_weights):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None
        q, k, v, mask, out, weights = ctx.saved_tensors
        grad_q = grad_k = grad_v = None
        if torch.is_grad_enabled():  # double backward: the weights and output as functions of q, k, v
            weights = _weights(q, k, mask, ctx.scale)
            out = weights @ v
        if ctx.needs_input_grad[2]:
            grad_v = weights.transpose(-2, -1) @ grad_out  # dL/dV = P^T dL/dO, (N, H, T, Ev)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_w = grad_out @ v.transpose(-2, -1)  # dL/dP = dL/dO V^T, (N, H, S, T)
            # Softmax backward, row by row: dL/ds = P * (dL/dP - sum_t P dL/dP). The row sum
            # equals dL/dO . O (as O = P V), a product over Ev instead of T.
            row = torch.linalg.vecdot(grad_out, out, dim=-1).unsqueeze(-1)  # (N, H, S, 1)
            if in_place_ok() and unwrapped(grad_out, q, k, v, weights):
                grad_s = grad_w.sub_(row).mul_(weights).mul_(ctx.scale)  # in dL/dP's buffer
            else:
                grad_s = (grad_w - row) * weights * ctx.scale
            # masked keys have P = 0, so they get no gradient; scores = scale * q k^T
            if ctx.needs_input_grad[0]:
                grad_q = grad_s @ k  # (N, H, S, E)
            if ctx.needs_input_grad[1]:
                grad_k = grad_s.transpose(-2, -1) @ q  # (N, H, T, E)
        return grad_q, grad_k, grad_v, None, None


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(E)) v over the keys, per batch and head (low precision under autocast).

    Args:
        q: (N, H, S, E) queries.
        k: (N, H, T, E) keys.
        v: (N, H, T, Ev) values.
        mask: None, or bool broadcastable to (N, H, S, T), True where a query may attend to a
            key (the convention of F.scaled_dot_product_attention). A query that may attend to
            no key gets a zero output.

    Returns:
        (N, H, S, Ev).
    """
    op = "scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, ndim=4)
    q, k, v = autocast_cast(LOWER, q, k, v)
    check_same_dtype_device(op, q=q, k=k, v=v)
    N, H, S, E = q.shape
    if tuple(k.shape[:2]) != (N, H) or k.shape[3] != E:
        raise ValueError(f"{op}: k must be (N={N}, H={H}, T, E={E}) for q {tuple(q.shape)}, got {tuple(k.shape)}")
    T = k.shape[2]
    if tuple(v.shape[:3]) != (N, H, T):
        raise ValueError(f"{op}: v must be (N={N}, H={H}, T={T}, Ev) for k {tuple(k.shape)}, got {tuple(v.shape)}")
    if E == 0:
        raise ValueError(f"{op}: q and k have an empty feature dimension (E = 0)")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"{op}: mask must be a bool tensor (True = may attend), got {got}")
        if mask.device != q.device:
            raise ValueError(f"{op}: mask is on {mask.device} but q is on {q.device}")
        if mask.dim() > 4:
            raise ValueError(f"{op}: mask must have at most 4 dimensions, got shape {tuple(mask.shape)}")
        try:
            fits = torch.broadcast_shapes(mask.shape, (N, H, S, T)) == (N, H, S, T)
        except RuntimeError:
            fits = False
        if not fits:  # incompatible, or larger than (N, H, S, T) in some dimension
            raise ValueError(
                f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to (N, H, S, T) = {(N, H, S, T)}"
            )
    return apply(ScaledDotProductAttentionFunction, q, k, v, mask, 1.0 / math.sqrt(E))[0]
