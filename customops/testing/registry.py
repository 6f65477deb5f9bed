"""The op spec format: one record per op, read by `python -m customops.check`, the test suite
(`customops.testing.parametrize`) and `customops.testing.check_spec`, in the manner of PyTorch's
OpInfo (`torch/testing/_internal/opinfo/core.py`).

A spec names the op, its native twin, how to make inputs for it and which bad inputs it must refuse:

    import torch, torch.nn.functional as F
    import customops as co
    from customops.testing import ErrorInput, OpSpec, SampleInput, tensor_maker

    def sample_relu(device, dtype, requires_grad):
        make = tensor_maker(device, dtype, requires_grad)  # torch.testing.make_tensor, values in [-1, 1]
        yield SampleInput((make(4, 5),))
        yield SampleInput((make(6, 5, noncontiguous=True),), desc="non-contiguous x")

    def error_relu(device):
        yield ErrorInput(SampleInput(([1.0, -1.0],)), TypeError, "must be a torch.Tensor")

    SPECS = [OpSpec("relu", co.relu, sample_inputs=sample_relu, error_inputs=error_relu, twin=F.relu, autocast="same")]

Fields of `OpSpec` (all but `name` and `op` are keyword-only):

- `name`: the op's name. Error messages of the op start with it (`"relu: x must be ..."`).
- `op`: the callable under test; it applies one or more `torch.autograd.Function`s. It returns a
  tensor or a tuple of tensors.
- `sample_inputs(device, dtype, requires_grad)`: an iterable of `SampleInput(args, kwargs, desc)`,
  each one call `op(*args, **kwargs)`. Build the tensors with `torch.testing.make_tensor` (or
  `tensor_maker`, the same with the spec's settings bound); the floating tensors the op is
  differentiated by get `requires_grad=requires_grad`, integer ids and boolean masks never do.
  `transposed(make, *shape)` gives another kind of non-contiguous tensor (a permuted view).
  The checks seed torch's global generator before each call (make_tensor draws from it), so
  the samples are reproducible; calls with different seeds must give the same shapes (the
  torch.func check stacks two of them). Include at least one non-contiguous input, and keep
  values away from kinks and ties (finite differences step by 1e-6). `dtype` is float64 for
  the gradient checks, float32, float16 and bfloat16 for the others: a spec may add samples for
  some dtypes only (say, values that overflow float16 unless the op is careful).
- `twin`: the same computation from torch built-ins, with the same signature (`F.relu`), the
  reference of the parity checks; None skips them.
- `error_inputs(device)`: an iterable of `ErrorInput(sample, error_type, error_regex)`: the call
  must raise `error_type` (or a subclass) with a message that starts with `"<name>:"` and
  matches `error_regex` (`re.search`).
- `autocast`: the op's dtype under `torch.autocast`, as torch's own layers: `"lower"` (the autocast
  dtype: matrix products, convolutions), `"fp32"` (losses, normalisations) or `"same"` (its input's
  dtype: elementwise ops, lookups); None (not declared) takes the twin's behaviour under autocast
  when there is a twin, and checks only values and gradient dtypes when there is none.
- `random`: the op draws random numbers (dropout). Its samples must still make repeated calls
  agree (seed a generator per call); torch.func transforms run with `randomness="same"`, and as
  compiled and exported programs draw other numbers than eager ones, the compile and export
  checks verify that the gradient routes through that program's own mask (ops of the form
  `out = x * mask`).

A module of specs exposes them as a list named `SPECS`, or registers each with the decorator:

    @customops.testing.register(sample_inputs=sample_relu, twin=F.relu)
    def my_relu(x): ...

`python -m customops.check --module mypkg.myops` checks either kind (`specs_in(module)`).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

import torch
from torch.testing import make_tensor

AUTOCAST_POLICIES = ("lower", "fp32", "same")


@dataclass(frozen=True)
class SampleInput:
    """One call of an op, `op(*args, **kwargs)`; `desc` says what it exercises (shown in failures)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    desc: str = ""

    def __post_init__(self):
        if not isinstance(self.args, tuple):
            raise TypeError(f"SampleInput: args must be a tuple, got {type(self.args).__name__} (write (x,) for one)")

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor argument, positional then keyword."""
        return [a for a in (*self.args, *self.kwargs.values()) if isinstance(a, torch.Tensor)]


@dataclass(frozen=True)
class ErrorInput:
    """A bad call: `op(*sample.args, **sample.kwargs)` must raise `error_type` matching `error_regex`."""

    sample: SampleInput
    error_type: type[BaseException]
    error_regex: str


SampleInputs = Callable[[torch.device, torch.dtype, bool], Iterable[SampleInput]]
ErrorInputs = Callable[[torch.device], Iterable[ErrorInput]]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generators seeded for the block, and restored after it (the caller's draws go on unchanged)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class OpSpec:
    """One op: its name, the callable, its native twin, its sample and error inputs, its autocast policy."""

    name: str
    op: Callable[..., Any]
    _: KW_ONLY
    sample_inputs: SampleInputs
    twin: Callable[..., Any] | None = None
    error_inputs: ErrorInputs | None = None
    autocast: str | None = None
    random: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"OpSpec: name must be a non-empty str, got {self.name!r}")
        for what in ("op", "sample_inputs"):
            if not callable(getattr(self, what)):
                raise TypeError(f"OpSpec {self.name!r}: {what} must be callable")
        for what in ("twin", "error_inputs"):
            if getattr(self, what) is not None and not callable(getattr(self, what)):
                raise TypeError(f"OpSpec {self.name!r}: {what} must be callable or None")
        if self.autocast is not None and self.autocast not in AUTOCAST_POLICIES:
            raise ValueError(f"OpSpec {self.name!r}: autocast must be one of {AUTOCAST_POLICIES} or None")

    def samples(
        self, device: torch.device | str, dtype: torch.dtype, requires_grad: bool = True, seed: int = 0
    ) -> list[SampleInput]:
        """The sample inputs for this device and dtype, made with torch's generators seeded by `seed`."""
        with seeded(seed):
            samples = list(self.sample_inputs(torch.device(device), dtype, requires_grad))
        for s in samples:
            if not isinstance(s, SampleInput):
                raise TypeError(f"OpSpec {self.name!r}: sample_inputs must yield SampleInput, got {type(s).__name__}")
        return samples

    def errors(self, device: torch.device | str) -> list[ErrorInput]:
        """The error inputs for this device (none without `error_inputs`)."""
        if self.error_inputs is None:
            return []
        with seeded(0):
            return list(self.error_inputs(torch.device(device)))


