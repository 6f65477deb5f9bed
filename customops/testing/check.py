"""Check every op the same way and print one compatibility table, op x feature.

    python -m customops.check [--device cpu|cuda] [--seed 0] [--ops OP ...] [--module MODULE]
                              [--checks CHECK ...] [--compile-backend B] [--json FILE]

Columns, each over all of the op's samples (the checks are customops.testing.checks'):
- gradcheck, gradgrad: torch.autograd.gradcheck / gradgradcheck in float64;
- batched: gradcheck with check_batched_grad=True (backward under vmap);
- err f64, err f32: largest error against the native torch twin, forward and every input
  gradient, relative to the reference's scale;
- err f16/bf16: the same with float16 and bfloat16 inputs outside autocast, the twin run at
  that precision too;
- func: torch.func: vmap of the op and per-sample gradients (vmap of grad) equal a loop,
  and vjp and jacrev equal torch.autograd;
- autocast: under torch.autocast (CPU bfloat16; CUDA float16 and bfloat16) forward and backward
  run, the output has the dtype of the op's autocast policy, and the output and gradients are
  close to float32 (autograd itself returns each gradient in its input's dtype);
- compile: torch.compile(fullgraph=True) of forward and backward equals eager;
- verdict: PASS when every check passed, the columns' and those without one: no input
  mutated, no tensor stashed on ctx, two calls agree, torch.export, the error inputs (and on a
  CPU with a GPU beside it, parity on CUDA).
`--module mypkg.myops` checks the specs of a module of yours (its SPECS list or the specs its
ops registered with @customops.testing.register) instead of customops' own.
Exits 1 if any check of any op fails. The test suite calls the same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .checks import SPEC_CHECKS, autocast_dtypes, run_checks, spec_target
from .registry import OpSpec, specs_in

# The table's columns: (row key, check name).
COLUMNS = (
    ("gradcheck", "gradcheck"),
    ("gradgrad", "gradgradcheck"),
    ("batched", "batched_gradcheck"),
    ("func", "torch_func"),
    ("autocast", "autocast"),
    ("compile", "compile"),
)
ERRORS = (
    ("err64", "parity_float64"),
    ("err32", "parity_float32"),
    ("err16", "parity_float16"),
    ("errbf16", "parity_bfloat16"),
)


def _cell(result) -> str:
    if result is None or result.status == "SKIPPED":
        return "n/a"
    return "pass" if result.status == "SUCCESS" else "FAIL"


def check_op(
    spec: OpSpec,
    device: torch.device | str,
    seed: int = 0,
    compile_backend: str = "aot_eager",
    checks: list[str] | None = None,
) -> dict[str, Any]:
    """All checks of one op as a table row; failures are recorded with their message, not raised."""
    target = spec_target(spec, device, seed, compile_backend)
    results = run_checks(target, checks, SPEC_CHECKS)
    row: dict[str, Any] = {"op": spec.name, "cases": len(target.samples(torch.float64))}
    for key, name in COLUMNS:
        row[key] = _cell(results.get(name))
    for key, name in ERRORS:
        r = results.get(name)
        row[key] = r.error if r is not None else None
    row["checks"] = {name: str(r) for name, r in results.items()}
    row["problems"] = [r.message for r in results.values() if r.failed]
    row["verdict"] = "PASS" if not row["problems"] else "FAIL"
    return row


def all_specs() -> list[OpSpec]:
    from .specs import ALL_SPECS

    return list(ALL_SPECS)


def _err(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--ops", nargs="+", default=None, metavar="OP", help="check only these ops (default: all)")
    parser.add_argument(
        "--module",
        default=None,
        help="check the specs of this importable module (its SPECS list or @customops.testing.register specs) "
        "instead of customops' own",
    )
    parser.add_argument(
        "--checks",
        nargs="+",
        default=None,
        metavar="CHECK",
        help=f"run only these checks (default: all: {', '.join(SPEC_CHECKS)}; 'parity' selects every parity check)",
    )
    parser.add_argument(
        "--compile-backend",
        default="aot_eager",
        help="torch.compile backend of the compile column: aot_eager (traces forward and backward, "
        "fast) or inductor (also generates kernels, minutes) (default aot_eager)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    if args.module:
        try:
            specs = specs_in(args.module)
        except ImportError as err:
            parser.error(f"--module {args.module}: cannot import it ({err})")
        except (TypeError, ValueError) as err:
            parser.error(f"--module {args.module}: {err}")
        if not specs:
            parser.error(f"--module {args.module}: it has no SPECS list and registered no specs (@register)")
    else:
        specs = all_specs()
    if args.ops:
        unknown = sorted(set(args.ops) - {s.name for s in specs})
        if unknown:
            parser.error(f"unknown ops {unknown}; choose from {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in args.ops]
    if args.checks:
        unknown = sorted(set(args.checks) - set(SPEC_CHECKS) - {"parity"})
        if unknown:
            parser.error(f"unknown checks {unknown}; choose from {list(SPEC_CHECKS)} or 'parity'")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    header = (
        f"{'op':<28} {'cases':>5}  {'gradcheck':<9}  {'gradgrad':<8}  {'batched':<7}  "
        f"{'err f64':>7}  {'err f32':>7}  {'err f16/bf16':>13}  {'func':<4}  {'autocast':<8}  {'compile':<7}  verdict"
    )
    print(
        f"device: {device}, seed {args.seed}, "
        f"autocast {[str(d).replace('torch.', '') for d in autocast_dtypes(device)]}, "
        f"compile backend {args.compile_backend}, torch {torch.__version__}"
    )
    print(header)
    print("-" * len(header))
    failed, rows = [], []
    for spec in specs:
        row = check_op(spec, device, args.seed, args.compile_backend, args.checks)
        rows.append(row)
        low = f"{_err(row['err16'])}/{_err(row['errbf16'])}"
        print(
            f"{row['op']:<28} {row['cases']:>5}  {row['gradcheck']:<9}  {row['gradgrad']:<8}  {row['batched']:<7}  "
            f"{_err(row['err64']):>7}  {_err(row['err32']):>7}  {low:>13}  {row['func']:<4}  {row['autocast']:<8}  "
            f"{row['compile']:<7}  {row['verdict']}",
            flush=True,
        )
        if row["problems"]:
            failed.append(row)
    for row in failed:
        for problem in row["problems"]:
            print(f"  {problem}")
    print(f"{len(specs) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "device": str(device),
            "torch": torch.__version__,
            "seed": args.seed,
            "autocast": [str(d).replace("torch.", "") for d in autocast_dtypes(device)],
            "compile_backend": args.compile_backend,
            "module": args.module,
            "rows": rows,
        }
        args.json.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
