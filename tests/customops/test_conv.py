"""customops/conv.py: the homework's convolution identities, against the literal 1-indexed
definitions (customops/testing/reference.py), and the gradients it skips; dilation, groups and the
depthwise path against F.conv2d, memory formats, "same"/"valid" padding, the module. The registry
checks (tests/customops/testing/test_specs.py) cover conv2d's grouped, dilated and depthwise samples
and error inputs too."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import customops as co
from customops.testing import reference


def test_conv2d_equals_sums_of_valid_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=gen, dtype=torch.float64)
    y = co.conv2d(x, w)
    for n in range(2):
        for f in range(4):
            by_filt = sum(reference.filt(x[n, c], w[f, c]) for c in range(3))
            by_valid = sum(reference.conv_valid(x[n, c], w[f, c].flip(0, 1)) for c in range(3))
            torch.testing.assert_close(y[n, f], by_filt)
            torch.testing.assert_close(y[n, f], by_valid)


def test_conv2d_gradients_equal_full_convolutions_and_filterings():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = co.conv2d(x, w)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    for n in range(2):
        for c in range(2):
            expected = sum(reference.conv_full(w[f, c].detach(), dy[n, f]) for f in range(3))
            torch.testing.assert_close(x.grad[n, c], expected)
    for f in range(3):
        for c in range(2):
            expected = sum(reference.filt(x[n, c].detach(), dy[n, f]) for n in range(2))
            torch.testing.assert_close(w.grad[f, c], expected)


def test_conv2d_skips_unneeded_gradients():
    x = torch.randn(2, 1, 6, 6)  # data: no gradient wanted
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    co.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


def test_conv2d_empty_batch_gives_empty_results_and_gradients():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    out = co.conv2d(x, w)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.all(w.grad == 0)


def _both(x, w, b, **options):
    """Outputs and (x, w, b) gradients of co.conv2d and F.conv2d for one upstream gradient."""
    results = []
    for fn in (co.conv2d, F.conv2d):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        out = fn(*leaves, **options)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype))
        results.append([out.detach()] + [t.grad for t in leaves if t is not None])
    return results


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_groups_dilation_stride_padding_equal_torch(channels_last):
    gen = torch.Generator().manual_seed(0)
    layouts = [(4, 4, 4), (6, 3, 9), (4, 1, 5), (4, 2, 4), (3, 3, 6)]  # (C, groups, F): depthwise, grouped, dense
    for (c, groups, f), k, s, p, d in itertools.product(layouts, [1, 3], [1, 2], [0, 2], [1, 2]):
        x = torch.randn(2, c, 7, 6, generator=gen, dtype=torch.float64)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(f, c // groups, k, k, generator=gen, dtype=torch.float64)
        for b in (torch.randn(f, generator=gen, dtype=torch.float64), None):
            ours, theirs = _both(x, w, b, stride=s, padding=p, dilation=d, groups=groups)
            for got, want in zip(ours, theirs):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"{(c, groups, f, k, s, p, d)}")


def test_depthwise_has_its_own_function_and_keeps_the_memory_format():
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    y = co.conv2d(x, w, None, 1, 1, groups=8)
    assert type(y.grad_fn).__name__ == "DepthwiseConv2dFunctionBackward"
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    y = co.conv2d(x.detach().contiguous(), w, None, 2, 1, groups=8)
    assert y.is_contiguous()
    # a channel multiplier (out = 2 * in) is grouped convolution, the im2col path
    assert type(co.conv2d(x, torch.randn(16, 1, 3, 3), groups=8).grad_fn).__name__ == "Conv2dFunctionBackward"


def test_depthwise_batch_chunks_give_the_same_result(monkeypatch):
    """The tap loops run a batch chunk at a time (to stay in cache); chunks of one image agree."""
    from customops import conv

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 6, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    whole = _both(x, w, b, stride=2, padding=1, groups=3)[0]
    monkeypatch.setattr(conv, "_CHUNK_BYTES", 1)  # one batch entry per chunk
    for got, want in zip(_both(x, w, b, stride=2, padding=1, groups=3)[0], whole):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)


def test_padding_strings():
    x, w = torch.randn(1, 2, 7, 6, dtype=torch.float64), torch.randn(4, 2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(co.conv2d(x, w, padding="same"), F.conv2d(x, w, padding="same"))
    torch.testing.assert_close(co.conv2d(x, w, padding="valid"), F.conv2d(x, w, padding="valid"))
    assert co.conv2d(x, w, padding="same", dilation=2).shape[2:] == x.shape[2:]


def test_module_has_torch_nn_arguments_and_state_dict():
    ours = co.Conv2d(4, 8, 3, 2, 1, 2, 2, bias=False)
    theirs = torch.nn.Conv2d(4, 8, 3, 2, 1, 2, 2, bias=False)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(ours(x), theirs(x))
    assert "dilation=(2, 2), groups=2" in repr(ours)
    with pytest.raises(ValueError, match="Conv2d: padding_mode='reflect' is not supported"):
        co.Conv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="Conv2d: groups=3"):
        co.Conv2d(4, 6, 3, groups=3)
