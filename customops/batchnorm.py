"""Batch normalisation (cs231n's second assignment): normalise every channel over the batch and
the spatial positions, then scale and shift it, Y = (X - mean) / sqrt(var + eps) * weight + bias.

Training mode normalises with the batch's statistics and updates the running ones in place, once
per forward (never in backward): running_mean <- (1 - momentum) running_mean + momentum mean, and
the same for running_var with the *unbiased* batch variance, as torch does. Evaluation mode
normalises with the running statistics, so the layer is a fixed per-channel affine map.
Derivation (the step-by-step graph and the closed form): docs/derivations.md#batch-normalisation
"""

from __future__ import annotations

import torch

from ._checks import (
    Function,
    apply,
    check_same_dtype_device,
    check_shape,
    check_tensor,
    in_place_ok,
    tracing,
    unwrapped,
)
from ._reduce import centred_square_sum, dot_sum


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every dimension but the channels (1): the batch and the positions of one channel."""
    return (0, *range(2, x.dim()))


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(C,) -> (C, 1, ..., 1), broadcasting against x (N, C, ...)."""
    return t.view(t.shape[0], *([1] * (x.dim() - 2)))


def _affine(x: torch.Tensor, mean, rstd, weight, bias) -> torch.Tensor:
    """Y = (X - mean) * rstd * weight + bias, per channel, as torch computes it: one multiply-add per
    entry, X * scale + shift with scale = rstd * weight and shift = bias - mean * scale (x's memory format)."""
    scale = rstd if weight is None else rstd * weight  # (C,)
    shift = -mean * scale if bias is None else bias - mean * scale  # (C,)
    return torch.addcmul(_per_channel(shift, x), x, _per_channel(scale, x))


class BatchNormFunction(Function):
    """Training mode. x : N x C x ... ; weight, bias : C (or None) -> N x C x ... (and the batch
    mean, biased variance and 1/sqrt(var + eps), each C, not differentiable).
    """

    @staticmethod
    def forward(x, weight, bias, eps):
        dims = _dims(x)
        m = x.numel() // x.shape[1]  # entries per channel
        mean = x.sum(dims) / m  # (C,)
        var = centred_square_sum(x, _per_channel(mean, x), dims) / m  # (C,), biased, as in the normalisation
        rstd = (var + eps).rsqrt()
        return _affine(x, mean, rstd, weight, bias), mean, var, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, var, rstd = output
        ctx.mark_non_differentiable(mean, var, rstd)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.save_for_backward(x, weight, mean, rstd)

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var, _grad_rstd):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        dims = _dims(x)
        m = x.numel() // x.shape[1]  # entries per channel
        if not (in_place_ok() and unwrapped(grad_out, x, weight)):
            # Double backward (the statistics as functions of x), torch.func and torch.compile: out of place.
            if torch.is_grad_enabled():
                mean = x.mean(dims)
                var = (x - _per_channel(mean, x)).square().mean(dims)
                rstd = (var + ctx.eps).rsqrt()
            xhat = (x - _per_channel(mean, x)) * _per_channel(rstd, x)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = grad_out.sum(dims)
            if weight is not None and ctx.needs_input_grad[1]:
                grad_weight = (grad_out * xhat).sum(dims)
            if ctx.needs_input_grad[0]:
                g = grad_out if weight is None else grad_out * _per_channel(weight, x)  # dL/dxhat
                # dL/dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), means over each channel's entries
                mean_g = g.mean(dims, keepdim=True)
                mean_gx = (g * xhat).mean(dims, keepdim=True)
                grad_x = (g - mean_g - xhat * mean_gx) * _per_channel(rstd, x)
            return grad_x, grad_weight, grad_bias, None
        # Eager: the same closed form from two per-channel sums, written into one new buffer.
        sum_g = grad_out.sum(dims)  # (C,) = dL/dbias
        dot = dot_sum(grad_out, x, dims) - mean * sum_g  # (C,) sum of dL/dy * (x - mean) = dL/dweight / rstd
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sum_g
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = dot * rstd
        if ctx.needs_input_grad[0]:
            # dL/dx = k1 (g - sum_g/m - xhat dot rstd/m) with k1 = weight * rstd, i.e. per channel
            # k1 dL/dy + k2 x + k3 with k2 = -k1 rstd^2 dot/m and k3 = -k1 sum_g/m - k2 mean.
            k1 = rstd if weight is None else rstd * weight
            k2 = -k1 * rstd * rstd * dot / m
            k3 = -k1 * sum_g / m - k2 * mean
            grad_x = torch.addcmul(_per_channel(k3, x), grad_out, _per_channel(k1, x))
            grad_x.addcmul_(x, _per_channel(k2, x))
        return grad_x, grad_weight, grad_bias, None


