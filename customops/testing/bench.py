"""Speed of each custom op against its native torch twin: forward + backward, same process.

    python -m customops.bench [--device cpu|cuda] [--repeats 15] [--min-time 0.05]

Custom and native runs are interleaved (so drifts in machine load hit both alike); each
repeat times a batch of calls; the table reports the median time per call and the ratio
custom / native, then the geometric mean of the ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .registry import BenchCase
from .specs import ALL_BENCH_CASES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_batch(fn: Callable[[], Any], calls: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def measure(case: BenchCase, device: torch.device, repeats: int, min_time: float) -> dict[str, float]:
    """Median seconds per forward+backward call of the custom op and of its twin."""
    run_custom, run_twin = case.setup(device)
    for fn in (run_custom, run_twin):  # warm-up: allocator, kernels, caches
        for _ in range(3):
            fn()
    # Calls per batch so that one batch lasts about min_time.
    one = max(_time_batch(run_custom, 3, device), _time_batch(run_twin, 3, device), 1e-7)
    calls = max(1, int(min_time / one))
    custom, twin = [], []
    for r in range(repeats):
        # Alternate which one goes first, so neither always runs on a warmer cache.
        pair_ = [(custom, run_custom), (twin, run_twin)]
        for times, fn in pair_ if r % 2 == 0 else pair_[::-1]:
            times.append(_time_batch(fn, calls, device))
    c, t = statistics.median(custom), statistics.median(twin)
    return {"custom_ms": c * 1e3, "native_ms": t * 1e3, "ratio": c / t}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per op and twin (default 15)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timed batch (default 0.05)")
    parser.add_argument("--only", default=None, help="run only rows whose name contains this text")
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'op (forward+backward)':<46} {'custom ms':>10} {'native ms':>10} {'ratio':>7}")
    rows = []
    for case in ALL_BENCH_CASES:
        if args.only and args.only not in case.name:
            continue
        row = {"name": case.name, **measure(case, device, args.repeats, args.min_time)}
        rows.append(row)
        print(f"{row['name']:<46} {row['custom_ms']:>10.3f} {row['native_ms']:>10.3f} {row['ratio']:>6.2f}x", flush=True)
    geomean = math.exp(statistics.fmean(math.log(r["ratio"]) for r in rows)) if rows else float("nan")
    print(f"{'geometric mean of ratios':<68} {geomean:>6.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "rows": rows, "geomean": geomean}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
