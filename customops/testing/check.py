"""Check every op the same way and print one compatibility table, op x feature.

    python -m customops.check [--device cpu|cuda] [--seed 0] [--ops OP ...] [--compile-backend B]

Columns, each over all of the op's input cases:
- gradcheck, gradgrad: torch.autograd.gradcheck / gradgradcheck in float64;
- batched: gradcheck with check_batched_grad=True (backward under vmap);
- f64, f32: largest error against the native torch twin, forward and every input gradient,
  relative to the reference's scale;
- func: torch.func — vmap of the op and per-sample gradients (vmap of grad) equal a loop,
  and vjp and jacrev equal torch.autograd;
- autocast: under torch.autocast (CPU bfloat16; CUDA float16 and bfloat16) forward and backward
  run, the output has the dtype of the op's autocast policy, values are close to float32, and
  each gradient comes back in its input's dtype;
- compile: torch.compile(fullgraph=True) of forward and backward equals eager.
Exits 1 if any check of any op fails. The test suite calls the same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .registry import Case, OpSpec
from .specs import ALL_SPECS

# Autocast: largest error against float32, relative to the reference's scale, per low dtype.
AUTOCAST_TOLERANCE = {torch.bfloat16: 6e-2, torch.float16: 1e-2}

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


def run_batched_gradcheck(spec: OpSpec, case: Case) -> bool:
    """gradcheck with check_batched_grad: the backward itself runs under vmap."""
    f, inputs = _closure(spec, case)
    return torch.autograd.gradcheck(
        f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, check_batched_grad=True, raise_exception=True
    )


def _tensor_closure(spec: OpSpec, case: Case):
    """(f, tensors): f takes every tensor argument (ids and masks too), the rest held fixed."""
    args, kwargs = case
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def f(*tensors):
        full = list(args)
        for p, t in zip(positions, tensors):
            full[p] = t
        return spec.op(*full, **kwargs)

    return f, tuple(args[p] for p in positions)


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str, tol: float) -> None:
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if got.numel() == 0:
        return
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want.double()).abs().max().item() / scale
    if not err <= tol:
        raise AssertionError(f"{what}: error {err:.2e} > {tol:.0e}")


def _cotangent(out: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype=out.dtype, device=out.device)


def run_func_checks(spec: OpSpec, case_a: Case, case_b: Case, tol: float = 1e-9) -> None:
    """torch.func on two cases of the same shapes: vmap, per-sample grads, vjp, jacrev; raises on a mismatch."""
    from torch.func import grad, jacrev, vjp, vmap

    f, tensors_a = _tensor_closure(spec, case_a)
    _, tensors_b = _tensor_closure(spec, case_b)
    batch = tuple(torch.stack([a.detach(), b.detach()]) for a, b in zip(tensors_a, tensors_b))
    randomness = "same" if spec.random else "error"
    # vmap of the forward equals a loop over the two samples
    out_v = vmap(f, randomness=randomness)(*batch)
    for k, tensors in enumerate((tensors_a, tensors_b)):
        _assert_close(out_v[k], f(*(t.detach() for t in tensors)), f"{spec.name} vmap sample {k}", tol)
    # per-sample gradients: vmap(grad(f . cotangent)) equals autograd on each sample
    ct = _cotangent(out_v[0], 0)
    argnums = tuple(i for i, t in enumerate(tensors_a) if t.is_floating_point() and t.requires_grad)

    def scalar(*tensors):
        return (f(*tensors) * ct).sum()

    per_sample = vmap(grad(scalar, argnums=argnums), randomness=randomness)(*batch)
    for k, tensors in enumerate((tensors_a, tensors_b)):
        leaves = [t.detach().requires_grad_(True) if i in argnums else t.detach() for i, t in enumerate(tensors)]
        want = torch.autograd.grad(scalar(*leaves), [leaves[i] for i in argnums])
        for j, (g, w) in enumerate(zip(per_sample, want)):
            _assert_close(g[k], w, f"{spec.name} per-sample grad of input {argnums[j]}, sample {k}", tol)
    # vjp and jacrev (over the differentiable inputs) on one sample equal torch.autograd
    fixed = [t.detach() for t in tensors_a]

    def of_diff(*diff):
        full = list(fixed)
        for i, t in zip(argnums, diff):
            full[i] = t
        return f(*full)

    primals = tuple(fixed[i] for i in argnums)
    leaves = [p.clone().requires_grad_(True) for p in primals]
    want = torch.autograd.grad(of_diff(*leaves), leaves, ct)
    _, vjp_fn = vjp(of_diff, *primals)
    for j, (g, w) in enumerate(zip(vjp_fn(ct), want)):
        _assert_close(g, w, f"{spec.name} vjp of input {argnums[j]}", tol)
    jac = jacrev(of_diff, argnums=tuple(range(len(primals))))(*primals)
    want_jac = torch.autograd.functional.jacobian(of_diff, primals)
    for j, (J, W) in enumerate(zip(jac, want_jac)):
        _assert_close(J, W, f"{spec.name} jacrev of input {argnums[j]}", tol)


def autocast_dtypes(device: torch.device) -> list[torch.dtype]:
    return [torch.bfloat16] if device.type == "cpu" else [torch.float16, torch.bfloat16]


def run_autocast_check(spec: OpSpec, case: Case, dtype: torch.dtype) -> None:
    """Forward and backward under autocast: the policy's output dtype, values near float32,
    gradients in their inputs' dtypes. `case` holds float32 tensors."""
    args, kwargs = case
    positions = differentiable(args)
    device_type = next(a for a in args if isinstance(a, torch.Tensor)).device.type

    def run(autocast: bool):
        fresh = [a.detach().clone().requires_grad_(True) if i in positions else a for i, a in enumerate(args)]
        with torch.autocast(device_type, dtype=dtype, enabled=autocast):
            out = spec.op(*fresh, **kwargs)
        grads = torch.autograd.grad(out, [fresh[p] for p in positions], _cotangent(out, 0))
        return out, grads, [fresh[p] for p in positions]

    out, grads, inputs = run(True)
    expected = {"lower": dtype, "fp32": torch.float32, "same": torch.float32}[spec.autocast]
    if out.dtype != expected:
        raise AssertionError(
            f"{spec.name} autocast {dtype}: output is {out.dtype}, policy {spec.autocast!r} wants {expected}"
        )
    for g, x in zip(grads, inputs):
        if g.dtype != x.dtype:
            raise AssertionError(f"{spec.name} autocast {dtype}: a gradient is {g.dtype} for a {x.dtype} input")
    ref_out, ref_grads, _ = run(False)
    tol = AUTOCAST_TOLERANCE[dtype] if spec.autocast == "lower" else 1e-5
    _assert_close(out.float(), ref_out, f"{spec.name} autocast {dtype} forward", tol)
    for j, (g, r) in enumerate(zip(grads, ref_grads)):
        _assert_close(g, r, f"{spec.name} autocast {dtype} grad of input {j}", tol)


