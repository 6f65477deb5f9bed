"""Rectified linear unit, element-wise: Y = max(X, 0).

Derivation: docs/derivations.md#relu
"""

from __future__ import annotations

import torch

from ._checks import Function, apply, check_tensor, in_place_ok, unwrapped


class ReLUFunction(Function):
    """x : any shape -> same shape."""

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # The output alone decides the gradient (Y > 0 exactly where X > 0), so keep it, not X.
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dL/dX = dL/dY * 1[X > 0]; the subgradient at X = 0 is taken as 0, like torch.relu.
            # Written as "0 where Y <= 0, else dL/dY", which is torch's rule at NaN too: Y = NaN
            # there (max(NaN, 0) is NaN), NaN <= 0 is false, so the gradient passes through.
            # Y >= 0 or NaN, so "not Y <= 0" is "Y != 0". Eager, the mask is written as floats into the
            # buffer that becomes dL/dX and multiplied in place (CPU's select and bool-times-float
            # kernels take several times longer than a float compare and multiply).
            if in_place_ok() and unwrapped(out, grad_out):
                grad_x = torch.ne(out, 0, out=torch.empty_like(grad_out)).mul_(grad_out)
            else:
                grad_x = torch.where(out <= 0, 0.0, grad_out)
        return grad_x


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) element-wise; x of any shape. Under autocast it keeps x's dtype, like torch.relu.

    As torch.relu, a NaN entry stays NaN and passes its gradient through; the gradient at 0 is 0.
    """
    check_tensor("relu", "x", x)
    return apply(ReLUFunction, x)
