"""2-D pooling: max pooling, average pooling and adaptive average pooling, as in torch.nn.functional.

Max pooling ties: when several entries of a window share the maximum, the whole gradient goes
to the first of them in row-major order (top row first, then left to right), as in
torch.nn.functional.max_pool2d; any one choice is a valid subgradient. A window holding NaN
outputs NaN; its gradient goes to the largest entry before the first NaN (torch's own layer
sends it to the NaN). Padding is -inf for max pooling, zeros for average pooling.

Average pooling is separable: every window is a rectangle of rows times columns, so the output
is A_h X A_w^T for two small averaging matrices (one weight per window row and column); windows
that tile the input exactly (stride = kernel, the adaptive pooling of sizes that divide the input,
global pooling) take a faster path, one reduction over a reshaped view.
Derivations: docs/derivations.md#max-pooling and docs/derivations.md#average-pooling
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ._checks import Function, apply, channels_last, check_tensor, describe, in_place_ok, pair, unwrapped


def _out_size(op: str, size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Windows along one dimension, by torch's rule (with ceil_mode, a last partial window that
    starts inside the input or the left padding counts)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    if out < 1:
        raise ValueError(f"{op}: the input size {size} is too small for kernel {k} (dilation {d}, padding {p})")
    return out


class MaxPool2dFunction(Function):
    """x : N x C x H x W -> N x C x H' x W', H' = (H + 2 ph - dh (kh - 1) - 1) // sh + 1.

    The second output (N, C, H', W') is each window's winner (see forward), not differentiable.
    """

    @staticmethod
    def forward(x, kernel, stride, padding, dilation):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), value=-math.inf)  # (N, C, H + 2ph, W + 2pw), -inf never wins
        n, c, h, w = x.shape
        h_out, w_out = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        s_n, s_c, s_h, s_w = x.stride()
        windows = x.as_strided(
            (n, c, h_out, w_out, kh, kw), (s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw)
        )  # (N, C, H', W', kh, kw), a view
        # Visit the taps (i, j) in row-major order keeping a running maximum. A tap wins its window
        # when it is strictly greater than every earlier tap, so the last tap to win is the first
        # maximum. Record the winner as its offset i*dh*W + j*dw in the (padded) input plane: offsets
        # grow with the visiting order, so the winner is the largest offset whose comparison fired.
        # The bookkeeping is float (at least float32, so offsets stay exact): float kernels are
        # several times faster on CPU than boolean or integer ones. (tap - out).clamp_min(0).sign()
        # is 1 exactly where tap > out, and NaN where either is NaN, which fmax ignores.
        low_precision = x.dtype in (torch.float16, torch.bfloat16)
        if in_place_ok() and unwrapped(x) and kh * kw > 1:
            # Eager: the same visit, updating one running maximum and one winner buffer in place.
            # the buffers in x's memory format (a strided tap against a buffer in another order is slow)
            fmt = torch.channels_last if channels_last(x) else torch.contiguous_format
            shape = (n, c, h_out, w_out)
            out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt).copy_(windows[..., 0, 0])
            winner = torch.zeros(shape, dtype=torch.float32 if low_precision else x.dtype, device=x.device)
            winner = winner.contiguous(memory_format=fmt)
            fired = torch.empty_like(winner)
            for p in range(1, kh * kw):
                i, j = divmod(p, kw)
                tap = windows[..., i, j]
                torch.sub(tap, out, out=fired)  # (float buffers: several times faster than boolean masks)
                # the offset where tap > out, else 0 (NaN, where either is NaN, to 0: it never fires)
                fired.clamp_min_(0).sign_().nan_to_num_(0.0).mul_(i * dh * w + j * dw)
                torch.maximum(winner, fired, out=winner)  # offsets grow with the visit: the latest fired wins
                torch.maximum(out, tap, out=out)
            return out, winner
        out = windows[..., 0, 0]
        winner = None  # (N, C, H', W') offset of each window's first maximum
        for p in range(1, kh * kw):
            i, j = divmod(p, kw)
            tap = windows[..., i, j]
            fired = (tap - out).clamp_min_(0).sign_()
            fired = (fired.float() if low_precision else fired).mul_(i * dh * w + j * dw)
            winner = fired if winner is None else torch.fmax(winner, fired)
            out = torch.maximum(out, tap)
        if winner is None:  # 1x1 windows
            winner = x.new_zeros(out.shape, dtype=torch.float32 if low_precision else x.dtype)
            out = out.clone()
        return out, winner

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel, stride, padding, dilation = inputs
        _, winner = output
        ctx.mark_non_differentiable(winner)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.input_shape, ctx.stride, ctx.padding = x.shape, stride, padding
        ctx.channels_last = channels_last(x)
        ctx.save_for_backward(winner)

    @staticmethod
    def backward(ctx, grad_out, _grad_winner):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None
        (winner,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            n, c, h, w = ctx.input_shape
            (sh, sw), (ph, pw) = ctx.stride, ctx.padding
            h, w = h + 2 * ph, w + 2 * pw  # the padded plane the offsets refer to
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
            if ph or pw:  # the gradient of the padding is dropped
                grad_x = grad_x[:, :, ph : h - ph, pw : w - pw]
        return grad_x, None, None, None, None


def _pool_args(op: str, x, kernel_size, stride, padding, dilation=1):
    """Checked (kernel, stride, padding, dilation) pairs; stride defaults to the kernel size."""
    check_tensor(op, "x", x, ndim=4)
    kernel = pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else pair(op, "stride", stride)
    padding, dilation = pair(op, "padding", padding), pair(op, "dilation", dilation)
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"{op}: kernel_size {kernel}, stride {stride} and dilation {dilation} must be positive")
    for k, p in zip(kernel, padding):
        if p < 0 or p > k // 2:  # torch's rule: at most half the kernel size
            raise ValueError(f"{op}: padding {padding} must be non-negative and at most half the kernel {kernel}")
    return kernel, stride, padding, dilation


def _refuse(op: str, name: str, value, default) -> None:
    if value != default:
        raise ValueError(f"{op}: {name}={value!r} is not supported (only {name}={default!r})")


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Max over each kernel_size window; keeps x's dtype under autocast, like F.max_pool2d.

    Args:
        x: (N, C, H, W).
        kernel_size: an int or a (height, width) pair.
        stride: likewise; defaults to kernel_size.
        padding: -inf rows and columns added on each side, at most half the kernel.
        dilation: spacing between the taps of a window.
        ceil_mode: only False (the default) is supported: windows that would run past the
            input are dropped.

    Returns:
        (N, C, H', W') with H' = (H + 2 pad_h - dil_h (kh - 1) - 1) // sh + 1 (rows and columns
        left over are dropped).
    """
    op = "max_pool2d"
    kernel, stride, padding, dilation = _pool_args(op, x, kernel_size, stride, padding, dilation)
    _refuse(op, "ceil_mode", ceil_mode, False)
    for k, size, p, d in zip(kernel, x.shape[2:], padding, dilation):
        if d * (k - 1) + 1 > size + 2 * p:
            raise ValueError(f"{op}: kernel {kernel} is larger than the input x {describe(x)} (padding {padding})")
    return apply(MaxPool2dFunction, x, kernel, stride, padding, dilation)[0]