def run_compile_check(spec: OpSpec, case: Case, backend: str = "aot_eager", tol: float = 1e-5) -> None:
    """torch.compile(fullgraph=True) of the op, forward and backward, equals eager (a graph break raises)."""
    args, kwargs = case
    positions = differentiable(args)
    torch._dynamo.reset()

    def op(*a):
        return spec.op(*a, **kwargs)

    compiled = torch.compile(op, fullgraph=True, backend=backend, dynamic=False)
    results = []
    for fn in (op, compiled):
        full = [a.detach().clone().requires_grad_(True) if i in positions else a for i, a in enumerate(args)]
        out = fn(*full)
        grads = torch.autograd.grad(out, [full[p] for p in positions], _cotangent(out, 0))
        results.append((out.detach(), grads))
    (want_out, want_grads), (out, grads) = results
    if spec.random:
        # Compiled kernels draw other random numbers than eager: check instead that the
        # gradient routes through the very mask the compiled forward used (out = x * mask).
        (x,), (g,) = [args[p] for p in positions], grads
        live = x.detach() != 0
        _assert_close(g[live], (_cotangent(out, 0) * out / x.detach())[live], f"{spec.name} compiled grad", tol)
        return
    _assert_close(out, want_out, f"{spec.name} compiled forward", tol)
    for j, (g, w) in enumerate(zip(grads, want_grads)):
        _assert_close(g, w, f"{spec.name} compiled grad of input {j}", tol)


