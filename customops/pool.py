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

from ._checks import Function, apply, check_tensor, describe, pair


def _channels_last(x: torch.Tensor) -> bool:
    if not torch.compiler.is_compiling() and torch._C._functorch.is_functorch_wrapped_tensor(x):
        return False  # torch.func's tensors only report the default memory format
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class MaxPool2dFunction(Function):
    """x : N x C x H x W -> N x C x H' x W', H' = (H - kh) // sh + 1 (rows/columns left over are dropped).

    The second output (N, C, H', W') is each window's winner (see forward), not differentiable.
    """

    @staticmethod
    def forward(x, kernel, stride):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = kernel, stride
        h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
        s_n, s_c, s_h, s_w = x.stride()
        windows = x.as_strided(
            (n, c, h_out, w_out, kh, kw), (s_n, s_c, s_h * sh, s_w * sw, s_h, s_w)
        )  # (N, C, H', W', kh, kw), a view
        # Visit the taps (i, j) in row-major order keeping a running maximum. A tap wins its window
        # when it is strictly greater than every earlier tap, so the last tap to win is the first
        # maximum. Record the winner as its offset i*W + j in the input plane: offsets grow with
        # the visiting order, so the winner is the largest offset whose comparison fired.
        # The bookkeeping is float (at least float32, so offsets stay exact): float kernels are
        # several times faster on CPU than boolean or integer ones. (tap - out).clamp_min(0).sign()
        # is 1 exactly where tap > out, and NaN where either is NaN, which fmax ignores.
        out = windows[..., 0, 0]
        low_precision = x.dtype in (torch.float16, torch.bfloat16)
        winner = None  # (N, C, H', W') offset of each window's first maximum
        for p in range(1, kh * kw):
            i, j = divmod(p, kw)
            tap = windows[..., i, j]
            fired = (tap - out).clamp_min_(0).sign_()
            fired = (fired.float() if low_precision else fired).mul_(i * w + j)
            winner = fired if winner is None else torch.fmax(winner, fired)
            out = torch.maximum(out, tap)
        if winner is None:  # 1x1 windows
            winner = x.new_zeros(out.shape, dtype=torch.float32 if low_precision else x.dtype)
            out = out.clone()
        return out, winner

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel, stride = inputs
        _, winner = output
        ctx.mark_non_differentiable(winner)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.input_shape, ctx.stride = x.shape, stride
        ctx.channels_last = _channels_last(x)
        ctx.save_for_backward(winner)

    @staticmethod
    def backward(ctx, grad_out, _grad_winner):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None
        (winner,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            n, c, h, w = ctx.input_shape
            sh, sw = ctx.stride
            h_out, w_out = grad_out.shape[2:]
            dev = grad_out.device
            # Flat index in the (H*W) plane of each window's winner: window origin + offset.
            origin = (torch.arange(h_out, device=dev) * (sh * w)).view(h_out, 1) + torch.arange(w_out, device=dev) * sw
            index = winner.long() + origin  # (N, C, H', W')
            # dL/dX = dL/dY routed to each window's winner (summed where overlapping windows share one).
            # Scatter in the input's own memory layout, so no operand needs reordering.
            if ctx.channels_last:
                grad_nhwc = grad_out.new_zeros(n, h * w, c).scatter_add_(
                    1,
                    index.permute(0, 2, 3, 1).reshape(n, h_out * w_out, c),  # (N, H'*W', C)
                    grad_out.permute(0, 2, 3, 1).reshape(n, h_out * w_out, c),
                )  # (N, H*W, C)
                grad_x = grad_nhwc.view(n, h, w, c).permute(0, 3, 1, 2)
            else:
                grad_x = (
                    grad_out.new_zeros(n * c, h * w)
                    .scatter_add_(1, index.reshape(n * c, h_out * w_out), grad_out.reshape(n * c, h_out * w_out))
                    .view(n, c, h, w)
                )
        return grad_x, None, None


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Max over each kernel_size window; keeps x's dtype under autocast, like F.max_pool2d.

    Args:
        x: (N, C, H, W).
        kernel_size: an int or a (height, width) pair.
        stride: likewise; defaults to kernel_size.

    Returns:
        (N, C, H', W') with H' = (H - kh) // sh + 1 (rows and columns left over are dropped).
    """
    op = "max_pool2d"
    check_tensor(op, "x", x, ndim=4)
    kernel = pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else pair(op, "stride", stride)
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"max_pool2d: kernel_size {kernel} and stride {stride} must be positive")
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ValueError(f"max_pool2d: kernel {kernel} is larger than the input x {describe(x)}")
    return apply(MaxPool2dFunction, x, kernel, stride)[0]
