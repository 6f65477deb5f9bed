"""Check every op: gradcheck, gradgradcheck and parity with its native torch twin.

    python -m customops.check [--device cpu|cuda] [--seed 0]

One row per op: the number of input cases, whether gradcheck and gradgradcheck passed on
all of them (float64), the largest error against the torch twin (forward and backward,
float64 and float32, relative to the reference's scale), and a verdict. Exits 1 if any op fails.
The test suite calls the same functions.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from .registry import Case, OpSpec
from .specs import ALL_SPECS

# Error allowed against the twin, relative to max(1, largest reference magnitude).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


def differentiable(args: tuple[Any, ...]) -> list[int]:
    """Positions of the arguments gradients are taken for."""
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]


def _closure(spec: OpSpec, case: Case, which: str = "op"):
    """(f, inputs): f takes only the differentiable inputs, for gradcheck."""
    args, kwargs = case
    positions = differentiable(args)
    fn = spec.op if which == "op" else spec.twin

    def f(*grad_inputs):
        full = list(args)
        for p, t in zip(positions, grad_inputs):
            full[p] = t
        return fn(*full, **kwargs)

    return f, tuple(args[p] for p in positions)


def run_gradcheck(spec: OpSpec, case: Case) -> bool:
    f, inputs = _closure(spec, case)
    return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, raise_exception=True)


def run_gradgradcheck(spec: OpSpec, case: Case) -> bool:
    f, inputs = _closure(spec, case)
    return torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True)


def parity_error(spec: OpSpec, case: Case, seed: int = 0) -> float:
    """Largest relative error of the op against its twin: forward output and every input gradient."""
    args, kwargs = case
    positions = differentiable(args)

    def run(fn):
        fresh = [a.detach().clone().requires_grad_(True) if i in positions else a for i, a in enumerate(args)]
        out = fn(*fresh, **kwargs)
        gen = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype).to(out.device)
        grads = torch.autograd.grad(out, [fresh[p] for p in positions], grad_out, allow_unused=True)
        return [out.detach()] + [g if g is not None else torch.zeros_like(fresh[p]) for g, p in zip(grads, positions)]

    worst = 0.0
    for got, want in zip(run(spec.op), run(spec.twin)):
        if got.shape != want.shape:
            raise AssertionError(f"{spec.name}: shape {tuple(got.shape)} but the twin gives {tuple(want.shape)}")
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        if got.numel():
            worst = max(worst, (got - want).abs().max().item() / scale)
    return worst


def check_op(spec: OpSpec, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """All checks of one op; failures are recorded with their message, not raised."""
    row: dict[str, Any] = {"op": spec.name, "problems": []}
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    cases64 = spec.make_cases(torch.float64, device, gen())
    row["cases"] = len(cases64)
    for name, fn in (("gradcheck", run_gradcheck), ("gradgradcheck", run_gradgradcheck)):
        if name == "gradgradcheck" and not spec.double_backward:
            row[name] = "n/a"
            continue
        ok = True
        for i, case in enumerate(cases64):
            try:
                fn(spec, case)
            except Exception as err:  # a failed check raises; keep its message
                ok = False
                row["problems"].append(f"{name} case {i}: {str(err).splitlines()[0]}")
        row[name] = "pass" if ok else "FAIL"
    errors = {}
    for dtype in (torch.float64, torch.float32):
        worst = 0.0
        for i, case in enumerate(spec.make_cases(dtype, device, gen())):
            try:
                err = parity_error(spec, case, seed)
            except Exception as exc:
                row["problems"].append(f"parity {dtype} case {i}: {type(exc).__name__}: {exc}")
                continue
            worst = max(worst, err)
            if err > TOLERANCE[dtype]:
                row["problems"].append(f"parity {dtype} case {i}: error {err:.2e} > {TOLERANCE[dtype]:.0e}")
        errors[dtype] = worst
    row["err64"], row["err32"] = errors[torch.float64], errors[torch.float32]
    row["verdict"] = "PASS" if not row["problems"] else "FAIL"
    return row


def all_specs() -> list[OpSpec]:
    return list(ALL_SPECS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--ops", nargs="+", default=None, metavar="OP", help="check only these ops (default: all)")
    args = parser.parse_args(argv)
    specs = all_specs()
    if args.ops:
        unknown = sorted(set(args.ops) - {s.name for s in specs})
        if unknown:
            parser.error(f"unknown ops {unknown}; choose from {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in args.ops]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    header = f"{'op':<24} {'cases':>5}  {'gradcheck':<9}  {'gradgrad':<8}  {'err vs torch f64':>16}  {'f32':>8}  verdict"
    print(f"device: {device}, seed {args.seed}")
    print(header)
    print("-" * len(header))
    failed = []
    for spec in specs:
        row = check_op(spec, device, args.seed)
        print(
            f"{row['op']:<24} {row['cases']:>5}  {row['gradcheck']:<9}  {row['gradgradcheck']:<8}  "
            f"{row['err64']:>16.1e}  {row['err32']:>8.1e}  {row['verdict']}",
            flush=True,
        )
        if row["problems"]:
            failed.append(row)
    for row in failed:
        for problem in row["problems"]:
            print(f"  {row['op']}: {problem}")
    print(f"{len(specs) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
