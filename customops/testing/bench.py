"""Speed of each custom op against its native torch twin: forward + backward, same process.

    python -m customops.bench [--device cpu|cuda] [--repeats 15] [--min-time 0.05] [--no-compile]
    python -m customops.bench --trunk [--repeats 5]   # the converted MobileNetV2 trunk instead
    OMP_NUM_THREADS=1 python -m customops.bench --clock cpu   # CPU time, steadier on a shared machine

Two columns: eager (custom op / native twin) and compiled (the custom op under
torch.compile(fullgraph=True) / the native twin under torch.compile, inductor backend).
Custom and native runs are interleaved (so drifts in machine load hit both alike); each
repeat times a batch of calls; the table reports the median time per call and the ratio
custom / native, then the geometric mean of the ratios of each column.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .registry import BenchCase
from .specs import ALL_BENCH_CASES
from .twins import fwd_bwd


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The clock of the timings: wall time, or (--clock cpu, one CPU thread) the CPU time of this thread,
# which other processes on a busy machine disturb much less (a preempted thread's wait is not counted).
_CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = time.perf_counter


def _time_batch(fn: Callable[[], Any], calls: int, device: torch.device) -> float:
    _sync(device)
    start = _clock()
    for _ in range(calls):
        fn()
    _sync(device)
    return (_clock() - start) / calls


def measure(
    case: BenchCase, device: torch.device, repeats: int, min_time: float, compiled: bool = False
) -> dict[str, float]:
    """Median seconds per forward+backward call of the custom op and of its twin (both compiled if asked)."""
    run_custom, run_twin = case.setup(device)
    if compiled:
        torch._dynamo.reset()
        # Ours must compile whole; the native twins may hold modules dynamo splits (nn.RNN).
        run_custom, run_twin = run_custom.compiled(fullgraph=True), run_twin.compiled(fullgraph=False)
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


def benchmark_function(
    fn: Callable[..., torch.Tensor],
    twin: Callable[..., torch.Tensor],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    *,
    repeats: int = 15,
    min_time: float = 0.05,
    compiled: bool = False,
) -> dict[str, float]:
    """Time fn against its twin, forward + backward, as `python -m customops.bench` times each op.

    Both are called with the same `args` / `kwargs` (the tensors with requires_grad=True are those
    differentiated) and must return one tensor; the runs are interleaved, each repeat timing a
    batch of calls lasting about `min_time` seconds. compiled=True times both under
    torch.compile (inductor; fn with fullgraph=True). Returns the median milliseconds per call,
    custom_ms and native_ms, and their ratio (custom / native; below 1 is faster than the twin).
    """
    kwargs = dict(kwargs or {})
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if not tensors:
        raise ValueError("benchmark_function: args hold no tensor")
    wrt = tuple(t for t in tensors if t.requires_grad)
    if not wrt:
        raise ValueError("benchmark_function: no argument has requires_grad=True (nothing to differentiate)")
    if repeats < 1 or min_time <= 0:
        raise ValueError("benchmark_function: repeats must be >= 1 and min_time > 0")

    def bound(f):
        return (lambda *a: f(*a, **kwargs)) if kwargs else f

    case = BenchCase(
        getattr(fn, "__name__", "fn"), lambda device: (fwd_bwd(bound(fn), args, wrt), fwd_bwd(bound(twin), args, wrt))
    )
    return measure(case, tensors[0].device, repeats, min_time, compiled=compiled)


def _trunk_nets(device: torch.device):
    """torchvision's MobileNetV2 trunk (random weights: the time does not depend on them) and its
    customops.convert twin, in channels-last memory."""
    import torchvision

    from ..convert import convert

    torch.manual_seed(0)
    native = torchvision.models.mobilenet_v2(weights=None).features
    ours = convert(native)
    return [net.to(device, memory_format=torch.channels_last) for net in (native, ours)]


def _fine_tune_step(trunk: torch.nn.Module, head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-5):
    """One fine-tuning step as transfer learning takes it: every weight learns, BatchNorm statistics frozen
    (its layers in eval mode), global average pooling, a linear head, the loss, backward, an SGD step."""
    from ..losses import softmax_loss

    params = [p for p in (*trunk.parameters(), *head.parameters())]
    for p in params:
        p.grad = None
    loss = softmax_loss(head(trunk(x).mean((2, 3))), y)
    loss.backward()
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=-lr)


def trunk_rows(
    device: torch.device, repeats: int, size: int = 224, inference_batch: int = 64, train_batch: int = 32
) -> list[dict[str, float]]:
    """Images per second of the native and the converted MobileNetV2 trunk, interleaved: inference
    (batch 64, 224x224, channels-last, torch.inference_mode) and a fine-tuning step (batch 32)."""
    from ..modules import Linear

    native, ours = _trunk_nets(device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    x = (
        torch.randn(inference_batch, 3, size, size, generator=gen)
        .to(device)
        .contiguous(memory_format=torch.channels_last)
    )

    def infer(net):
        net.eval()
        with torch.inference_mode():
            net(x)

    xt = torch.randn(train_batch, 3, size, size, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    yt = torch.randint(0, 2, (train_batch,), generator=gen).to(device)
    heads = {id(net): Linear(1280, 2).to(device) for net in (native, ours)}

    def train(net):
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        _fine_tune_step(net, heads[id(net)], xt, yt)

    for name, run, images in (
        (f"MobileNetV2 trunk inference, batch {inference_batch}, {size}x{size}", infer, inference_batch),
        (f"MobileNetV2 trunk fine-tune step, batch {train_batch}, {size}x{size}", train, train_batch),
    ):
        for net in (ours, native):  # warm-up
            run(net)
        times = {"custom": [], "native": []}
        for r in range(repeats):
            order = [("custom", ours), ("native", native)]
            for key, net in order if r % 2 == 0 else order[::-1]:
                times[key].append(_time_batch(lambda net=net, run=run: run(net), 1, device))
        c, t = statistics.median(times["custom"]), statistics.median(times["native"])
        rows.append(
            {"name": name, "custom_ms": c * 1e3, "native_ms": t * 1e3, "ratio": c / t,
             "custom_images_per_s": images / c, "native_images_per_s": images / t}
        )  # fmt: skip
    return rows


def _geomean(ratios: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per op and twin (default 15)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timed batch (default 0.05)")
    parser.add_argument("--only", default=None, help="run only rows whose name contains this text")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled column (it compiles every row)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    parser.add_argument(
        "--clock",
        choices=sorted(_CLOCK),
        default="wall",
        help="wall time (default), or cpu: this thread's CPU time, for one CPU thread (OMP_NUM_THREADS=1) "
        "on a machine other jobs share",
    )
    parser.add_argument(
        "--trunk",
        action="store_true",
        help="time the customops.convert MobileNetV2 trunk against torchvision's instead of the op rows",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.repeats < 1 or args.min_time <= 0:
        parser.error("--repeats must be >= 1 and --min-time > 0")
    if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        parser.error("--clock cpu times one CPU thread: run with OMP_NUM_THREADS=1 on the cpu device")
    global _clock
    _clock = _CLOCK[args.clock]
    if args.trunk:
        return _trunk_main(args, device)

    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"{'op (forward+backward)':<46} {'custom ms':>10} {'native ms':>10} {'eager':>7} "
        f"{'compiled ms':>12} {'native ms':>10} {'compiled':>9}"
    )
    rows = []
    for case in ALL_BENCH_CASES:
        if args.only and args.only not in case.name:
            continue
        row = {"name": case.name, **measure(case, device, args.repeats, args.min_time)}
        line = f"{row['name']:<46} {row['custom_ms']:>10.3f} {row['native_ms']:>10.3f} {row['ratio']:>6.2f}x"
        if not args.no_compile:
            comp = measure(case, device, args.repeats, args.min_time, compiled=True)
            row.update(
                {
                    "compiled_custom_ms": comp["custom_ms"],
                    "compiled_native_ms": comp["native_ms"],
                    "compiled_ratio": comp["ratio"],
                }
            )
            line += f" {comp['custom_ms']:>12.3f} {comp['native_ms']:>10.3f} {comp['ratio']:>8.2f}x"
        rows.append(row)
        print(line, flush=True)
    geomean = _geomean([r["ratio"] for r in rows])
    compiled_geomean = None if args.no_compile else _geomean([r["compiled_ratio"] for r in rows])
    line = f"{'geometric mean of ratios':<68} {geomean:>6.2f}x"
    if compiled_geomean is not None:
        line += f" {'':>23} {compiled_geomean:>8.2f}x"
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rows": rows,
            "geomean": geomean,
            "compiled_geomean": compiled_geomean,
        }
        args.json.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return 0


def _trunk_main(args, device: torch.device) -> int:
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'converted trunk vs torchvision':<56} {'custom ms':>10} {'native ms':>10} {'ratio':>7} {'images/s':>17}")
    rows = trunk_rows(device, args.repeats)
    for row in rows:
        print(
            f"{row['name']:<56} {row['custom_ms']:>10.1f} {row['native_ms']:>10.1f} {row['ratio']:>6.2f}x "
            f"{row['custom_images_per_s']:>7.1f} / {row['native_images_per_s']:<7.1f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "trunk": rows}
        args.json.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
