"""What `python -m customops.check` and `python -m customops.bench` iterate over.

Each op family contributes a list of `OpSpec` (correctness) and `BenchCase`
(speed against its native twin); `customops.specs` gathers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Case = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class OpSpec:
    """One custom op, its native twin, and how to make random inputs for it."""

    name: str
    op: Callable[..., torch.Tensor]
    # The same computation from torch built-ins, same signature (the reference for parity).
    twin: Callable[..., torch.Tensor]
    # (dtype, device, generator) -> several (args, kwargs). Floating tensors with
    # requires_grad=True are the differentiable inputs; values avoid kinks and ties.
    make_cases: Callable[[torch.dtype, torch.device, torch.Generator], list[Case]]
    # Its autocast policy, as torch's own layers: "lower" (runs in the autocast dtype: matrix
    # products, convolutions), "fp32" (losses) or "same" (keeps its input's dtype).
    autocast: str = "same"
    # False when backward is once_differentiable (the op's module says why).
    double_backward: bool = True
    # True for ops that draw random numbers (dropout): each case seeds its own generator, so
    # repeated calls agree; torch.func checks pass randomness="same" to vmap, and the compile
    # check compares the gradient with the output's own mask (compiled kernels draw other numbers).
    random: bool = False


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark: forward+backward of the custom op and of its twin."""

    name: str
    # device -> (run_custom, run_twin): twins.FwdBwd callables, each one forward+backward
    # (their .compiled() gives the torch.compile version).
    setup: Callable[[torch.device], tuple[Callable[[], Any], Callable[[], Any]]]
