"""Layer normalisation over the last dimension: Y = (X - mean) / sqrt(var + eps) * weight + bias.

Derivation: docs/derivations.md#layer-norm
"""

from __future__ import annotations

import torch

from ._checks import (
    FP32,
    Function,
    apply,
    autocast_cast,
    check_same_dtype_device,
    check_shape,
    check_tensor,
    in_place_ok,
    unwrapped,
)

# float16 / bfloat16 rows are normalised in float32, as torch's layer norm does: a row's sum of
# squared deviations overflows float16 (above 65504) long before its values do.
_LOW = (torch.float16, torch.bfloat16)


def _moments(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x - mean, the mean and the reciprocal standard deviation over the last dimension (each (..., 1)).

    x is float32 or float64 here (float16 / bfloat16 inputs are converted first)."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean  # (..., D)
    # biased variance, as in the normalisation itself: |x - mean|^2 / D, one reduction pass
    var = torch.linalg.vector_norm(centred, 2, -1, keepdim=True).square() / x.shape[-1]
    return centred, mean, (var + eps).rsqrt()


def _sum_rows(t: torch.Tensor, leading: tuple[int, ...]) -> torch.Tensor:
    """t (..., D) summed over its leading dimensions to (D,); a 1-D t is that sum already
    (t.sum(()) would sum over every dimension)."""
    return t.sum(leading) if leading else t


class LayerNormFunction(Function):
    """x : ... x D; weight, bias : D (or None) -> ... x D (and the mean and 1/std, each ... x 1).

    Only the two (..., 1) statistics are kept beside the inputs; backward rebuilds the
    normalised x from them (one elementwise pass), as torch's own layer norm does. For float16
    and bfloat16 inputs the statistics and every step are float32; the results are rounded once,
    at the end, to the inputs' dtype.
    """

    @staticmethod
    def forward(x, weight, bias, eps):
        low = x.dtype in _LOW
        centred, mean, rstd = _moments(x.float() if low else x, eps)
        if in_place_ok() and unwrapped(x, weight, bias):  # one (..., D) buffer for the whole forward
            y = centred.mul_(rstd)
            if weight is not None:
                y.mul_(weight)
            y = y if bias is None else y.add_(bias)
            return (y.to(x.dtype) if low else y), mean, rstd
        y = centred * rstd  # xhat
        if weight is not None:
            y = y * weight
        y = y if bias is None else y + bias
        return (y.to(x.dtype) if low else y), mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.save_for_backward(x, weight, mean, rstd)

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        D = x.shape[-1]
        leading = tuple(range(x.dim() - 1))  # every dimension but the normalised one
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = _sum_rows(grad_out, leading)  # (D,)
        low = x.dtype in _LOW
        if low or not (in_place_ok() and unwrapped(grad_out, x, weight, mean, rstd)):
            # Out of place: for double backward (statistics as functions of x), torch.func, and
            # float16 / bfloat16, computed in float32 like the forward (each gradient is rounded
            # to its input's dtype at the end).
            dtype = x.dtype
            if low:
                x, grad_out = x.float(), grad_out.float()
                weight = None if weight is None else weight.float()
            if torch.is_grad_enabled():
                centred, mean, rstd = _moments(x, ctx.eps)
            xhat = (x - mean) * rstd  # (..., D)
            if weight is not None and ctx.needs_input_grad[1]:
                grad_weight = _sum_rows(grad_out * xhat, leading).to(dtype)  # (D,)
            if ctx.needs_input_grad[0]:
                g = grad_out if weight is None else grad_out * weight  # dL/dxhat
                # dL/dx = rstd * (g - mean(g) - xhat * mean(g * xhat)): the two means remove
                # what the mean and the variance of x took out.
                mean_g = g.mean(-1, keepdim=True)  # (..., 1)
                mean_gx = torch.linalg.vecdot(g, xhat, dim=-1).unsqueeze(-1) / D  # (..., 1)
                grad_x = ((g - mean_g - xhat * mean_gx) * rstd).to(dtype)
            return grad_x, grad_weight, grad_bias, None
        # The same formulas in two (..., D) buffers (fresh buffers are what costs on CPU).
        xhat = (x - mean).mul_(rstd)  # buffer 1, (..., D)
        gx_hat = grad_out * xhat  # buffer 2: dL/dy * xhat, (..., D)
        if weight is not None and ctx.needs_input_grad[1]:
            # (a 1-D x has no rows to sum: copy, as gx_hat's buffer is reused below)
            grad_weight = gx_hat.sum(leading) if leading else gx_hat.clone()  # (D,)
        if ctx.needs_input_grad[0]:
            # g = dL/dxhat = dL/dy * weight; dL/dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
            rows = gx_hat.reshape(-1, D)  # (M, D) over every row
            # mean(g * xhat) with g = dL/dy * weight: a matrix-vector product, no new buffer
            mean_gx = (rows.sum(1) if weight is None else rows @ weight).view(mean.shape) / D  # (..., 1)
            g = torch.mul(grad_out, 1 if weight is None else weight, out=gx_hat)  # dL/dxhat, in buffer 2
            grad_x = g.sub_(g.mean(-1, keepdim=True)).addcmul_(xhat, mean_gx, value=-1).mul_(rstd)
        return grad_x, grad_weight, grad_bias, None


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Normalise over the last dimension, then scale and shift (float32 under autocast, like torch on GPUs).

    float16 and bfloat16 inputs are normalised in float32 (statistics, output and gradients, as
    torch does) and the results rounded to the inputs' dtype.

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
