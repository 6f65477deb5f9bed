"""One command for a machine with a GPU (`make gpu-check`): every check of every op on CUDA, the
CUDA-marked tests, a compiled ConvNet training step and the benchmark, into one summary.

    python -m customops.testing.gpu_check [--out runs/gpu_check] [--tests tests] [--ops OP ...]

Steps, in order (each timed; a failed step does not stop the next ones):
1. `python -m customops.check --device cuda`: autocast in float16 and bfloat16, compile, parity
   with TF32 off (check.json);
2. `pytest -m cuda` on the given test paths (tests.xml; skipped with --no-tests);
3. a training step of a small ConvNet of customops layers (conv - relu - pool - linear - softmax
   loss, batch 64, SGD) under torch.compile(fullgraph=True) (inductor), against eager: the loss,
   every gradient and the updated weights;
4. `python -m customops.bench --device cuda` (bench.json), eager and compiled.
The summary (summary.md and summary.json in --out) lists each step's status, wall time and result.
Without a CUDA device it stops at once with one line (exit status 2). `--device cpu` runs the same
steps on the CPU (a dry run of this program; `--ops` and `--bench-only` keep it short).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch

BUDGET_S = 8 * 60


def compiled_training_step(device: torch.device, seed: int = 0, backend: str = "inductor") -> dict[str, Any]:
    """One SGD step of a ConvNet of customops layers, eager and under torch.compile(fullgraph=True):
    the largest differences of the loss, the gradients and the updated weights, and the times."""
    import customops as co

    def make():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(co.Conv2d(1, 8, 5), co.ReLU(), co.MaxPool2d(2), co.Linear(8 * 12 * 12, 10))
        return net.to(device)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)

    def step(net, forward):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        opt.zero_grad()
        loss = co.softmax_loss(forward(x), y)
        loss.backward()
        grads = [p.grad.detach().clone() for p in net.parameters()]
        opt.step()
        return loss.detach(), grads, [p.detach().clone() for p in net.parameters()]

    eager_net, compiled_net = make(), make()
    start = time.perf_counter()
    want = step(eager_net, eager_net)
    torch._dynamo.reset()
    forward = torch.compile(compiled_net, fullgraph=True, backend=backend)
    got = step(compiled_net, forward)  # the first call compiles
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first = time.perf_counter() - start

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(((p - q).abs().max() / q.abs().max().clamp_min(1)).item() for p, q in zip(a, b))

    result = {
        "backend": backend,
        "loss_eager": want[0].item(),
        "loss_compiled": got[0].item(),
        "loss_error": abs(got[0].item() - want[0].item()) / max(1.0, abs(want[0].item())),
        "grad_error": worst(got[1], want[1]),
        "weight_error": worst(got[2], want[2]),
        "compile_and_first_step_s": round(first, 2),
    }
    result["ok"] = result["loss_error"] < 1e-4 and result["grad_error"] < 1e-3 and result["weight_error"] < 1e-4
    return result


def _run_captured(fn, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = fn(argv)
        except SystemExit as exit_:  # argparse's errors
            status = exit_.code if isinstance(exit_.code, int) else 1
    text = out.getvalue()
    sys.stdout.write(text)
    return int(status or 0), text


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return " ".join(lines[-1].split()) if lines else ""


def _pytest_counts(xml_path: Path) -> dict[str, int]:
    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.testing.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("runs/gpu_check"), help="summary folder (default runs/gpu_check)"
    )
    parser.add_argument("--tests", nargs="+", default=["tests"], help="test paths for pytest -m cuda (default tests)")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest step")
    parser.add_argument("--ops", nargs="+", default=None, metavar="OP", help="check only these ops (default all)")
    parser.add_argument("--bench-only", default=None, help="benchmark only rows whose name contains this text")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the steps")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a dry run's pace: the training step compiled with aot_eager, the benchmark eager only, 2 repeats",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False): run it on a machine with a GPU")
        return 2
    from . import bench, check

    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    summary: dict[str, Any] = {"device": f"{device} ({name})", "torch": torch.__version__, "steps": []}
    started = time.perf_counter()

    def record(step: str, ok: bool, seconds: float, result: Any) -> None:
        summary["steps"].append({"step": step, "ok": ok, "seconds": round(seconds, 1), "result": result})
        print(f"gpu-check: {step}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s", flush=True)

    t = time.perf_counter()
    check_argv = ["--device", args.device, "--json", str(args.out / "check.json")]
    status, text = _run_captured(check.main, check_argv + (["--ops", *args.ops] if args.ops else []))
    record("check", status == 0, time.perf_counter() - t, _last_line(text))

    if not args.no_tests:
        t = time.perf_counter()
        xml = args.out / "tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        proc = subprocess.run([*cmd, *args.tests], capture_output=True, text=True)
        sys.stdout.write(proc.stdout[-3000:])
        counts = _pytest_counts(xml) if xml.exists() else {}
        # pytest exits 5 when no test was collected, a failure here; so is a GPU on which every test skipped
        ok = proc.returncode == 0 and (device.type != "cuda" or counts.get("skipped", 0) < counts.get("tests", 0))
        record("cuda tests", ok, time.perf_counter() - t, counts or proc.stderr.strip()[-500:])

    t = time.perf_counter()
    try:
        result = compiled_training_step(device, backend="aot_eager" if args.quick else "inductor")
        ok = result["ok"]
    except Exception as err:  # a compile failure is this step's result
        result, ok = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}", False
    record("compiled ConvNet training step", ok, time.perf_counter() - t, result)

    t = time.perf_counter()
    # 7 timed batches per side (the command's default is 15): keeps the whole run within BUDGET_S.
    bench_argv = ["--device", args.device, "--json", str(args.out / "bench.json"), "--repeats", "7"]
    if args.quick:
        bench_argv += ["--no-compile", "--repeats", "2", "--min-time", "0.01"]
    status, text = _run_captured(bench.main, bench_argv + (["--only", args.bench_only] if args.bench_only else []))
    record("bench", status == 0, time.perf_counter() - t, _last_line(text))

    summary["total_s"] = round(time.perf_counter() - started, 1)
    summary["within_budget"] = summary["total_s"] <= BUDGET_S
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    lines = [
        f"# make gpu-check: {summary['device']}, torch {summary['torch']}",
        "",
        f"{summary['total_s']} s in all (budget {BUDGET_S} s).",
        "",
        "| step | status | seconds | result |",
        "|---|---|---:|---|",
    ]
    for s in summary["steps"]:
        lines.append(f"| {s['step']} | {'ok' if s['ok'] else 'FAILED'} | {s['seconds']} | {json.dumps(s['result'])} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"gpu-check: summary in {args.out / 'summary.md'} ({summary['total_s']} s)")
    return 0 if all(s["ok"] for s in summary["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