def tensor_maker(
    device: torch.device | str,
    dtype: torch.dtype,
    requires_grad: bool = False,
    low: float = -1.0,
    high: float = 1.0,
) -> Callable[..., torch.Tensor]:
    """`torch.testing.make_tensor` with these settings bound; keywords given to a call override them:
    `make(3, 4)`, `make(3, 4, noncontiguous=True)`, `make(5, requires_grad=False)`, `make(2, low=0.1)`."""
    return partial(make_tensor, device=device, dtype=dtype, requires_grad=requires_grad, low=low, high=high)


def transposed(make: Callable[..., torch.Tensor], *shape: int) -> torch.Tensor:
    """A tensor of `shape` that is the transpose of a contiguous one (every dimension reversed):
    non-contiguous in another way than make_tensor's `noncontiguous=True` (which skips elements).
    `make` is a tensor_maker; the result requires grad as make does."""
    requires_grad = make.keywords.get("requires_grad", False) if isinstance(make, partial) else False
    base = make(*reversed(shape), requires_grad=False)
    return base.permute(*reversed(range(len(shape)))).requires_grad_(requires_grad)


def check_error_input(spec: OpSpec, error: ErrorInput) -> None:
    """Raises AssertionError unless the bad call raises as `error` says, its message starting with the op's name."""
    sample = error.sample
    what = f"{spec.name} error input ({sample.desc or error.error_regex!r})"
    try:
        spec.op(*sample.args, **sample.kwargs)
    except error.error_type as err:
        message = str(err)
        if not re.search(error.error_regex, message):
            raise AssertionError(f"{what}: the message {message!r} does not match {error.error_regex!r}") from err
        if not message.startswith(f"{spec.name}:"):
            raise AssertionError(f"{what}: the message {message!r} does not start with {spec.name + ':'!r}") from err
    except Exception as err:
        raise AssertionError(
            f"{what}: raised {type(err).__name__} ({err}), expected {error.error_type.__name__}"
        ) from err
    else:
        raise AssertionError(f"{what}: no error raised, expected {error.error_type.__name__}")


# ---- registration ------------------------------------------------------------------------

_REGISTERED: dict[str, list[OpSpec]] = {}


def register(
    *,
    sample_inputs: SampleInputs,
    twin: Callable[..., Any] | None = None,
    name: str | None = None,
    error_inputs: ErrorInputs | None = None,
    autocast: str | None = None,
    random: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: records an OpSpec for the decorated op (named after it unless `name` is given)
    in its module's list, which `specs_in(module)` and `--module` read; returns the op unchanged."""

    def decorate(op: Callable[..., Any]) -> Callable[..., Any]:
        spec = OpSpec(
            name or op.__name__,
            op,
            sample_inputs=sample_inputs,
            twin=twin,
            error_inputs=error_inputs,
            autocast=autocast,
            random=random,
        )
        specs = _REGISTERED.setdefault(op.__module__, [])
        specs[:] = [s for s in specs if s.name != spec.name]  # a reloaded module registers afresh
        specs.append(spec)
        return op

    return decorate


def specs_in(module: ModuleType | str) -> list[OpSpec]:
    """The specs a module offers: its `SPECS` list, then those its ops registered with `@register`."""
    if isinstance(module, str):
        import importlib

        module = importlib.import_module(module)
    listed = getattr(module, "SPECS", [])
    if not isinstance(listed, (list, tuple)) or not all(isinstance(s, OpSpec) for s in listed):
        raise TypeError(f"{module.__name__}.SPECS must be a list of customops.testing.OpSpec")
    specs = [*listed, *(s for s in _REGISTERED.get(module.__name__, []) if s not in listed)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{module.__name__}: more than one spec named {duplicates}")
    return specs


def argument_names(fn: Callable[..., Any]) -> list[str]:
    """The names of fn's positional parameters (empty when its signature says nothing, as for Function.apply)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    names = []
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return names


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark: forward+backward of the custom op and of its twin."""

    name: str
    # device -> (run_custom, run_twin): twins.FwdBwd callables, each one forward+backward
    # (their .compiled() gives the torch.compile version).
    setup: Callable[[torch.device], tuple[Callable[[], Any], Callable[[], Any]]]
