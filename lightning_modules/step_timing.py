"""Side-by-side timing of training steps: a customops network against its torch.nn twin, eager and compiled.

A training step is what the Lightning modules do per batch: zero the gradients, the loss (under autocast
when the precision is mixed), backward, gradient clipping to a norm, an Adam step. Both networks get
the same batches and the same optimizer settings; their steps are interleaved (custom's steps, then the
twin's, repeat after repeat) so that drifts in the machine's load hit both alike. Warm-up steps (with
``compiled``, the first one compiles) are excluded; each repeat's time is the mean of its steps, and
the ratio reported is median(custom) / median(twin), beside min(custom) / min(twin).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

Batch = Sequence[torch.Tensor]
IMPLS = ("custom", "torch")
# Lightning's mixed precisions as an autocast dtype.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(
    model: nn.Module,
    lr: float,
    clip: float | None,
    compiled: bool,
    precision: str,
    device: torch.device,
) -> Callable[[Batch], None]:
    """One optimisation step of `model` (whose forward returns the loss) on a batch of tensors."""
    if precision not in ("32-true", "32", *AUTOCAST):
        raise ValueError(f"training_step: precision must be 32-true, bf16-mixed or 16-mixed, got {precision!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    loss_of = torch.compile(model) if compiled else model
    dtype = AUTOCAST.get(precision)
    model.train()

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with autocast:
            loss = loss_of(*batch)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()

    return step


def _mean_step_s(step: Callable[[Batch], None], batches: Sequence[Batch], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    _sync(device)
    return (time.perf_counter() - start) / len(batches)


def compare(
    steps: dict[str, Callable[[Batch], None]],
    batches: Sequence[Batch],
    repeats: int,
    warmup: int,
    device: torch.device,
    echo: Callable[[str], Any] = print,
    label: str = "",
) -> dict[str, Any]:
    """Time ``steps["custom"]`` against ``steps["torch"]`` on the same `batches`, interleaved.

    Returns the seconds of each side's warm-up (the first compiles, with a compiled step), the mean
    seconds per step of each repeat, their medians and minima, and the two ratios custom / torch.
    """
    if set(steps) != set(IMPLS):
        raise ValueError(f"compare: steps must be {IMPLS}, got {sorted(steps)}")
    if repeats < 1 or warmup < 1 or not batches:
        raise ValueError(f"compare: needs repeats >= 1, warmup >= 1 and batches, got {repeats}, {warmup}")
    warmup_s = {}
    for impl in IMPLS:
        _sync(device)
        start = time.perf_counter()
        for i in range(warmup):
            steps[impl](batches[i % len(batches)])
        _sync(device)
        warmup_s[impl] = time.perf_counter() - start
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for _ in range(repeats):
        for impl in IMPLS:  # interleaved
            times[impl].append(_mean_step_s(steps[impl], batches, device))
            echo(f"[{label}] {impl}: {1000 * times[impl][-1]:.1f} ms/step")
    result = summary(times)
    echo(f"[{label}] custom / torch = {ratios_text(result)}")
    return {"warmup_s": warmup_s, "step_s": times, **result}


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    """Each side's median and minimum of `times` (seconds per repeat) and the two ratios custom / torch."""
    median = {impl: statistics.median(times[impl]) for impl in IMPLS}
    minimum = {impl: min(times[impl]) for impl in IMPLS}
    return {
        "median_custom_s": median["custom"],
        "median_torch_s": median["torch"],
        "ratio": median["custom"] / median["torch"],
        "min_custom_s": minimum["custom"],
        "min_torch_s": minimum["torch"],
        "ratio_min": minimum["custom"] / minimum["torch"],
    }


def ratios_text(result: dict[str, float]) -> str:
    """The console form of a summary's two ratios."""
    return f"{result['ratio']:.3f} (medians), {result['ratio_min']:.3f} (minima)"
