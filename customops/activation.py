"""Clamping activations, element-wise: hardtanh(x) = min(max(x, min_val), max_val), relu6 = hardtanh(x, 0, 6).

The gradient is 1 strictly inside (min_val, max_val) and 0 elsewhere, the two kinks included,
as in torch.nn.functional.hardtanh. A NaN input gives NaN and no gradient (torch's vectorised
kernel does the same; its scalar loop, used for tensors of fewer than 16 entries, passes it).
Derivation: docs/derivations.md#hardtanh-and-relu6
"""

from __future__ import annotations

import math

import torch

from ._checks import Function, apply, check_tensor, in_place_ok, tracing, unwrapped
from ._reduce import chunk_entries


def _masked_grad(grad_out: torch.Tensor, out: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    """grad_out * 1[min_val < out < max_val] (0 for a NaN too); out is already clamped.

    Exact comparisons, not arithmetic on out (an entry a rounding error away from a kink is not
    at it). Eager: the two comparisons written as floats (boolean masks and masked_fill are several
    times slower on CPU), into the result's buffer and one cache-sized temporary, a chunk at a time.
    """
    if not (in_place_ok() and unwrapped(grad_out, out)) or out.shape != grad_out.shape:
        return grad_out * ((out > min_val) & (out < max_val)).to(grad_out.dtype)
    grad = torch.empty_like(out)
    flat_grad, flat_out, flat_up = _flat(grad), _flat(out), _flat(grad_out)
    if flat_out is None or flat_up is None or grad.stride() != out.stride() or out.stride() != grad_out.stride():
        torch.gt(out, min_val, out=grad)
        return grad.mul_(torch.lt(out, max_val)).mul_(grad_out)
    step = chunk_entries()  # its temporary stays in cache
    tmp = torch.empty(min(step, flat_out.numel()), dtype=out.dtype, device=out.device)
    for k in range(0, flat_out.numel(), step):
        o, g = flat_out[k : k + step], flat_grad[k : k + step]
        t = tmp[: o.numel()]
        torch.gt(o, min_val, out=g)  # 1.0 above the lower kink
        torch.lt(o, max_val, out=t)  # 1.0 below the upper one
        g.mul_(t).mul_(flat_up[k : k + step])
    return grad


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """t's memory as one dimension, when it is dense (any memory format), else None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)  # a view
    return None


class HardtanhFunction(Function):
    """x : any shape -> same shape, clamped into [min_val, max_val]."""

    @staticmethod
    def forward(x, min_val, max_val):
        return x.clamp(min_val, max_val)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, min_val, max_val = inputs
        ctx.min_val, ctx.max_val = min_val, max_val
        # The clamped output alone decides the gradient (inside the bounds exactly where x is), so keep it.
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dL/dX = dL/dY * 1[min_val < X < max_val]
            grad_x = _masked_grad(grad_out, out, ctx.min_val, ctx.max_val)
        return grad_x, None, None


class HardtanhInplaceFunction(Function):
    """The same, overwriting x (as torch's hardtanh_): x : any shape -> x itself."""

    @staticmethod
    def forward(x, min_val, max_val):
        return x.clamp_(min_val, max_val)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, min_val, max_val = inputs
        ctx.mark_dirty(x)
        ctx.min_val, ctx.max_val = min_val, max_val
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _masked_grad(grad_out, out, ctx.min_val, ctx.max_val)  # as HardtanhFunction
        return grad_x, None, None


def _number(op: str, name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    return float(value)


def hardtanh(x: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """min(max(x, min_val), max_val) element-wise; keeps x's dtype under autocast, like F.hardtanh.

    Args:
        x: any shape, floating point.
        min_val, max_val: the bounds, min_val < max_val.
        inplace: overwrite x and return it (eager mode; under torch.compile and torch.func the
            result is computed out of place and x is left as it was: use the returned tensor).

    Returns:
        The clamped tensor, x's shape; the gradient is 1 strictly inside the bounds, else 0.
    """
    op = "hardtanh"
    check_tensor(op, "x", x)
    min_val, max_val = _number(op, "min_val", min_val), _number(op, "max_val", max_val)
    if not min_val < max_val:
        raise ValueError(f"{op}: min_val must be less than max_val, got {min_val} and {max_val}")
    if not isinstance(inplace, bool):
        raise TypeError(f"{op}: inplace must be a bool, got {type(inplace).__name__}")
    if inplace and not tracing() and unwrapped(x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x.clamp_(min_val, max_val)  # nothing to differentiate: no graph to record
        return apply(HardtanhInplaceFunction, x, min_val, max_val)
    return apply(HardtanhFunction, x, min_val, max_val)


def relu6(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """min(max(x, 0), 6) element-wise (hardtanh(x, 0, 6)), like F.relu6; see hardtanh for inplace."""
    if not isinstance(x, torch.Tensor):  # name this op, not hardtanh
        raise TypeError(f"relu6: x must be a torch.Tensor, got {type(x).__name__}")
    check_tensor("relu6", "x", x)
    if not isinstance(inplace, bool):
        raise TypeError(f"relu6: inplace must be a bool, got {type(inplace).__name__}")
    return hardtanh(x, 0.0, 6.0, inplace)
