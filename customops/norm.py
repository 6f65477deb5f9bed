"""Layer normalisation over the last dimension: Y = (X - mean) / sqrt(var + eps) * weight + bias,
and group normalisation over blocks of channels and positions.

Derivations: docs/derivations.md#layer-norm, docs/derivations.md#group-normalisation
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
from ._reduce import centred_square_sum, dot_sum

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


# ---- group normalisation -------------------------------------------------------------------


class GroupNormFunction(Function):
    """x : N x C x ... ; weight, bias : C (or None) -> N x C x ... (and the mean and 1/std of each
    (sample, group), N x G, not differentiable).

    Each sample's channels are split into G groups of C/G; every group is normalised over its
    channels and positions together (layer norm of that block), then each channel is scaled and
    shifted. G = 1 is layer norm over (C, ...), G = C instance norm.
    Derivation: docs/derivations.md#group-normalisation
    """

    @staticmethod
    def forward(x, num_groups, weight, bias, eps):
        n, c = x.shape[:2]
        G, cg = num_groups, c // num_groups
        group_dims = tuple(range(2, x.dim() + 1))  # a group's channels and positions, in the (N, G, C/G, ...) view
        m = x.numel() // (n * G)  # entries per (sample, group)
        shape = (n, c) + (1,) * (x.dim() - 2)  # broadcasts against x
        xg = x.view(n, G, cg, *x.shape[2:])  # (N, G, C/G, ...), a view
        mean = xg.sum(group_dims) / m  # (N, G)
        var = centred_square_sum(xg, mean.view(n, G, *([1] * (x.dim() - 1))), group_dims) / m  # (N, G), biased
        rstd = (var + eps).rsqrt()
        # Y = X * scale + shift per (sample, channel), scale = rstd * weight, shift = bias - mean * scale: one
        # multiply-add per entry, as torch computes it
        scale = rstd.unsqueeze(2).expand(n, G, cg)  # (N, G, C/G)
        if weight is not None:
            scale = scale * weight.view(G, cg)
        shift = -mean.unsqueeze(2) * scale
        if bias is not None:
            shift = shift + bias.view(G, cg)
        shape = (n, c) + (1,) * (x.dim() - 2)  # broadcasts against x
        return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape)), mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, num_groups, weight, bias, eps = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.set_materialize_grads(False)
        ctx.num_groups, ctx.eps, ctx.has_bias = num_groups, eps, bias is not None
        ctx.save_for_backward(x, weight, mean, rstd)

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        if grad_out is None:
            return None, None, None, None, None
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        G = ctx.num_groups
        n, c = x.shape[:2]
        cg = c // G
        spatial = tuple(range(2, x.dim()))
        m = x.numel() // (n * G)  # entries per (sample, group)
        shape = (n, c) + (1,) * (x.dim() - 2)

        def per_channel(t):  # (N, G) -> (N, C, 1, ...), each group's value on its channels
            return t.unsqueeze(2).expand(n, G, cg).reshape(shape)

        if not (in_place_ok() and unwrapped(grad_out, x, weight)):
            # Double backward (the statistics as functions of x), torch.func and torch.compile: out of place.
            xg_dims = tuple(range(2, x.dim() + 1))
            if torch.is_grad_enabled():
                xg = x.view(n, G, cg, *x.shape[2:])
                mean = xg.mean(xg_dims)
                var = (xg - mean.view(n, G, *([1] * (x.dim() - 1)))).square().mean(xg_dims)
                rstd = (var + ctx.eps).rsqrt()
            xhat = (x - per_channel(mean)) * per_channel(rstd)
            if ctx.has_bias and ctx.needs_input_grad[3]:
                grad_bias = grad_out.sum((0, *spatial))
            if weight is not None and ctx.needs_input_grad[2]:
                grad_weight = (grad_out * xhat).sum((0, *spatial))
            if ctx.needs_input_grad[0]:
                g = grad_out if weight is None else grad_out * weight.view(c, *([1] * len(spatial)))  # dL/dxhat
                # the layer-norm formula within each (sample, group): rstd (g - mean(g) - xhat mean(g xhat))
                gg, xhg = g.view(n, G, cg, *x.shape[2:]), xhat.view(n, G, cg, *x.shape[2:])
                mean_g = gg.mean(xg_dims, keepdim=True)
                mean_gx = (gg * xhg).mean(xg_dims, keepdim=True)
                grad_x = ((gg - mean_g - xhg * mean_gx) * rstd.view(n, G, *([1] * (x.dim() - 1)))).view(x.shape)
            return grad_x, None, grad_weight, grad_bias, None
        # Eager: two per-(sample, channel) sums, then the closed form in one buffer of x's size.
        s1 = grad_out.sum(spatial) if spatial else grad_out  # (N, C): sum of dL/dy over each channel's positions
        s2 = dot_sum(grad_out, x, spatial) if spatial else grad_out * x  # (N, C): sum of dL/dy * x
        w = None if weight is None else weight.view(1, c)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = s1.sum(0)
        mean_c, rstd_c = (t.unsqueeze(2).expand(n, G, cg).reshape(n, c) for t in (mean, rstd))  # (N, C)
        if weight is not None and ctx.needs_input_grad[2]:
            # dL/dweight[c] = sum_n rstd (s2 - mean s1): dL/dy * xhat summed over samples and positions
            grad_weight = ((s2 - mean_c * s1) * rstd_c).sum(0)
        if ctx.needs_input_grad[0]:
            # per (sample, group), with g = dL/dy * weight: a = sum g, d = sum g (x - mean) (over the group);
            # dL/dx = rstd g - rstd a/m - (x - mean) rstd^3 d/m = k1 dL/dy + k2 x + k3
            a = (s1 if w is None else s1 * w).view(n, G, cg).sum(2)  # (N, G)
            d = (s2 if w is None else s2 * w).view(n, G, cg).sum(2) - mean * a  # (N, G)
            k1 = rstd_c if w is None else rstd_c * w  # (N, C)
            k2 = -rstd * rstd * rstd * d / m  # (N, G)
            k3 = -rstd * a / m - k2 * mean  # (N, G)
            grad_x = torch.addcmul(per_channel(k3), grad_out, k1.view(shape))
            grad_x.addcmul_(x, per_channel(k2))
        return grad_x, None, grad_weight, grad_bias, None


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Group normalisation (cs231n's spatial group norm), F.group_norm's arguments.

    Keeps x's dtype under autocast, like F.group_norm; a float16/bfloat16 x with float32
    weight and bias is normalised in float32 and returned in x's dtype.

    Args:
        x: (N, C, ...), e.g. (N, C, H, W).
        num_groups: G, dividing C; each sample's channels c*C/G .. (c+1)*C/G - 1 form a group,
            normalised over its channels and positions together.
        weight, bias: (C,) or None.
        eps: added to the variance, >= 0.

    Returns:
        x's shape and memory format.
    """
    op = "group_norm"
    check_tensor(op, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{op}: x must be (N, C, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    if not isinstance(num_groups, int) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"{op}: num_groups must be a positive int, got {num_groups!r}")
    c = x.shape[1]
    if c % num_groups:
        raise ValueError(f"{op}: num_groups={num_groups} must divide the {c} channels of x {tuple(x.shape)}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a number >= 0, got {eps!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(op, name, t, ndim=1)
            check_shape(op, name, t, (c,), f" for x {tuple(x.shape)} with {c} channels")
    if x.numel() == 0:
        raise ValueError(f"{op}: x {tuple(x.shape)} is empty")
    in_dtype = x.dtype
    params = [t for t in (weight, bias) if t is not None]
    upcast = in_dtype in (torch.float16, torch.bfloat16) and params and all(t.dtype == torch.float32 for t in params)
    if upcast:
        x = x.float()
    check_same_dtype_device(op, x=x, weight=weight, bias=bias)
    y = apply(GroupNormFunction, x, num_groups, weight, bias, float(eps))[0]
    return y.to(in_dtype) if upcast else y
