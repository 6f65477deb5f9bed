"""customops/testing/suite.py: parametrize turns specs into one test item per (op, check)."""

from __future__ import annotations

import pytest
import torch

from customops.testing import OpCheck, OpSpec, SampleInput, parametrize


def _samples(device, dtype, requires_grad):
    yield SampleInput((torch.randn(3, dtype=dtype, device=device).requires_grad_(requires_grad),))


class _Twice(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * 3  # wrong on purpose


GOOD = OpSpec("twice", lambda x: x * 2, sample_inputs=_samples, twin=lambda x: x * 2)
BAD = OpSpec("bad_twice", _Twice.apply, sample_inputs=_samples, twin=lambda x: x * 2)


def test_parametrize_gives_one_item_per_op_and_check():
    mark = parametrize([GOOD, BAD], ["gradcheck", "parity"])
    argname, params = mark.args
    assert argname == "op_check"
    assert [p.id for p in params][:3] == ["twice-gradcheck", "twice-parity_float64", "twice-parity_float32"]
    assert len(params) == 2 * 6  # gradcheck, four parity dtypes, parity_cuda
    assert all(isinstance(p.values[0], OpCheck) for p in params)


def test_cuda_items_are_marked_and_skip_without_a_device():
    mark = parametrize([GOOD], ["gradcheck"], device="cuda")
    (param,) = mark.args[1]
    names = {m.name for m in param.marks}
    assert names == {"cuda", "skipif"}


def test_an_item_passes_skips_or_fails_with_the_checks_message():
    OpCheck(GOOD, "gradcheck")()
    with pytest.raises(pytest.skip.Exception, match="twice-saved_tensors: the output's graph holds no"):
        OpCheck(GOOD, "saved_tensors")()  # a plain torch expression applies no Function
    with pytest.raises(pytest.fail.Exception, match="1.5 times the numerical gradient"):
        OpCheck(BAD, "gradcheck")()
