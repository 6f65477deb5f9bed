"""2-D convolution (cross-correlation, as in CNNs): Y[n,f] = sum_c X[n,c] *filt W[f,c] + b[f].

Built on im2col in channels-last order: every receptive field becomes one row of a
(N*H'*W') x (HH*WW*C) matrix, so the layer is a single matrix product with the filters
laid out as (HH*WW*C) x F. The output is that product's memory seen as (N, F, H', W'),
i.e. in channels-last memory format (call `.contiguous()` where NCHW memory is needed).
Grouped convolution is one such product per group (a batched product); dilation spaces the
taps of each receptive field.

Depthwise convolution (groups = in_channels = out_channels, as in MobileNet) has its own path:
each output channel depends on one input channel only, so im2col would copy every input
HH*WW times for a product with one filter per channel. Instead the output is accumulated tap
by tap, Y[n,c] += W[c,0,i,j] * (X[n,c] shifted by tap (i, j)), one multiply-add over the output
per tap, a batch chunk at a time so that the accumulator stays in cache.
Derivations: docs/derivations.md#convolution, docs/derivations.md#dilation-and-groups,
docs/derivations.md#depthwise-convolution-tap-by-tap
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
    in_place_ok,
    new_in_layout,
    pair,
    unwrapped,
)


def _im2col(x: torch.Tensor, kh: int, kw: int, stride, padding, dilation=(1, 1), groups: int = 1):
    """x (N, C, H, W) -> rows, one receptive field per row, and H', W'.

    groups = 1: rows (N*H'*W', HH*WW*C). groups = G > 1: (G, N*H'*W', HH*WW*C/G), the rows of
    each group's channels.
    """
    n, c = x.shape[:2]
    (sh, sw), (dh, dw) = stride, dilation
    xh = x.permute(0, 2, 3, 1)  # (N, H, W, C), a view
    if padding[0] or padding[1]:
        xh = F.pad(xh, (0, 0, padding[1], padding[1], padding[0], padding[0]))  # (N, H+2ph, W+2pw, C)
    h_out = (xh.shape[1] - dh * (kh - 1) - 1) // sh + 1
    w_out = (xh.shape[2] - dw * (kw - 1) - 1) // sw + 1
    s_n, s_h, s_w, s_c = xh.stride()
    if groups > 1:
        cg = c // groups
        windows = xh.as_strided(
            (groups, n, h_out, w_out, kh, kw, cg), (cg * s_c, s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c)
        )  # (G, N, H', W', HH, WW, C/G), a view
        return windows.reshape(groups, n * h_out * w_out, kh * kw * cg), h_out, w_out
    if s_c == 1 or c == 1:
        # Channels are contiguous (channels-last or single-channel input): copy receptive fields row by row.
        windows = xh.as_strided(
            (n, h_out, w_out, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c)
        )  # (N, H', W', HH, WW, C), a view
        return windows.reshape(n * h_out * w_out, kh * kw * c), h_out, w_out
    # NCHW input: gather along image rows (contiguous) instead, and hand back the transpose;
    # the matrix products take either memory order at the same cost.
    windows = xh.as_strided(
        (kh, kw, c, n, h_out, w_out), (s_h * dh, s_w * dw, s_c, s_n, s_h * sh, s_w * sw)
    )  # (HH, WW, C, N, H', W'), a view
    return windows.reshape(kh * kw * c, n * h_out * w_out).t(), h_out, w_out


def _slices(t: torch.Tensor, dims: tuple[int, int], start, count, step) -> torch.Tensor:
    """t sliced start::step, count entries, along the two spatial `dims`.

    Dimensions taken whole stay untouched: gradcheck's batched-gradient vmap has no rule for
    the alias that a full slice makes.
    """
    for k, dim in enumerate(dims):
        if start[k] == 0 and step[k] == 1 and count[k] == t.shape[dim]:
            continue
        index = [slice(None)] * t.dim()
        index[dim] = slice(start[k], start[k] + step[k] * (count[k] - 1) + 1, step[k])
        t = t[tuple(index)]
    return t


def _grid(t: torch.Tensor, start, count, step) -> torch.Tensor:
    """The view t[:, start_h::step_h, start_w::step_w] of count_h x count_w rows and columns (t is N, H, W, ...)."""
    return _slices(t, (1, 2), start, count, step)


class Conv2dFunction(Function):
    """x : N x C x H x W; w : F x C/G x HH x WW; b : F (or None) -> N x F x H' x W' (and the im2col rows).

    H' = (H + 2 pad_h - dil_h (HH - 1) - 1) // stride_h + 1, likewise W'. The rows are a
    second, non-differentiable output so that backward can reuse them (torch.func and
    double backward need every saved tensor to be an input or an output).
    """

    @staticmethod
    def forward(x, w, b, stride, padding, dilation, groups):
        n = x.shape[0]
        f, cg, kh, kw = w.shape
        cols, h_out, w_out = _im2col(x, kh, kw, stride, padding, dilation, groups)
        if groups == 1:
            w_mat = w.permute(2, 3, 1, 0).reshape(kh * kw * cg, f)  # (HH*WW*C, F)
            # Y = cols W (+ b): each output pixel is its receptive field dotted with each filter
            out = cols @ w_mat if b is None else torch.addmm(b, cols, w_mat)  # (N*H'*W', F)
        else:
            fg = f // groups
            w_mat = w.view(groups, fg, cg, kh, kw).permute(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, fg)
            # one product per group: (G, N*H'*W', HH*WW*C/G) @ (G, HH*WW*C/G, F/G), laid out as (N*H'*W', G, F/G)
            if in_place_ok() and unwrapped(x, w, b):
                out = cols.new_empty(cols.shape[1], groups, fg)
                torch.bmm(cols, w_mat, out=out.transpose(0, 1))
                out = out.view(-1, f)
                if b is not None:
                    out.add_(b)
            else:
                out = torch.bmm(cols, w_mat).transpose(0, 1).reshape(-1, f)
                if b is not None:
                    out = out + b
        return out.view(n, h_out, w_out, f).permute(0, 3, 1, 2), cols  # (N, F, H', W'), channels-last memory

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, dilation, groups = inputs
        _, cols = output
        ctx.mark_non_differentiable(cols)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.stride, ctx.padding, ctx.dilation, ctx.groups = stride, padding, dilation, groups
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w, cols)

    @staticmethod
    def backward(ctx, grad_out, _grad_cols):
        if grad_out is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None, None, None
        x, w, cols = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        n, c, h, wd = x.shape
        f, cg, kh, kw = w.shape
        groups, fg = ctx.groups, f // ctx.groups
        (sh, sw), (ph, pw), (dh, dw) = ctx.stride, ctx.padding, ctx.dilation
        h_out, w_out = grad_out.shape[2:]
        m = n * h_out * w_out
        g = grad_out.permute(0, 2, 3, 1).reshape(m, f)  # (N*H'*W', F), free if channels-last
        g_groups = g.view(m, groups, fg).transpose(0, 1)  # (G, N*H'*W', F/G), a view
        if ctx.needs_input_grad[0]:
            # dL/dX[n,c] = sum_f W[f,c] *full dL/dY[n,f]: filter tap (i, j) sends g @ W[:, :, i, j]
            # to the input pixels it touched, i.e. the output grid shifted by (i*dil_h, j*dil_w).
            w_taps = w.view(groups, fg, cg, kh, kw)  # (G, F/G, C/G, HH, WW)
            grad_xh = grad_out.new_zeros(n, h + 2 * ph, wd + 2 * pw, c)  # padded, channels-last
            for i in range(kh):
                for j in range(kw):
                    target = _grid(grad_xh, (i * dh, j * dw), (h_out, w_out), (sh, sw))  # (N, H', W', C)
                    if groups == 1:
                        target.add_((g @ w_taps[0, :, :, i, j]).view(n, h_out, w_out, c))
                    else:
                        tap = torch.bmm(g_groups, w_taps[:, :, :, i, j])  # (G, N*H'*W', C/G)
                        target = target.view(n, h_out, w_out, groups, cg)  # (N, H', W', G, C/G), a view
                        target.add_(tap.view(groups, n, h_out, w_out, cg).permute(1, 2, 3, 0, 4))
            grad_x = _grid(grad_xh, (ph, pw), (h, wd), (1, 1)).permute(0, 3, 1, 2)  # (N, C, H, W)
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():
                # Double backward: rebuild the rows from x so that grad_w stays a function of x.
                cols = _im2col(x, kh, kw, ctx.stride, ctx.padding, ctx.dilation, groups)[0]
            # dL/dW[f,c] = sum_n X[n,c] *filt dL/dY[n,f]: one product over every receptive field
            if groups == 1:
                grad_w = (cols.t() @ g).view(kh, kw, cg, f).permute(3, 2, 0, 1)  # (F, C, HH, WW)
            else:
                grad_w = torch.bmm(cols.transpose(1, 2), g_groups)  # (G, HH*WW*C/G, F/G)
                grad_w = grad_w.view(groups, kh, kw, cg, fg).permute(0, 4, 3, 1, 2).reshape(f, cg, kh, kw)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)  # (F,)
        return grad_x, grad_w, grad_b, None, None, None, None


# ---- depthwise convolution ---------------------------------------------------------------

# Batch entries per chunk of the tap-by-tap loops: about this many bytes of output per thread, so
# that the accumulator and the input rows it reads stay in each core's cache while every tap passes
# over them.
_CHUNK_BYTES = 1 << 20


def _chunk(per_sample_bytes: int) -> int:
    return max(1, _CHUNK_BYTES * max(1, torch.get_num_threads()) // max(1, per_sample_bytes))


def _tap_range(size_in: int, size_out: int, offset: int, step: int) -> tuple[int, int, int]:
    """Outputs o in [o0, o1) whose input position o*step + offset lies in [0, size_in), and that o0's input."""
    o0 = max(0, -(offset // step) if offset < 0 else 0)
    while o0 * step + offset < 0:
        o0 += 1
    o1 = min(size_out, (size_in - 1 - offset) // step + 1) if size_in - 1 - offset >= 0 else 0
    return o0, max(o0, o1), o0 * step + offset


def _taps(shape_in, shape_out, kernel, stride, padding, dilation):
    """Per tap (i, j): its index i*WW + j, the output block it reaches and the input block it reads."""
    (h, w), (h_out, w_out) = shape_in, shape_out
    taps = []
    for i in range(kernel[0]):
        oh0, oh1, ih0 = _tap_range(h, h_out, i * dilation[0] - padding[0], stride[0])
        for j in range(kernel[1]):
            ow0, ow1, iw0 = _tap_range(w, w_out, j * dilation[1] - padding[1], stride[1])
            if oh1 > oh0 and ow1 > ow0:
                out_block = (slice(oh0, oh1), slice(ow0, ow1))
                in_block = (
                    slice(ih0, ih0 + (oh1 - oh0 - 1) * stride[0] + 1, stride[0]),
                    slice(iw0, iw0 + (ow1 - ow0 - 1) * stride[1] + 1, stride[1]),
                )
                full = (oh0, oh1, ow0, ow1) == (0, h_out, 0, w_out)
                taps.append((i * kernel[1] + j, out_block, in_block, full))
    # a tap that reaches every output goes first: it initialises the accumulator (no zero fill)
    return sorted(taps, key=lambda t: not t[3])


def _pad(t: torch.Tensor, pads) -> torch.Tensor:
    """F.pad, skipped when there is nothing to pad (gradcheck's batched vmap has no rule for the alias)."""
    return F.pad(t, pads) if any(pads) else t


def _window(t: torch.Tensor, start, count, step) -> torch.Tensor:
    """t[:, :, start_h : start_h + step_h (count_h - 1) + 1 : step_h, (likewise w)] for t (N, C, H, W)."""
    return _slices(t, (2, 3), start, count, step)


def _spread(t: torch.Tensor, stride) -> torch.Tensor:
    """(N, C, H', W') -> (N, C, (H'-1) s_h + 1, (W'-1) s_w + 1) with s - 1 zeros between neighbours."""
    sh, sw = stride
    h_out, w_out = t.shape[2:]
    n, c = t.shape[:2]
    if sw > 1:
        t = F.pad(t.unsqueeze(-1), (0, sw - 1)).reshape(n, c, h_out, w_out * sw)[..., : (w_out - 1) * sw + 1]
    if sh > 1:
        w_spread = t.shape[3]
        t = F.pad(t.unsqueeze(3), (0, 0, 0, sh - 1)).reshape(n, c, h_out * sh, w_spread)[:, :, : (h_out - 1) * sh + 1]
    return t


class DepthwiseConv2dFunction(Function):
    """x : N x C x H x W; w : C x 1 x HH x WW; b : C (or None) -> N x C x H' x W', in x's memory format.

    Y[n,c,h,v] = sum_{i,j} W[c,0,i,j] X[n,c, h*s_h + i*d_h - p_h, v*s_w + j*d_w - p_w] + b[c], the
    terms whose input position falls in the padding being zero.
    """

    @staticmethod
    def forward(x, w, b, stride, padding, dilation):
        n, c, h, wd = x.shape
        kh, kw = w.shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        h_out, w_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        # tap k's weights w_taps[k], (C, 1, 1), broadcast over a plane; contiguous over the channels
        # (a strided view of w would make every multiply-add a gather, several times slower)
        w_taps = w.reshape(c, kh * kw).t().contiguous().view(kh * kw, c, 1, 1)
        if not unwrapped(x, w, b) or torch.compiler.is_compiling():
            # torch.func / torch.compile: the same sum out of place, over a padded copy of x
            xp = _pad(x, (pw, pw, ph, ph))
            out = None if b is None else b.view(c, 1, 1)
            for i in range(kh):
                for j in range(kw):
                    view = _window(xp, (i * dh, j * dw), (h_out, w_out), stride)
                    term = view * w_taps[i * kw + j]
                    out = term if out is None else out + term
            return out
        taps = _taps((h, wd), (h_out, w_out), (kh, kw), stride, padding, dilation)
        out = new_in_layout((n, c, h_out, w_out), x, x, zero=not taps[0][3])
        chunk = _chunk(c * h_out * w_out * x.element_size())
        for n0 in range(0, n, chunk):
            xc, oc = x[n0 : n0 + chunk], out[n0 : n0 + chunk]
            for k, (tap, (oh, ow), (ih, iw), full) in enumerate(taps):
                view = xc[:, :, ih, iw]
                if k == 0 and full:  # the first full tap writes (with the bias) instead of adding
                    if b is None:
                        torch.mul(view, w_taps[tap], out=oc)
                    else:
                        torch.addcmul(b.view(c, 1, 1), view, w_taps[tap], out=oc)
                else:
                    oc[:, :, oh, ow].addcmul_(view, w_taps[tap])
            if b is not None and not taps[0][3]:
                oc.add_(b.view(c, 1, 1))
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, dilation = inputs
        ctx.stride, ctx.padding, ctx.dilation, ctx.has_bias = stride, padding, dilation, b is not None
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        n, c, h, wd = x.shape
        kh, kw = w.shape[2:]
        (ph, pw), (dh, dw) = ctx.padding, ctx.dilation
        h_out, w_out = grad_out.shape[2:]
        w_taps = w.reshape(c, kh * kw).t().contiguous().view(kh * kw, c, 1, 1)  # as in forward
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        if not (in_place_ok() and unwrapped(grad_out, x, w)):
            if need_b:
                grad_b = grad_out.sum((0, 2, 3))  # dL/db[c] = sum of dL/dY[:, c]
            # Double backward, torch.func and torch.compile: the same formulas out of place, on padded copies.
            if ctx.needs_input_grad[0]:
                # dL/dX = sum over taps of W[c,0,i,j] dL/dY spread to the stride and shifted by the tap
                spread = _spread(grad_out, ctx.stride)  # (N, C, (H'-1) s_h + 1, (W'-1) s_w + 1)
                hp, wp = h + 2 * ph, wd + 2 * pw
                grad_xp = None
                for i in range(kh):
                    for j in range(kw):
                        r, q = i * dh, j * dw
                        pads = (q, wp - q - spread.shape[3], r, hp - r - spread.shape[2])
                        term = _pad(spread * w_taps[i * kw + j], pads)  # (N, C, H + 2ph, W + 2pw)
                        grad_xp = term if grad_xp is None else grad_xp + term
                grad_x = _window(grad_xp, (ph, pw), (h, wd), (1, 1))
            if ctx.needs_input_grad[1]:
                # dL/dW[c,0,i,j] = sum over n and the output grid of dL/dY * X shifted by the tap
                xp = _pad(x, (pw, pw, ph, ph))
                sums = [
                    (grad_out * _window(xp, (i * dh, j * dw), (h_out, w_out), ctx.stride)).sum((0, 2, 3))
                    for i in range(kh)
                    for j in range(kw)
                ]
                grad_w = torch.stack(sums, 1).view(c, 1, kh, kw)
            return grad_x, grad_w, grad_b, None, None, None
        taps = _taps((h, wd), (h_out, w_out), (kh, kw), ctx.stride, ctx.padding, ctx.dilation)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        writes = set()
        if need_x:
            # The input pixels fall into stride_h x stride_w classes (row mod stride_h, column mod stride_w),
            # and a tap reads pixels of one class only. A tap that reads every pixel of its class writes
            # it (first) instead of adding to it, so dL/dX needs no zero fill unless a class has none.
            (sh, sw), first_of = ctx.stride, {}
            for tap, _, (ih, iw), _ in taps:
                whole = ih.start < sh and iw.start < sw
                whole = whole and len(range(h)[ih]) == len(range(ih.start, h, sh))
                whole = whole and len(range(wd)[iw]) == len(range(iw.start, wd, sw))
                if whole:
                    first_of.setdefault((ih.start, iw.start), tap)
            if len(first_of) == min(sh, h) * min(sw, wd):
                writes = set(first_of.values())
                taps.sort(key=lambda t: t[0] not in writes)
            grad_x = new_in_layout((n, c, h, wd), grad_out, x, zero=not writes)
        if need_w:
            sums = grad_out.new_zeros(kh * kw, c)  # dL/dW, tap by tap
        chunk = _chunk(c * h_out * w_out * grad_out.element_size())
        buf = None
        if need_b:
            grad_b = grad_out.new_zeros(c)
        for n0 in range(0, n, chunk):
            gc = grad_out[n0 : n0 + chunk]
            if need_b:
                grad_b += gc.sum((0, 2, 3))  # dL/db[c] = sum of dL/dY[:, c], while the chunk is in cache
            if need_x:
                gxc = grad_x[n0 : n0 + chunk]
                for tap, (oh, ow), (ih, iw), _ in taps:
                    # the input pixels this tap read get W[c,0,i,j] times the gradient of the outputs it reached
                    if tap in writes:
                        torch.mul(gc[:, :, oh, ow], w_taps[tap], out=gxc[:, :, ih, iw])
                    else:
                        gxc[:, :, ih, iw].addcmul_(gc[:, :, oh, ow], w_taps[tap])
            if need_w:
                # per tap, dL/dY times the input grid the tap read, summed per channel: over a zero-padded
                # copy of this chunk, so that every product fills the whole buffer (a reduction over a
                # whole buffer runs several times faster than over a strided part of it)
                xc = x[n0 : n0 + chunk]
                if buf is None:
                    buf = new_in_layout(gc.shape, gc, gc)  # dL/dY * shifted X
                    # the padded chunk: zero borders once, the interior copied for every chunk
                    xp_buf = new_in_layout((xc.shape[0], c, h + 2 * ph, wd + 2 * pw), x, x, zero=True)
                xp = xc
                if ph or pw:
                    xp = xp_buf[: xc.shape[0]]
                    xp[:, :, ph : ph + h, pw : pw + wd].copy_(xc)
                if buf.shape[0] != gc.shape[0]:
                    buf = buf[: gc.shape[0]]
                for i in range(kh):
                    for j in range(kw):
                        torch.mul(gc, _window(xp, (i * dh, j * dw), (h_out, w_out), ctx.stride), out=buf)
                        sums[i * kw + j] += buf.sum((0, 2, 3))
        if need_w:
            grad_w = sums.t().reshape(c, 1, kh, kw)
        return grad_x, grad_w, grad_b, None, None, None


def _padding(op: str, padding, w: torch.Tensor, stride, dilation) -> tuple[int, int]:
    """An int or pair, or "valid" (none) or "same" (the output keeps the input's size; stride 1)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, w.shape[2:])]
        if any(t % 2 for t in total):
            raise ValueError(
                f"{op}: padding='same' with kernel {tuple(w.shape[2:])} and dilation {dilation} would pad "
                "one side more than the other, which is not supported; pass explicit padding"
            )
        return total[0] // 2, total[1] // 2
    return pair(op, "padding", padding)


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D cross-correlation with zero padding (a convolution under autocast: runs in the low precision).

    The arguments are F.conv2d's.

    Args:
        x: (N, C, H, W).
        w: (F, C / groups, HH, WW) filters.
        b: (F,) or None.
        stride, dilation: an int or a (height, width) pair.
        padding: an int or a (height, width) pair, or "valid" (0) or "same" (stride 1, even total padding).
        groups: C and F split into this many groups, group g's filters seeing group g's channels only;
            groups = C = F is depthwise convolution (its own, tap-by-tap path).

    Returns:
        (N, F, H', W') with H' = (H + 2 pad_h - dil_h (HH - 1) - 1) // stride_h + 1, likewise W'; its
        memory is channels-last (depthwise: x's memory format; call `.contiguous()` where NCHW memory
        is needed).
    """
    op = "conv2d"
    check_tensor(op, "x", x, ndim=4)
    check_tensor(op, "w", w, ndim=4)
    if b is not None:
        check_tensor(op, "b", b, ndim=1)
    stride, dilation = pair(op, "stride", stride), pair(op, "dilation", dilation)
    if min(stride) < 1:
        raise ValueError(f"conv2d: stride must be positive, got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"conv2d: dilation must be positive, got {dilation}")
    padding = _padding(op, padding, w, stride, dilation)
    if min(padding) < 0:
        raise ValueError(f"conv2d: padding must be non-negative, got {padding}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if min(w.shape[2:]) < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got w of shape {tuple(w.shape)}")
    if x.shape[1] % groups or w.shape[0] % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide the input channels ({x.shape[1]}) and the filters ({w.shape[0]})"
        )
    if x.shape[1] != w.shape[1] * groups:
        per_group = f" ({groups} groups of {w.shape[1]})" if groups > 1 else ""
        raise ValueError(
            f"conv2d: x {describe(x)} has {x.shape[1]} channels but w {tuple(w.shape)} expects "
            f"{w.shape[1] * groups}{per_group}"
        )
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"conv2d: b has {b.shape[0]} entries but w {tuple(w.shape)} has {w.shape[0]} filters")
    hp, wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    kh, kw = ((k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation))
    if kh > hp or kw > wp:
        dilated = f" (dilated to {(kh, kw)})" if max(dilation) > 1 else ""
        raise ValueError(
            f"conv2d: kernel {tuple(w.shape[2:])}{dilated} is larger than the padded input {(hp, wp)} "
            f"(x {tuple(x.shape)}, padding {padding})"
        )
    x, w, b = autocast_cast(LOWER, x, w, b)
    check_same_dtype_device(op, x=x, w=w, b=b)
    if groups > 1 and groups == x.shape[1] == w.shape[0]:
        return apply(DepthwiseConv2dFunction, x, w, b, stride, padding, dilation)
    return apply(Conv2dFunction, x, w, b, stride, padding, dilation, groups)[0]