FEATURES = ("gradcheck", "gradgrad", "batched", "func", "autocast", "compile")


def check_op(spec: OpSpec, device: torch.device, seed: int = 0, compile_backend: str = "aot_eager") -> dict[str, Any]:
    """All checks of one op; failures are recorded with their message, not raised."""
    row: dict[str, Any] = {"op": spec.name, "problems": []}
    gen = lambda s=seed: torch.Generator().manual_seed(s)  # noqa: E731
    cases64 = spec.make_cases(torch.float64, device, gen())
    cases32 = spec.make_cases(torch.float32, device, gen())
    row["cases"] = len(cases64)

    def run(name: str, fn, cases) -> None:
        ok = True
        for i, case in enumerate(cases):
            try:
                fn(case)
            except Exception as err:  # a failed check raises; keep its message
                ok = False
                first = (str(err).strip().splitlines() or [""])[0]
                row["problems"].append(f"{name} case {i}: {type(err).__name__}: {first}")
        row[name] = "pass" if ok else "FAIL"

    run("gradcheck", lambda c: run_gradcheck(spec, c), cases64)
    if spec.double_backward:
        run("gradgrad", lambda c: run_gradgradcheck(spec, c), cases64)
    else:
        row["gradgrad"] = "n/a"
    run("batched", lambda c: run_batched_gradcheck(spec, c), cases64)
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
    other64 = spec.make_cases(torch.float64, device, gen(seed + 1))
    run("func", lambda c: run_func_checks(spec, c[0], c[1]), list(zip(cases64, other64)))
    run("autocast", lambda c: [run_autocast_check(spec, c, dt) for dt in autocast_dtypes(device)], cases32)
    run("compile", lambda c: run_compile_check(spec, c, compile_backend), cases32[:1])
    row["verdict"] = "PASS" if not row["problems"] else "FAIL"
    return row


def all_specs() -> list[OpSpec]:
    return list(ALL_SPECS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customops.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--ops", nargs="+", default=None, metavar="OP", help="check only these ops (default: all)")
    parser.add_argument(
        "--compile-backend",
        default="aot_eager",
        help="torch.compile backend of the compile column: aot_eager (traces forward and backward, "
        "fast) or inductor (also generates kernels, minutes) (default aot_eager)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
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

    header = (
        f"{'op':<28} {'cases':>5}  {'gradcheck':<9}  {'gradgrad':<8}  {'batched':<7}  "
        f"{'err f64':>7}  {'err f32':>7}  {'func':<4}  {'autocast':<8}  {'compile':<7}  verdict"
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
        row = check_op(spec, device, args.seed, args.compile_backend)
        rows.append(row)
        print(
            f"{row['op']:<28} {row['cases']:>5}  {row['gradcheck']:<9}  {row['gradgrad']:<8}  {row['batched']:<7}  "
            f"{row['err64']:>7.0e}  {row['err32']:>7.0e}  {row['func']:<4}  {row['autocast']:<8}  "
            f"{row['compile']:<7}  {row['verdict']}",
            flush=True,
        )
        if row["problems"]:
            failed.append(row)
    for row in failed:
        for problem in row["problems"]:
            print(f"  {row['op']}: {problem}")
    print(f"{len(specs) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "device": str(device),
            "torch": torch.__version__,
            "seed": args.seed,
            "autocast": [str(d).replace("torch.", "") for d in autocast_dtypes(device)],
            "compile_backend": args.compile_backend,
            "rows": rows,
        }
        args.json.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
