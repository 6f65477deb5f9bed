"""Rectified linear unit, element-wise: Y = max(X, 0).

Derivation: docs/derivations.md#relu
"""

from __future__ import annotations

import torch

from ._checks import OpFunction, apply, check_tensor, in_place_ok, unwrapped


class ReLUFunction(OpFunction):
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
            # Y >= 0, so sign(Y) is exactly that indicator (1 where Y > 0, else 0), and a
            # float multiply is several times faster on CPU than building a boolean mask.
            mask = out.sign()
            grad_x = mask.mul_(grad_out) if in_place_ok() and unwrapped(grad_out, out) else mask * grad_out
        return grad_x


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) element-wise; x of any shape. Under autocast it keeps x's dtype, like torch.relu."""
    check_tensor("relu", "x", x)
    return apply(ReLUFunction, x)
