"""Affine (fully connected) layer: Y = X W + b, one sample per row.

Derivation: docs/derivations.md#affine
"""

from __future__ import annotations

import math

import torch

from ._checks import LOWER, Function, apply, autocast_cast, check_same_dtype_device, check_tensor, describe


class AffineFunction(Function):
    """x : N x d1 x ... x dk (flattened to N x D_in); w : D_in x D_out; b : D_out (or None) -> N x D_out."""

    @staticmethod
    def forward(x, w, b):
        x2 = x.reshape(x.shape[0], w.shape[0])  # (N, D_in); a copy only when x is not contiguous
        if b is None:
            return x2 @ w
        return torch.addmm(b, x2, w)  # (N, D_out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # dL/dX = dL/dY W^T, reshaped back to x's shape
            grad_x = (grad_out @ w.t()).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            # dL/dW = X^T dL/dY  (the sum over samples n of the element-wise hint)
            grad_w = x.reshape(x.shape[0], w.shape[0]).t() @ grad_out  # (D_in, D_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # dL/db = sum over samples of dL/dY
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b


def affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Affine layer Y = X W + b (a matrix product under autocast: runs in the low precision).

    Args:
        x: (N, D_in), or (N, d1, ..., dk) flattened to (N, D_in = d1*...*dk).
        w: (D_in, D_out); rows of x are samples, so w is the transpose of nn.Linear's weight.
        b: (D_out,) or None.

    Returns:
        (N, D_out).
    """
    op = "affine"
    check_tensor(op, "x", x)
    check_tensor(op, "w", w, ndim=2)
    if b is not None:
        check_tensor(op, "b", b, ndim=1)
    if x.dim() < 2:
        raise ValueError(f"affine: x must be (N, D_in) or (N, d1, ..., dk), got shape {tuple(x.shape)}")
    x, w, b = autocast_cast(LOWER, x, w, b)
    check_same_dtype_device(op, x=x, w=w, b=b)
    d_in = math.prod(x.shape[1:])
    if d_in != w.shape[0]:
        raise ValueError(
            f"affine: x {describe(x)} flattens to {d_in} features per sample, "
            f"but w {tuple(w.shape)} expects {w.shape[0]}"
        )
    if b is not None and b.shape[0] != w.shape[1]:
        raise ValueError(f"affine: b has {b.shape[0]} entries but w {tuple(w.shape)} has {w.shape[1]} outputs")
    return apply(AffineFunction, x, w, b)
