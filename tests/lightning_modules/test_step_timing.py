"""step_timing: the training step (loss, backward, clipping, Adam), eager and compiled; the interleaved
comparison (warm-up excluded, one sample per repeat, ratios of medians and of minima)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules import step_timing


class _Quadratic(nn.Module):
    """The loss (x w - y)^2 summed, of one (2, 1) weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x @ self.w - y) ** 2).sum()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 1)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_training_step_is_an_adam_step_on_the_clipped_gradient(compiled):
    model = _Quadratic()
    step = step_timing.training_step(model, lr=0.1, clip=1.0, compiled=compiled, precision="32-true", device="cpu")
    step(_batch())
    # Adam's first step moves every weight by lr against the sign of its gradient (here positive), whatever
    # the clipping did to its size.
    torch.testing.assert_close(model.w.detach(), torch.full((2, 1), 0.9))
    reference = _Quadratic()
    x, y = _batch()
    reference(x, y).backward()
    step(_batch())
    assert model.w.grad is not None and model.w.grad.norm() <= 1.0 + 1e-6  # clipped to the norm
    assert reference.w.grad.norm() > 1.0


def test_mixed_precision_runs_the_loss_under_autocast_and_keeps_float32_weights():
    seen = []

    class _Spy(_Quadratic):
        def forward(self, x, y):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward(x, y)

    model = _Spy()
    step_timing.training_step(model, 0.1, None, False, "bf16-mixed", torch.device("cpu"))(_batch())
    step_timing.training_step(model, 0.1, None, False, "32-true", torch.device("cpu"))(_batch())
    assert seen == [True, False] and model.w.dtype == torch.float32
    with pytest.raises(ValueError, match="training_step: precision must be"):
        step_timing.training_step(model, 0.1, None, False, "64-true", torch.device("cpu"))


def test_compare_interleaves_the_sides_and_excludes_the_warm_up(monkeypatch):
    """A fake clock that each step moves on: custom's steps take 3 s, torch's 2 s, but for its slow steps 6-7."""
    clock = {"now": 0.0}
    calls = []

    def custom(batch):
        calls.append(("custom", batch))
        clock["now"] += 3.0

    def torch_step(batch):
        calls.append(("torch", batch))
        slow = sum(impl == "torch" for impl, _ in calls) in (4, 5)  # its second timed repeat
        clock["now"] += 5.0 if slow else 2.0

    monkeypatch.setattr(step_timing.time, "perf_counter", lambda: clock["now"])
    steps = {"custom": custom, "torch": torch_step}
    result = step_timing.compare(steps, ["a", "b"], repeats=3, warmup=1, device=torch.device("cpu"), echo=print)
    assert calls[:2] == [("custom", "a"), ("torch", "a")]  # warm-up: one step of each, first
    order = [impl for impl, _ in calls[2:]]
    assert order == ["custom", "custom", "torch", "torch"] * 3  # then interleaved repeats of both batches
    assert [b for _, b in calls[2:]] == ["a", "b"] * 6
    assert result["warmup_s"] == {"custom": 3.0, "torch": 2.0}
    assert result["step_s"] == {"custom": [3.0, 3.0, 3.0], "torch": [2.0, 5.0, 2.0]}
    assert result["ratio"] == pytest.approx(3.0 / 2.0) and result["ratio_min"] == pytest.approx(3.0 / 2.0)
    assert result["median_torch_s"] == 2.0 and result["min_custom_s"] == 3.0


def test_compare_checks_its_arguments():
    noop = {"custom": lambda b: None, "torch": lambda b: None}
    with pytest.raises(ValueError, match="compare: steps must be"):
        step_timing.compare({"custom": noop["custom"]}, [1], 1, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="compare: needs repeats >= 1"):
        step_timing.compare(noop, [1], 0, 1, torch.device("cpu"))
