"""Layer normalisation over the last dimension: Y = (X - mean) / sqrt(var + eps) * weight + bias.

Derivation: docs/derivations.md#layer-norm
"""
from __future__ import annotations

import torch

from ._checks import FP32, OpFunction, apply, autocast_cast, check_same_dtype_device, check_shape, check_tensor


def _moments(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and reciprocal standard deviation over the last dimension, each (..., 1)."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdim=True)  # biased, as in the normalisation itself
    return mean, (var + eps).rsqrt()


class LayerNormFunction(OpFunction):
    """x : ... x D; weight, bias : D (or None) -> ... x D (and the mean and 1/std, each ... x 1).

    Only the two (..., 1) statistics are kept beside the inputs; backward rebuilds the
    normalised x from them (one elementwise pass), as torch's own layer norm does.
    """

    @staticmethod
    def forward(x, weight, bias, eps):
        mean, rstd = _moments(x, eps)
        xhat = (x - mean) * rstd  # (..., D)
        if weight is not None:
            xhat = xhat * weight
        if bias is not None:
            xhat = xhat + bias
        return xhat, mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.save_for_backward(x, weight, mean, rstd)

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if torch.is_grad_enabled():  # double backward: statistics as functions of x
            mean, rstd = _moments(x, ctx.eps)
        xhat = (x - mean) * rstd  # (..., D)
        leading = tuple(range(x.dim() - 1))  # every dimension but the normalised one
        if ctx.needs_input_grad[0]:
            grad_xhat = grad_out if weight is None else grad_out * weight
            # dL/dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dL/dxhat: the two
            # means remove what the mean and the variance of x took out.
            grad_x = rstd * (
                grad_xhat
                - grad_xhat.mean(-1, keepdim=True)
                - xhat * (grad_xhat * xhat).mean(-1, keepdim=True)
            )
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (grad_out * xhat).sum(leading)  # (D,)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(leading)  # (D,)
        return grad_x, grad_weight, grad_bias, None


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Normalise over the last dimension, then scale and shift (float32 under autocast, like torch on GPUs).

    Args:
        x: (..., D), at least 1-D.
        weight, bias: (D,) or None.
        eps: added to the variance, > 0.

    Returns:
        (..., D).
    """
    op = "layer_norm"
    check_tensor(op, "x", x)
    if weight is not None:
        check_tensor(op, "weight", weight, ndim=1)
    if bias is not None:
        check_tensor(op, "bias", bias, ndim=1)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"layer_norm: x must be (..., D) with D >= 1, got shape {tuple(x.shape)}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"layer_norm: eps must be a positive number, got {eps!r}")
    x, weight, bias = autocast_cast(FP32, x, weight, bias)
    check_same_dtype_device(op, x=x, weight=weight, bias=bias)
    D = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_shape(op, name, t, (D,), f" for x {tuple(x.shape)}")
    return apply(LayerNormFunction, x, weight, bias, float(eps))[0]