# ---- average pooling -----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _avg_matrix(size, out, k, s, p, ceil_mode, include_pad, divisor, dtype, device) -> torch.Tensor:
    """A (out, size): row i averages window i along one dimension, as torch divides it.

    Window i covers input positions [i*s - p, i*s - p + k), cut to the input; with count_include_pad
    its divisor is the window's length up to the padded border (as torch), else the positions
    inside the input. `divisor` (divisor_override) replaces the product of the two dimensions'
    lengths: one dimension gets 1/divisor, the other 1.
    """
    a = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)
        length = end - start
        start, end = max(start, 0), min(end, size)
        if not include_pad:
            length = end - start
        a[i, start:end] = 1.0 / (length if divisor is None else divisor)
    return a.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=256)
def _adaptive_matrix(size, out, dtype, device) -> torch.Tensor:
    """A (out, size): row i averages positions floor(i*size/out) .. ceil((i+1)*size/out) - 1, as torch."""
    a = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        a[i, start:end] = 1.0 / (end - start)
    return a.to(dtype=dtype, device=device)


def _separable(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
    """Y[n,c] = A_h X[n,c] A_w^T: x (N, C, H, W), a_h (H', H), a_w (W', W) -> (N, C, H', W').

    Two matrix products, in the memory order of x: over (H, W) planes for NCHW memory, over rows
    of channels for channels-last memory (then the result is channels-last too).
    """
    n, c, h, w = x.shape
    h_out, w_out = a_h.shape[0], a_w.shape[0]
    if channels_last(x):
        xh = x.permute(0, 2, 3, 1).reshape(n * h, w, c)  # (N*H, W, C), a view
        t = torch.matmul(a_w, xh).view(n, h, w_out * c)  # (N, H, W'*C)
        return torch.matmul(a_h, t).view(n, h_out, w_out, c).permute(0, 3, 1, 2)  # (N, C, H', W')
    t = torch.matmul(x.reshape(n * c, h, w), a_w.t())  # (N*C, H, W')
    return torch.matmul(a_h, t).view(n, c, h_out, w_out)


def _tiles(x: torch.Tensor, kh: int, kw: int) -> tuple[torch.Tensor, bool]:
    """x (N, C, H, W) cut into kh x kw tiles (rows and columns left over dropped), as a view:
    (N, H', kh, W', kw, C) for channels-last memory, else (N, C, H', kh, W', kw); and which."""
    n, c, h, w = x.shape
    h_out, w_out = h // kh, w // kw
    x = x[:, :, : h_out * kh, : w_out * kw]  # the rows and columns some tile covers (a view)
    if channels_last(x):
        return x.permute(0, 2, 3, 1).view(n, h_out, kh, w_out, kw, c), True
    return x.view(n, c, h_out, kh, w_out, kw), False


# Tiles of up to this many entries are summed tap by tap (see AvgPool2dFunction.forward).
_TAP_SUM_MAX = 16


class AvgPool2dFunction(Function):
    """x : N x C x H x W; a_h : H' x H, a_w : W' x W (window weights) -> N x C x H' x W'.

    With `tile` = (kh, kw, scale) the windows tile the input (stride = kernel, no padding):
    Y = scale * (sum over each tile), and a_h, a_w are unused.
    """

    @staticmethod
    def forward(x, a_h, a_w, tile):
        if tile is None:
            return _separable(x, a_h, a_w)
        kh, kw, scale = tile
        tiles, nhwc = _tiles(x, kh, kw)  # (N, H', kh, W', kw, C) or (N, C, H', kh, W', kw)
        i_dim, j_dim = (2, 4) if nhwc else (3, 5)
        if kh * kw <= _TAP_SUM_MAX:
            # small tiles: the sum of the kh*kw strided taps, added in one buffer (a reduction over the
            # two tile dimensions of this view runs an order of magnitude slower)
            taps = [tiles.select(j_dim, j).select(i_dim, i) for i in range(kh) for j in range(kw)]
            if len(taps) == 1:
                out = taps[0] * scale
            else:
                out = taps[0] + taps[1]
                for tap in taps[2:]:
                    out = out.add_(tap) if in_place_ok() else out + tap
                out = out.mul_(scale) if in_place_ok() else out * scale
        else:
            out = tiles.sum(j_dim).sum(i_dim) * scale  # one tile dimension at a time
        return out.permute(0, 3, 1, 2) if nhwc else out  # (N, C, H', W')

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, a_h, a_w, tile = inputs
        ctx.input_shape, ctx.tile = x.shape, tile
        ctx.channels_last = channels_last(x)
        ctx.save_for_backward(a_h, a_w)

    @staticmethod
    def backward(ctx, grad_out):
        a_h, a_w = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            if ctx.tile is None:
                # Y = A_h X A_w^T is linear in X: dL/dX = A_h^T dL/dY A_w
                grad_x = _separable(grad_out, a_h.t(), a_w.t())
            else:
                # every entry of a tile gets scale * that tile's upstream gradient; leftover rows get 0
                kh, kw, scale = ctx.tile
                n, c, h, w = ctx.input_shape
                h_out, w_out = grad_out.shape[2:]
                if not (in_place_ok() and unwrapped(grad_out)):
                    g = grad_out * scale
                    # torch.func and double backward: out of place, in NCHW order
                    spread = g.view(n, c, h_out, 1, w_out, 1).expand(n, c, h_out, kh, w_out, kw)
                    grad_x = spread.reshape(n, c, h_out * kh, w_out * kw)
                    if (h, w) != (h_out * kh, w_out * kw):
                        grad_x = F.pad(grad_x, (0, w - w_out * kw, 0, h - h_out * kh))
                else:
                    fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
                    grad_x = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device, memory_format=fmt)
                    if (h, w) != (h_out * kh, w_out * kw):
                        grad_x.zero_()  # rows and columns no tile covers
                    tiles, nhwc = _tiles(grad_x, kh, kw)
                    i_dim, j_dim = (2, 4) if nhwc else (3, 5)
                    if kh * kw <= _TAP_SUM_MAX:
                        g = grad_out.permute(0, 2, 3, 1) if nhwc else grad_out  # the tap's layout
                        for i in range(kh):
                            for j in range(kw):
                                torch.mul(g, scale, out=tiles.select(j_dim, j).select(i_dim, i))
                    else:
                        g = grad_out * scale
                        g = g.permute(0, 2, 3, 1) if nhwc else g
                        tiles.copy_(g.unsqueeze(i_dim).unsqueeze(j_dim).expand(tiles.shape))
        return grad_x, None, None, None


