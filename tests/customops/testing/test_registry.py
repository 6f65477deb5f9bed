"""customops/testing/registry.py: the spec format's own rules (SampleInput, OpSpec, register, specs_in,
check_error_input)."""

from __future__ import annotations

import types

import pytest
import torch

from customops.testing import ErrorInput, OpSpec, SampleInput, register, specs_in, tensor_maker, transposed
from customops.testing.registry import check_error_input


def _samples(device, dtype, requires_grad):
    yield SampleInput((tensor_maker(device, dtype, requires_grad)(3),))


def _strict_op(x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"strict: x must be a torch.Tensor, got {type(x).__name__}")
    return x


def test_sample_input_wants_a_tuple_and_lists_its_tensors():
    with pytest.raises(TypeError, match=r"args must be a tuple"):
        SampleInput(torch.zeros(2))
    a, b = torch.zeros(2), torch.ones(3)
    assert SampleInput((a, 2.0), {"w": b, "eps": 1e-5}).tensors() == [a, b]


def test_op_spec_checks_its_fields():
    with pytest.raises(ValueError, match="autocast must be one of"):
        OpSpec("x", _strict_op, sample_inputs=_samples, autocast="half")
    with pytest.raises(TypeError, match="sample_inputs must be callable"):
        OpSpec("x", _strict_op, sample_inputs=[1, 2])
    with pytest.raises(TypeError):
        OpSpec("x", _strict_op, _samples)  # sample_inputs is keyword-only


def test_samples_are_seeded_and_leave_the_global_generator_alone():
    spec = OpSpec("strict", _strict_op, sample_inputs=_samples)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = spec.samples("cpu", torch.float64), spec.samples("cpu", torch.float64)
    assert torch.equal(a[0].args[0], b[0].args[0]) and a[0].args[0].requires_grad
    assert torch.equal(torch.get_rng_state(), before)


def test_tensor_maker_and_transposed():
    make = tensor_maker("cpu", torch.float32, requires_grad=True)
    x = make(2, 3)
    assert x.dtype == torch.float32 and x.requires_grad and x.abs().max() <= 1
    t = transposed(make, 2, 3, 4)
    assert t.shape == (2, 3, 4) and not t.is_contiguous() and t.is_leaf and t.requires_grad


@pytest.mark.parametrize(
    "error,message",
    [
        (ErrorInput(SampleInput(([1.0],)), TypeError, "must be a torch.Tensor"), None),
        (ErrorInput(SampleInput(([1.0],)), ValueError, "must be"), "raised TypeError"),
        (ErrorInput(SampleInput(([1.0],)), TypeError, "must be a list"), "does not match"),
        (ErrorInput(SampleInput((torch.zeros(1),)), TypeError, "x"), "no error raised"),
    ],
    ids=["raises-as-said", "wrong-type", "wrong-message", "no-error"],
)
def test_check_error_input(error, message):
    spec = OpSpec("strict", _strict_op, sample_inputs=_samples)
    if message is None:
        check_error_input(spec, error)
        return
    with pytest.raises(AssertionError, match=message):
        check_error_input(spec, error)


def test_check_error_input_wants_the_op_name_first():
    spec = OpSpec("other_name", _strict_op, sample_inputs=_samples)
    with pytest.raises(AssertionError, match="does not start with 'other_name:'"):
        check_error_input(spec, ErrorInput(SampleInput(([1.0],)), TypeError, "torch.Tensor"))


def test_register_records_specs_per_module_and_specs_in_reads_them():
    module = types.ModuleType("my_registered_ops")

    def triple(x):
        return x * 3

    triple.__module__ = module.__name__
    assert register(sample_inputs=_samples)(triple) is triple
    register(sample_inputs=_samples, name="triple")(triple)  # registering again (a reload) replaces it
    assert [s.name for s in specs_in(module)] == ["triple"]
    module.SPECS = [OpSpec("triple", triple, sample_inputs=_samples, twin=lambda x: 3 * x)]  # another "triple"
    with pytest.raises(ValueError, match=r"more than one spec named \['triple'\]"):
        specs_in(module)
    module.SPECS = "not a list"
    with pytest.raises(TypeError, match="SPECS must be a list"):
        specs_in(module)
