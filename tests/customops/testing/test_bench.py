"""customops/testing/bench.py: benchmark_function times an op against its twin (timings are not
asserted: only that both sides ran and what is refused)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import customops as co
from customops.testing import benchmark_function


def test_benchmark_function_times_both_sides():
    calls = {"custom": 0}

    def counted_relu(x):
        calls["custom"] += 1
        return co.relu(x)

    x = torch.randn(16, 8, requires_grad=True)
    result = benchmark_function(counted_relu, F.relu, (x,), repeats=2, min_time=1e-3)
    assert set(result) == {"custom_ms", "native_ms", "ratio"}
    assert result["custom_ms"] > 0 and result["native_ms"] > 0
    assert result["ratio"] == pytest.approx(result["custom_ms"] / result["native_ms"])
    assert calls["custom"] >= 2 + 3 + 3  # the timed batches, the warm-up, the calibration
    assert x.grad is None  # gradients are returned by autograd.grad, never accumulated


def test_benchmark_function_passes_keyword_arguments():
    x, w = torch.randn(4, 6, requires_grad=True), torch.randn(6, requires_grad=True)

    def twin(x, weight):
        return F.layer_norm(x, (6,), weight)

    result = benchmark_function(co.layer_norm, twin, (x,), {"weight": w}, repeats=1, min_time=1e-3)
    assert result["custom_ms"] > 0


def test_benchmark_function_refuses_what_it_cannot_time():
    with pytest.raises(ValueError, match="no argument has requires_grad=True"):
        benchmark_function(co.relu, F.relu, (torch.randn(3),))
    with pytest.raises(ValueError, match="args hold no tensor"):
        benchmark_function(co.relu, F.relu, (1.0,))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        benchmark_function(co.relu, F.relu, (torch.randn(3, requires_grad=True),), repeats=0)


def test_trunk_rows_time_both_trunks():
    """The converted MobileNetV2 trunk against torchvision's, on tiny images (timings not asserted)."""
    from customops.testing.bench import trunk_rows

    rows = trunk_rows(torch.device("cpu"), repeats=1, size=32, inference_batch=2, train_batch=2)
    assert [r["name"] for r in rows] == [
        "MobileNetV2 trunk inference, batch 2, 32x32",
        "MobileNetV2 trunk fine-tune step, batch 2, 32x32",
    ]
    for r in rows:
        assert r["custom_ms"] > 0 and r["native_ms"] > 0
        assert r["custom_images_per_s"] == pytest.approx(2 / (r["custom_ms"] / 1e3))


def test_cpu_clock_needs_one_thread(capsys):
    from customops.testing import bench

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(SystemExit):
            bench.main(["--clock", "cpu", "--no-compile", "--only", "softmax_loss 128x10"])
        assert "OMP_NUM_THREADS=1" in capsys.readouterr().err
        torch.set_num_threads(1)
        assert (
            bench.main(
                [
                    "--clock",
                    "cpu",
                    "--no-compile",
                    "--repeats",
                    "1",
                    "--min-time",
                    "0.001",
                    "--only",
                    "softmax_loss 128x10",
                ]
            )
            == 0
        )
        assert "softmax_loss 128x10" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
        bench._clock = bench._CLOCK["wall"]