class BatchNormEvalFunction(Function):
    """Evaluation mode. x : N x C x ... ; weight, bias : C (or None); running_mean : C -> N x C x ...
    (and 1/sqrt(running_var + eps), C, not differentiable). The statistics are constants here.
    """

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, eps):
        rstd = (running_var + eps).rsqrt()
        return _affine(x, running_mean, rstd, weight, bias), rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, _, _ = inputs
        _, rstd = output
        ctx.mark_non_differentiable(rstd)
        ctx.set_materialize_grads(False)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x if weight is not None and ctx.needs_input_grad[1] else None, weight, running_mean, rstd)

    @staticmethod
    def backward(ctx, grad_out, _grad_rstd):
        if grad_out is None:
            return None, None, None, None, None, None
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        dims = _dims(grad_out)
        if ctx.needs_input_grad[0]:
            # Y = X * rstd * weight + const: dL/dX = dL/dY * rstd * weight
            k1 = rstd if weight is None else rstd * weight
            grad_x = grad_out * _per_channel(k1, grad_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dims)
        if x is not None:
            # dL/dweight = sum of dL/dY * xhat, xhat = (X - running_mean) * rstd
            if in_place_ok() and unwrapped(grad_out, x):
                sum_g = grad_bias if grad_bias is not None else grad_out.sum(dims)
                grad_weight = (dot_sum(grad_out, x, dims) - mean * sum_g) * rstd
            else:
                grad_weight = (grad_out * (x - _per_channel(mean, x))).sum(dims) * rstd
        return grad_x, grad_weight, grad_bias, None, None, None


# ---- running statistics under torch.func ---------------------------------------------------


def _vmap_levels(t: torch.Tensor) -> set[int]:
    """The torch.func.vmap levels at which t is batched (empty for a plain tensor)."""
    functorch, levels = torch._C._functorch, set()
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            levels.add(functorch.maybe_get_level(t))
        t = functorch.get_unwrapped(t)
    return levels


def _plain(t: torch.Tensor) -> torch.Tensor:
    """t without torch.func's grad wrappers (their values are the same), so that it can go into a buffer."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return t


def _update(running_mean, running_var, mean, var, momentum: float, m: int) -> None:
    """running <- (1 - momentum) running + momentum batch, the variance unbiased (times m / (m - 1))."""
    running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1.0 - momentum).add_(var, alpha=momentum * m / (m - 1))


def _number(op: str, name: str, value, minimum: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= minimum:
        raise ValueError(f"{op}: {name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch normalisation over every dimension but the channels (dimension 1); F.batch_norm's arguments.

    Keeps x's dtype under autocast, like F.batch_norm; a float16/bfloat16 x with float32
    parameters and statistics is normalised in float32 and returned in x's dtype.

    Args:
        x: (N, C), (N, C, L) or (N, C, H, W) (any (N, C, ...)).
        running_mean, running_var: (C,) buffers, or both None (no running statistics: training
            mode only). Training mode updates them in place with `momentum`, running_var with
            the unbiased batch variance; evaluation mode normalises with them.
        weight, bias: (C,) or None (scale 1, shift 0).
        training: normalise with the batch statistics (True) or the running ones (False).
        momentum: weight of the batch statistics in the running update, in [0, 1].
        eps: added to the variance, >= 0.

    Returns:
        x's shape and memory format. Under torch.func.vmap the batch statistics work, but an
        update of unbatched running statistics is refused (see torch.func.replace_all_batch_norm_modules_).
    """
    op = "batch_norm"
    check_tensor(op, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{op}: x must be (N, C, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: pass both running_mean and running_var, or neither")
    if not isinstance(training, bool):
        raise TypeError(f"{op}: training must be a bool, got {type(training).__name__}")
    momentum = _number(op, "momentum", momentum, 0.0)
    if momentum > 1:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")
    eps = _number(op, "eps", eps, 0.0)
    c = x.shape[1]
    tensors = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is not None:
            check_tensor(op, name, t, ndim=1)
            check_shape(op, name, t, (c,), f" for x {tuple(x.shape)} with {c} channels")
    if not training and running_mean is None:
        raise ValueError(f"{op}: evaluation mode (training=False) needs running_mean and running_var")
    m = x.numel() // c if c else 0
    if training and m <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got x of shape {tuple(x.shape)}")
    # A half-precision x with float32 parameters (a network under autocast): normalise in float32.
    params = [t for t in tensors.values() if t is not None]
    in_dtype = x.dtype
    upcast = in_dtype in (torch.float16, torch.bfloat16) and params and all(t.dtype == torch.float32 for t in params)
    if upcast:
        x = x.float()
    check_same_dtype_device(op, x=x, **tensors)
    update = training and running_mean is not None
    if update and not tracing():
        batched = set().union(*(_vmap_levels(t) for t in (x, weight, bias) if t is not None))
        if batched - (_vmap_levels(running_mean) & _vmap_levels(running_var)):
            raise RuntimeError(
                f"{op}: cannot update unbatched running statistics from a batched x under torch.func.vmap; "
                "in training mode pass running_mean=running_var=None (for a module: track_running_stats=False, "
                "or torch.func.replace_all_batch_norm_modules_), or use evaluation mode"
            )
    if training:
        y, mean, var, _ = apply(BatchNormFunction, x, weight, bias, eps)
        if update:
            with torch.no_grad():
                if not tracing() and not _vmap_levels(x) and torch._C._functorch.is_functorch_wrapped_tensor(mean):
                    # Under torch.func.grad (or jvp): the buffers are captured, plain tensors, which the
                    # transform would refuse to mutate; update them with the plain values, outside it.
                    with torch._C._DisableFuncTorch():
                        _update(running_mean, running_var, _plain(mean), _plain(var), momentum, m)
                else:
                    _update(running_mean, running_var, mean, var, momentum, m)
    else:
        y, _ = apply(BatchNormEvalFunction, x, weight, bias, running_mean, running_var, eps)
    return y.to(in_dtype) if upcast else y
