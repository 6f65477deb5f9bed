"""2-D max pooling over (kernel_h x kernel_w) windows moved by (stride_h, stride_w).

Ties: when several entries of a window share the maximum, the whole gradient goes to the
first of them in row-major order (top row first, then left to right), as in
torch.nn.functional.max_pool2d; any one choice is a valid subgradient. A window holding
NaN outputs NaN; its gradient goes to the largest entry before the first NaN (torch's own
layer sends it to the NaN).
Derivation: docs/derivations.md#max-pooling
"""
from __future__ import annotations

import torch

from ._checks import check_tensor, describe, pair


class MaxPool2dFunction(torch.autograd.Function):
    """x : N x C x H x W -> N x C x H' x W', H' = (H - kh) // sh + 1 (rows/columns left over are dropped)."""

    @staticmethod
    def forward(ctx, x, kernel, stride):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = kernel, stride
        h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
        s_n, s_c, s_h, s_w = x.stride()
        windows = x.as_strided(
            (n, c, h_out, w_out, kh, kw), (s_n, s_c, s_h * sh, s_w * sw, s_h, s_w)
        )  # (N, C, H', W', kh, kw), a view
        # Visit the window's taps in row-major order keeping a running maximum. Tap p wins a
        # window when it is strictly greater than every earlier tap, so the last tap to win is
        # the first maximum, and that is the largest p whose comparison fired.
        out = windows[..., 0, 0]
        winner = None  # (N, C, H', W') index of the winning tap, uint8 (kh*kw <= 255 is checked)
        for p in range(1, kh * kw):
            tap = windows[..., p // kw, p % kw]
            fired = (tap > out).to(torch.uint8).mul_(p)
            winner = fired if winner is None else torch.maximum(winner, fired)
            out = torch.maximum(out, tap)
        if winner is None:  # 1x1 windows
            winner = torch.zeros(out.shape, dtype=torch.uint8, device=x.device)
            out = out.clone()
        ctx.input_shape, ctx.kernel, ctx.stride = x.shape, kernel, stride
        ctx.save_for_backward(winner)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (winner,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            n, c, h, w = ctx.input_shape
            (kh, kw), (sh, sw) = ctx.kernel, ctx.stride
            h_out, w_out = grad_out.shape[2:]
            dev = grad_out.device
            # Flat index (in one H*W plane) of each window's winner: window origin + tap offset.
            tap_offset = ((torch.arange(kh, device=dev) * w).view(kh, 1) + torch.arange(kw, device=dev)).view(-1)
            origin = (torch.arange(h_out, device=dev) * (sh * w)).view(h_out, 1) + torch.arange(w_out, device=dev) * sw
            index = tap_offset[winner.long()] + origin  # (N, C, H', W')
            # dL/dX = dL/dY routed to each window's winner (summed where overlapping windows share one)
            grad_x = grad_out.new_zeros(n * c, h * w).scatter_add_(
                1, index.reshape(n * c, -1), grad_out.reshape(n * c, -1)
            )
            grad_x = grad_x.view(n, c, h, w)
        return grad_x, None, None


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Max over each kernel_size window of x (N, C, H, W); stride defaults to kernel_size."""
    op = "max_pool2d"
    check_tensor(op, "x", x, ndim=4)
    kernel = pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else pair(op, "stride", stride)
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"max_pool2d: kernel_size {kernel} and stride {stride} must be positive")
    if kernel[0] * kernel[1] > 255:
        raise ValueError(f"max_pool2d: kernel {kernel} has more than 255 entries")
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ValueError(f"max_pool2d: kernel {kernel} is larger than the input x {describe(x)}")
    return MaxPool2dFunction.apply(x, kernel, stride)
