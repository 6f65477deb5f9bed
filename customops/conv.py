"""2-D convolution (cross-correlation, as in CNNs): Y[n,f] = sum_c X[n,c] *filt W[f,c] + b[f].

Built on im2col in channels-last order: every receptive field becomes one row of a
(N*H'*W') x (HH*WW*C) matrix, so the layer is a single matrix product with the filters
laid out as (HH*WW*C) x F. The output is that product's memory seen as (N, F, H', W'),
i.e. in channels-last memory format (call `.contiguous()` where NCHW memory is needed).
Derivation: docs/derivations.md#convolution
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    LOWER,
    Function,
    apply,
    autocast_cast,
    check_same_dtype_device,
    check_tensor,
    describe,
    pair,
)


def _im2col(x: torch.Tensor, kh: int, kw: int, stride, padding) -> tuple[torch.Tensor, int, int]:
    """x (N, C, H, W) -> rows (N*H'*W', HH*WW*C), one receptive field per row, and H', W'."""
    n, c = x.shape[:2]
    xh = x.permute(0, 2, 3, 1)  # (N, H, W, C), a view
    if padding[0] or padding[1]:
        xh = F.pad(xh, (0, 0, padding[1], padding[1], padding[0], padding[0]))  # (N, H+2ph, W+2pw, C)
    h_out = (xh.shape[1] - kh) // stride[0] + 1
    w_out = (xh.shape[2] - kw) // stride[1] + 1
    s_n, s_h, s_w, s_c = xh.stride()
    if s_c == 1 or c == 1:
        # Channels are contiguous (channels-last or single-channel input): copy receptive fields row by row.
        windows = xh.as_strided(
            (n, h_out, w_out, kh, kw, c), (s_n, s_h * stride[0], s_w * stride[1], s_h, s_w, s_c)
        )  # (N, H', W', HH, WW, C), a view
        return windows.reshape(n * h_out * w_out, kh * kw * c), h_out, w_out
    # NCHW input: gather along image rows (contiguous) instead, and hand back the transpose;
    # the matrix products take either memory order at the same cost.
    windows = xh.as_strided(
        (kh, kw, c, n, h_out, w_out), (s_h, s_w, s_c, s_n, s_h * stride[0], s_w * stride[1])
    )  # (HH, WW, C, N, H', W'), a view
    return windows.reshape(kh * kw * c, n * h_out * w_out).t(), h_out, w_out


def _grid(t: torch.Tensor, start, count, step) -> torch.Tensor:
    """The view t[:, start_h::step_h, start_w::step_w] of count_h x count_w rows and columns (t is N, H, W, C).

    Dimensions taken whole stay untouched: gradcheck's batched-gradient vmap has no rule for
    the alias that a full slice makes.
    """
    for dim in (1, 2):
        k = dim - 1
        if start[k] == 0 and step[k] == 1 and count[k] == t.shape[dim]:
            continue
        index = [slice(None)] * t.dim()
        index[dim] = slice(start[k], start[k] + step[k] * (count[k] - 1) + 1, step[k])
        t = t[tuple(index)]
    return t


class Conv2dFunction(Function):
    """x : N x C x H x W; w : F x C x HH x WW; b : F (or None) -> N x F x H' x W' (and the im2col rows).

    H' = (H + 2 pad_h - HH) // stride_h + 1, likewise W'. The rows (N*H'*W', HH*WW*C) are a
    second, non-differentiable output so that backward can reuse them (torch.func and
    double backward need every saved tensor to be an input or an output).
    """

    @staticmethod
    def forward(x, w, b, stride, padding):
        n = x.shape[0]
        f, c, kh, kw = w.shape
        cols, h_out, w_out = _im2col(x, kh, kw, stride, padding)  # (N*H'*W', HH*WW*C)
        w_mat = w.permute(2, 3, 1, 0).reshape(kh * kw * c, f)  # (HH*WW*C, F)
        # Y = cols W (+ b): each output pixel is its receptive field dotted with each filter
        out = cols @ w_mat if b is None else torch.addmm(b, cols, w_mat)  # (N*H'*W', F)
        return out.view(n, h_out, w_out, f).permute(0, 3, 1, 2), cols  # (N, F, H', W'), channels-last memory

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding = inputs
        _, cols = output
        ctx.mark_non_differentiable(cols)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, b is not None
        ctx.save_for_backward(x, w, cols)

    @staticmethod
    def backward(ctx, grad_out, _grad_cols):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None
        x, w, cols = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = ctx.stride, ctx.padding
        h_out, w_out = grad_out.shape[2:]
        g = grad_out.permute(0, 2, 3, 1).reshape(n * h_out * w_out, f)  # (N*H'*W', F), free if channels-last
        if ctx.needs_input_grad[0]:
            # dL/dX[n,c] = sum_f W[f,c] *full dL/dY[n,f]: filter tap (i, j) sends g @ W[:, :, i, j]
            # to the input pixels it touched, i.e. the output grid shifted by (i, j).
            w_taps = w.permute(2, 3, 0, 1)  # (HH, WW, F, C)
            grad_xh = grad_out.new_zeros(n, h + 2 * ph, wd + 2 * pw, c)  # padded, channels-last
            for i in range(kh):
                for j in range(kw):
                    tap = (g @ w_taps[i, j]).view(n, h_out, w_out, c)  # (N, H', W', C)
                    _grid(grad_xh, (i, j), (h_out, w_out), (sh, sw)).add_(tap)
            grad_x = _grid(grad_xh, (ph, pw), (h, wd), (1, 1)).permute(0, 3, 1, 2)  # (N, C, H, W)
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():
                # Double backward: rebuild the rows from x so that grad_w stays a function of x.
                cols = _im2col(x, kh, kw, ctx.stride, ctx.padding)[0]
            # dL/dW[f,c] = sum_n X[n,c] *filt dL/dY[n,f]: one product over every receptive field
            grad_w = (cols.t() @ g).view(kh, kw, c, f).permute(3, 2, 0, 1)  # (F, C, HH, WW)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)  # (F,)
        return grad_x, grad_w, grad_b, None, None


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """2-D cross-correlation with zero padding (a convolution under autocast: runs in the low precision).

    Args:
        x: (N, C, H, W).
        w: (F, C, HH, WW) filters.
        b: (F,) or None.
        stride, padding: an int or a (height, width) pair.

    Returns:
        (N, F, H', W') with H' = (H + 2 pad_h - HH) // stride_h + 1, likewise W'; its memory is
        channels-last (call `.contiguous()` where NCHW memory is needed).
    """
    op = "conv2d"
    check_tensor(op, "x", x, ndim=4)
    check_tensor(op, "w", w, ndim=4)
    if b is not None:
        check_tensor(op, "b", b, ndim=1)
    stride, padding = pair(op, "stride", stride), pair(op, "padding", padding)
    if min(stride) < 1:
        raise ValueError(f"conv2d: stride must be positive, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"conv2d: padding must be non-negative, got {padding}")
    if min(w.shape[2:]) < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got w of shape {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: x {describe(x)} has {x.shape[1]} channels but w {tuple(w.shape)} expects {w.shape[1]}"
        )
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"conv2d: b has {b.shape[0]} entries but w {tuple(w.shape)} has {w.shape[0]} filters")
    hp, wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if w.shape[2] > hp or w.shape[3] > wp:
        raise ValueError(
            f"conv2d: kernel {tuple(w.shape[2:])} is larger than the padded input {(hp, wp)} "
            f"(x {tuple(x.shape)}, padding {padding})"
        )
    x, w, b = autocast_cast(LOWER, x, w, b)
    check_same_dtype_device(op, x=x, w=w, b=b)
    return apply(Conv2dFunction, x, w, b, stride, padding)[0]
