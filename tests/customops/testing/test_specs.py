"""customops/testing/specs*.py, the registry of every op: each op passes every check on its
samples (gradcheck, gradgradcheck, batched gradients, parity with its twin in float64, float32,
float16 and bfloat16, torch.func, autocast, compile, export, no mutation, no ctx stash,
determinism), refuses each of its bad inputs with a message naming it, and on a GPU the same."""

from __future__ import annotations

import pytest
import torch

from customops.testing import CHECKS, parametrize
from customops.testing.registry import check_error_input
from customops.testing.specs import ALL_SPECS, SPECS
from customops.testing.specs_attention import SPECS as ATTENTION_SPECS
from customops.testing.specs_captioning import SPECS as CAPTIONING_SPECS
from customops.testing.specs_cnn import SPECS as CNN_SPECS

ALL_IDS = [s.name for s in ALL_SPECS]
CUDA_CHECKS = ["gradcheck", "parity", "torch_func", "autocast", "compile"]


@parametrize(ALL_SPECS, CHECKS)
def test_every_op_passes_every_check(op_check):
    op_check()


@parametrize(ALL_SPECS, CUDA_CHECKS, device="cuda")
def test_every_op_passes_on_cuda(op_check):
    op_check()


ERRORS = [(spec, error) for spec in ALL_SPECS for error in spec.errors("cpu")]
ERROR_IDS = [f"{spec.name}-{sum(1 for s, _ in ERRORS[:i] if s is spec)}" for i, (spec, _) in enumerate(ERRORS)]


@pytest.mark.parametrize("spec,error", ERRORS, ids=ERROR_IDS)
def test_bad_input_is_a_clear_error(spec, error):
    """The error's type and message pattern, the message starting with the op's name."""
    check_error_input(spec, error)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_every_op_has_at_least_four_bad_inputs(spec):
    assert len(spec.errors("cpu")) >= 4, spec.name


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_samples_include_a_non_contiguous_input(spec):
    samples = spec.samples("cpu", torch.float64)
    assert any(not t.is_contiguous() for s in samples for t in s.tensors())


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_samples_are_reproducible_and_seeds_keep_the_shapes(spec):
    """The torch.func check stacks two seeds' samples; each seed gives the same values again."""
    a, again, b = (spec.samples("cpu", torch.float64, seed=s) for s in (0, 0, 1))
    for x, y, z in zip(a, again, b):
        for tx, ty, tz in zip(x.tensors(), y.tensors(), z.tensors()):
            assert torch.equal(tx, ty) and tx.shape == tz.shape


def test_registry_lists_every_op_once():
    names = [s.name for s in ALL_SPECS]
    assert len(names) == len(set(names)) == len(SPECS) + len(CAPTIONING_SPECS) + len(ATTENTION_SPECS) + len(CNN_SPECS)
