"""Inverted dropout: zero each entry with probability p and scale the survivors by 1/(1-p),
so the expectation is unchanged and evaluation needs no rescaling.

Derivation: docs/derivations.md#dropout
"""

from __future__ import annotations

import torch

from ._checks import Function, apply, check_tensor


class DropoutFunction(Function):
    """x : any shape; mask : same shape, entries 0 or 1/(1-p) -> x * mask."""

    @staticmethod
    def forward(x, mask):
        return x * mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, mask = inputs
        ctx.save_for_backward(mask)

    @staticmethod
    def backward(ctx, grad_out):
        (mask,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dL/dX = dL/dY * mask: the same entries dropped, the same 1/(1-p) scale.
            grad_x = grad_out * mask
        return grad_x, None


def dropout(
    x: torch.Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Inverted dropout (keeps x's dtype under autocast).

    Args:
        x: any shape, floating point.
        p: probability of zeroing an entry, in [0, 1].
        training: False (evaluation) returns x itself.
        generator: draws the mask from this torch.Generator instead of the global one.

    Returns:
        x * mask, mask entries 0 (probability p) or 1/(1-p). Under torch.func.vmap, pass
        randomness="different" (or "same") as for torch's own dropout.
    """
    op = "dropout"
    check_tensor(op, "x", x)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not isinstance(training, bool):
        raise TypeError(f"dropout: training must be a bool, got {type(training).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"dropout: generator must be a torch.Generator, got {type(generator).__name__}")
    if not training or p == 0:
        return x
    keep = 1.0 - p
    # Drawn in row-major order whatever x's memory layout, so a seed gives the same mask for equal shapes.
    mask = torch.empty_like(x, memory_format=torch.contiguous_format).bernoulli_(keep, generator=generator)
    if keep > 0:
        mask.div_(keep)
    return apply(DropoutFunction, x, mask)
