"""Checking and benchmarking support, kept apart from the layers.

For your own ops (a tutorial: docs/tutorial.md):

- `check_function(fn, args, twin=...)`: every check of a callable applying a
  `torch.autograd.Function`, from one sample call (the shape of `torch.library.opcheck`);
- `OpSpec`, `SampleInput`, `ErrorInput`, `tensor_maker`, `transposed`, `register`, `specs_in`: the spec format
  (customops.testing.registry), `check_spec(spec)` its checks;
- `parametrize(specs)`: the specs as parametrized tests of a pytest suite;
- `benchmark_function(fn, twin, args)`: forward + backward time against the twin, as
  `python -m customops.bench` times customops' own ops.

For customops' own ops: the registry (`specs.py`, `specs_captioning.py`, `specs_attention.py`, `specs_cnn.py`),
the native twins (`twins.py`), the literal reference operations (`reference.py`) and the
`check` and `bench` commands.
"""

from .bench import benchmark_function
from .checks import CHECKS, SPEC_CHECKS, check_function, check_spec
from .registry import ErrorInput, OpSpec, SampleInput, register, specs_in, tensor_maker, transposed
from .suite import OpCheck, parametrize

__all__ = [
    "CHECKS",
    "SPEC_CHECKS",
    "check_function",
    "check_spec",
    "ErrorInput",
    "OpSpec",
    "SampleInput",
    "register",
    "specs_in",
    "tensor_maker",
    "transposed",
    "OpCheck",
    "parametrize",
    "benchmark_function",
]