def avg_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> torch.Tensor:
    """Mean over each kernel_size window, zero padding; keeps x's dtype under autocast, like F.avg_pool2d.

    Args:
        x: (N, C, H, W).
        kernel_size: an int or a (height, width) pair.
        stride: likewise; defaults to kernel_size.
        padding: zero rows and columns on each side, at most half the kernel.
        ceil_mode: keep a last, partial window that starts inside the input (torch's rule).
        count_include_pad: divide by the window's size including padding (torch's default) or
            by the number of input entries it covers.
        divisor_override: divide every window's sum by this number instead.

    Returns:
        (N, C, H', W'), H' = (H + 2 pad_h - kh) // sh + 1 (rounded up with ceil_mode).
    """
    op = "avg_pool2d"
    kernel, stride, padding, _ = _pool_args(op, x, kernel_size, stride, padding)
    for name, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if not isinstance(flag, bool):
            raise TypeError(f"{op}: {name} must be a bool, got {type(flag).__name__}")
    if divisor_override is not None and (
        not isinstance(divisor_override, int) or isinstance(divisor_override, bool) or divisor_override < 1
    ):
        raise ValueError(f"{op}: divisor_override must be a positive int or None, got {divisor_override!r}")
    h_out, w_out = (
        _out_size(op, size, k, s, p, 1, ceil_mode) for size, k, s, p in zip(x.shape[2:], kernel, stride, padding)
    )
    (kh, kw), (sh, sw) = kernel, stride
    if (kh, kw) == (sh, sw) and padding == (0, 0) and (h_out, w_out) == (x.shape[2] // kh, x.shape[3] // kw):
        scale = 1.0 / (kh * kw if divisor_override is None else divisor_override)
        return apply(AvgPool2dFunction, x, None, None, (kh, kw, scale))
    a_h = _avg_matrix(
        x.shape[2], h_out, kh, sh, padding[0], ceil_mode, count_include_pad, divisor_override, x.dtype, x.device
    )
    a_w = _avg_matrix(
        x.shape[3],
        w_out,
        kw,
        sw,
        padding[1],
        ceil_mode,
        count_include_pad,
        None if divisor_override is None else 1,
        x.dtype,
        x.device,
    )
    return apply(AvgPool2dFunction, x, a_h, a_w, None)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int | None, int | None]) -> torch.Tensor:
    """Average pooling to a fixed output size, windows as torch chooses them (F.adaptive_avg_pool2d).

    Args:
        x: (N, C, H, W).
        output_size: H' or (H', W'); None keeps that dimension's size. (1, 1) is global average pooling.

    Returns:
        (N, C, H', W'); window i along H covers rows floor(i H / H') .. ceil((i + 1) H / H') - 1.
    """
    op = "adaptive_avg_pool2d"
    check_tensor(op, "x", x, ndim=4)
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2 or not all(
        s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 1) for s in sizes
    ):
        raise ValueError(
            f"{op}: output_size must be a positive int or a pair of positive ints (or None), got {output_size!r}"
        )
    h, w = x.shape[2:]
    h_out, w_out = (size if s is None else s for size, s in zip((h, w), sizes))
    if h == 0 or w == 0:
        raise ValueError(f"{op}: x {describe(x)} has an empty spatial dimension")
    if h % h_out == 0 and w % w_out == 0:  # windows tile the input, e.g. global pooling
        kh, kw = h // h_out, w // w_out
        return apply(AvgPool2dFunction, x, None, None, (kh, kw, 1.0 / (kh * kw)))
    a_h, a_w = _adaptive_matrix(h, h_out, x.dtype, x.device), _adaptive_matrix(w, w_out, x.dtype, x.device)
    return apply(AvgPool2dFunction, x, a_h, a_w, None)
