"""co.conv2d's dilation, groups and depthwise path (customops/conv.py): every option against
F.conv2d, memory formats, the depthwise Function, "same"/"valid" padding, the module and clear
errors. The registry checks run for conv2d, conv2d_grouped and conv2d_depthwise in tests/test_ops.py."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import customops as co


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


x1 = torch.randn(1, 4, 6, 6)
BAD_INPUTS = [
    ("conv2d", lambda: co.conv2d(x1, torch.randn(6, 2, 3, 3), groups=3), ValueError, "groups=3 must divide"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(6, 4, 3, 3), groups=2), ValueError, r"2 groups of 4"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(4, 1, 3, 3), groups=0), ValueError, "groups must be a positive int"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(4, 1, 3, 3), groups=4, dilation=0), ValueError, "dilation"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(2, 4, 3, 3), dilation=4), ValueError, r"dilated to \(9, 9\)"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(2, 4, 3, 3), stride=2, padding="same"), ValueError, "stride 1"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(2, 4, 2, 2), padding="same"), ValueError, "one side more"),
    ("conv2d", lambda: co.conv2d(x1, torch.randn(2, 4, 3, 3), padding="full"), TypeError, "padding"),
]


@pytest.mark.parametrize("op,call,error,match", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(op, call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert str(info.value).startswith(op + ":")


def test_the_new_options_have_at_least_four_bad_input_cases():
    assert len(BAD_INPUTS) >= 4
