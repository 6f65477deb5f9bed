"""co.group_norm and co.GroupNorm (customops/norm.py): its relation to layer and instance norm,
torch parity over layouts, mixed precision, the module's state_dict, and clear errors. (layer_norm's
tests are in tests/test_attention_ops.py; the registry checks run for both in tests/test_ops.py.)"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import customops as co

f64 = torch.float64


def test_one_group_is_layer_norm_and_c_groups_instance_norm():
    x = torch.randn(2, 6, 3, 4, dtype=f64)
    torch.testing.assert_close(co.group_norm(x, 1), F.layer_norm(x, x.shape[1:]))
    torch.testing.assert_close(co.group_norm(x, 6), F.instance_norm(x))


def test_hand_computed():
    x = torch.tensor([[[1.0], [3.0], [4.0], [8.0]]])  # (N=1, C=4, L=1), 2 groups of 2 channels
    y = co.group_norm(x, 2, torch.tensor([1.0, 2.0, 1.0, 3.0]), torch.tensor([0.0, 0.0, 5.0, 0.0]), eps=0.0)
    # group 1: mean 2, variance 1; group 2: mean 6, variance 4 -> xhat = -1, 1 in both; then weight and bias
    assert torch.equal(y[0, :, 0], torch.tensor([-1.0, 2.0, 4.0, 3.0]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_equals_torch(channels_last):
    gen = torch.Generator().manual_seed(0)
    for groups, affine, shape in itertools.product([1, 2, 3, 6], [True, False], [(3, 6), (2, 6, 5), (2, 6, 4, 3)]):
        x = torch.randn(shape, generator=gen, dtype=f64) * 2 + 1
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(6, generator=gen, dtype=f64) if affine else None
        b = torch.randn(6, generator=gen, dtype=f64) if affine else None
        results = []
        for fn in (co.group_norm, F.group_norm):
            leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
            y = fn(leaves[0], groups, leaves[1], leaves[2], 1e-3)
            y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=f64))
            results.append([y.detach()] + [t.grad for t in leaves if t is not None])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        if channels_last and x.dim() == 4:
            assert results[0][0].is_contiguous(memory_format=torch.channels_last)


def test_half_precision_input_with_float32_parameters():
    x = torch.randn(2, 4, 3, 3).bfloat16().requires_grad_()
    w, b = torch.ones(4), torch.zeros(4)
    y = co.group_norm(x, 2, w, b)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.group_norm(x.float(), 2, w, b), rtol=0, atol=3e-2)
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_module_state_dict_loads_both_ways():
    ours, theirs = co.GroupNorm(2, 4), nn.GroupNorm(2, 4)
    with torch.no_grad():
        ours.weight.uniform_(), ours.bias.uniform_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(ours(x), theirs(x))
    ours.load_state_dict(nn.GroupNorm(2, 4).state_dict())
    assert torch.equal(ours.weight, torch.ones(4))
    assert co.GroupNorm(2, 4, affine=False).weight is None
    with pytest.raises(ValueError, match="GroupNorm: num_groups=3"):
        co.GroupNorm(3, 4)


x4 = torch.randn(2, 6, 3, 3)
BAD_INPUTS = [
    ("group_norm", lambda: co.group_norm(x4, 4), ValueError, "must divide the 6 channels"),
    ("group_norm", lambda: co.group_norm(x4, 0), ValueError, "positive int"),
    ("group_norm", lambda: co.group_norm(torch.randn(6), 2), ValueError, "at least 2 dimensions"),
    ("group_norm", lambda: co.group_norm(x4, 2, torch.ones(4)), ValueError, r"weight must have shape \(6,\)"),
    ("group_norm", lambda: co.group_norm(x4, 2, eps=-1), ValueError, "eps"),
    ("group_norm", lambda: co.group_norm(x4, 2, torch.ones(6, dtype=f64)), TypeError, "mixed"),
    ("group_norm", lambda: co.group_norm(torch.randn(0, 6), 2), ValueError, "empty"),
]


@pytest.mark.parametrize("op,call,error,match", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(op, call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert str(info.value).startswith(op + ":")


def test_at_least_four_bad_input_cases():
    assert len(BAD_INPUTS) >= 4
