"""The checks of an op built from `torch.autograd.Function`s, and what their failures mean.

`check_function(fn, args)` checks one callable from sample calls, `check_spec(spec)` an `OpSpec`
(customops.testing.registry); `python -m customops.check` and the test suite run the same code.
Each check maps to `"SUCCESS"`, `"SKIPPED: <why>"` or its failure message, which names the check,
the sample and input, the worst element, and where the symptom tells it, the likely cause and fix.

The checks, in the order they run (`CHECKS`):

- `no_input_mutation`: forward changes none of its inputs, backward neither its inputs nor its
  grad_output (values and version counters; grad_output as the Function's backward receives it).
- `saved_tensors`: no tensor is kept as an attribute of ctx (`ctx.x = x`); backward gets its
  tensors through `ctx.save_for_backward` (the grad_fn of a custom Function *is* its ctx).
- `determinism`: two calls with the same inputs give the same output and gradients (bit for
  bit on CPU; within 1e-10 on accelerators, whose atomic additions sum in varying order).
- `gradcheck`, `gradgradcheck`, `batched_gradcheck`: torch.autograd.gradcheck / gradgradcheck in
  float64, the last with `check_batched_grad=True` (backward under vmap). gradgradcheck is
  skipped for a backward marked `@once_differentiable`.
- `parity_float64`, `parity_float32`, `parity_float16`, `parity_bfloat16`: forward and every input
  gradient against the twin at that precision (inputs of that dtype, outside autocast); the
  error is max |custom - twin| / max(1, max |twin|), within `PARITY_TOLERANCE`.
- `parity_cuda`: where a CUDA device exists and the samples are on the CPU, the same on CUDA
  (against the twin there, or the op on the CPU without a twin; TF32 off).
- `torch_func`: vmap of the op and per-sample gradients (vmap of grad) equal a loop over two
  samples; vjp and jacrev equal torch.autograd.
- `autocast`: under torch.autocast (CPU bfloat16; CUDA float16 and bfloat16) forward and backward
  run, the output has the dtype of the op's autocast policy (or of the twin's under autocast),
  and the output and gradients are close to float32.
- `compile`: torch.compile(fullgraph=True) of forward and backward equals eager.
- `export`: torch.export of a module calling the op runs, without and with grad, like eager.

Specs add `error_inputs` (each bad input raises its error, the message starting with the op's name).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

from .registry import ErrorInput, OpSpec, SampleInput, argument_names, check_error_input, seeded

CHECKS: tuple[str, ...] = (
    "no_input_mutation",
    "saved_tensors",
    "determinism",
    "gradcheck",
    "gradgradcheck",
    "batched_gradcheck",
    "parity_float64",
    "parity_float32",
    "parity_float16",
    "parity_bfloat16",
    "parity_cuda",
    "torch_func",
    "autocast",
    "compile",
    "export",
)
SPEC_CHECKS: tuple[str, ...] = (*CHECKS, "error_inputs")

LOW = (torch.float16, torch.bfloat16)
PARITY_DTYPES = {
    "parity_float64": torch.float64,
    "parity_float32": torch.float32,
    "parity_float16": torch.float16,
    "parity_bfloat16": torch.bfloat16,
}
# Error allowed against the twin, relative to max(1, largest reference magnitude): float64 and
# float32 are near their rounding; float16 and bfloat16 allow a few roundings of an output and
# of gradients summed over a row (both sides round, each its own way).
PARITY_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# Autocast: largest error against float32, relative to the reference's scale, per low dtype.
AUTOCAST_TOLERANCE = {torch.bfloat16: 6e-2, torch.float16: 1e-2}
# Comparisons of one computation run two ways (torch.func, compile, export), in float64 / float32.
SAME_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}

GRADCHECK = {"eps": 1e-6, "atol": 1e-6, "rtol": 1e-4}
GRADGRADCHECK = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}

SUCCESS = "SUCCESS"


@dataclass
class Result:
    """One check's outcome: "SUCCESS", "SKIPPED" (message says why) or "FAILED" (message says what);
    `error` is the parity checks' largest relative error."""

    status: str
    message: str = ""
    error: float | None = None

    def __str__(self) -> str:
        if self.status == "SUCCESS":
            return SUCCESS
        if self.status == "SKIPPED":
            return f"SKIPPED: {self.message}"
        return self.message

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"


class _Skip(Exception):
    """Raised inside a check: it does not apply (the message says why)."""


class CheckFailure(AssertionError):
    """A check's failure, raised inside the check with its message (and a parity check's error)."""

    def __init__(self, message: str, error: float | None = None):
        super().__init__(message)
        self.error = error


@dataclass
class _Target:
    """What is checked: the op, its twin and how to get its samples for a dtype."""

    name: str
    op: Callable[..., Any]
    twin: Callable[..., Any] | None
    device: torch.device
    make: Callable[[torch.dtype, int], list[SampleInput]]  # (dtype, seed) -> samples on the device
    autocast: str | None = None
    random: bool = False
    atol: float | None = None
    rtol: float | None = None
    compile_backend: str = "aot_eager"
    errors: Callable[[], list[ErrorInput]] | None = None
    spec: OpSpec | None = None
    _samples: dict[tuple[torch.dtype, int], list[SampleInput]] = field(default_factory=dict)
    _probes: dict[str, str | None] = field(default_factory=dict)
    _functions: list[type] | None = None

    def samples(self, dtype: torch.dtype, seed: int = 0) -> list[SampleInput]:
        key = (dtype, seed)
        if key not in self._samples:
            self._samples[key] = self.make(dtype, seed)
        return self._samples[key]


# ---- small helpers ------------------------------------------------------------------------

Key = int | str  # a positional index or a keyword name


def _tensor_keys(sample: SampleInput) -> list[Key]:
    keys: list[Key] = [i for i, a in enumerate(sample.args) if isinstance(a, torch.Tensor)]
    return keys + [k for k, v in sample.kwargs.items() if isinstance(v, torch.Tensor)]


def _get(sample: SampleInput, key: Key) -> Any:
    return sample.args[key] if isinstance(key, int) else sample.kwargs[key]


def _diff_keys(sample: SampleInput) -> list[Key]:
    """The differentiable inputs: floating tensors with requires_grad=True."""
    return [k for k in _tensor_keys(sample) if _get(sample, k).is_floating_point() and _get(sample, k).requires_grad]


def _call(op: Callable[..., Any], sample: SampleInput, values: dict[Key, Any] | None = None) -> Any:
    args = list(sample.args)
    kwargs = dict(sample.kwargs)
    for key, v in (values or {}).items():
        if isinstance(key, int):
            args[key] = v
        else:
            kwargs[key] = v
    return op(*args, **kwargs)


def _outputs(out: Any) -> list[torch.Tensor]:
    """The tensors an op returned: one tensor, or those of a tuple/list."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    raise CheckFailure(f"returned {type(out).__name__}, not a tensor or a tuple of tensors")


def _clone(t: torch.Tensor) -> torch.Tensor:
    """A detached copy with the same strides (so a non-contiguous input stays non-contiguous)."""
    t = t.detach()
    try:
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
        out.copy_(t)
        return out
    except RuntimeError:  # overlapping strides (an expanded tensor)
        return t.clone()


def _fresh(sample: SampleInput, dtype: torch.dtype | None = None) -> tuple[dict[Key, torch.Tensor], list[Key]]:
    """Fresh copies of every tensor input (differentiable ones as new leaves), and the differentiable keys."""
    diff = _diff_keys(sample)
    values = {}
    for key in _tensor_keys(sample):
        t = _clone(_get(sample, key))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        values[key] = t.requires_grad_(key in diff)
    return values, diff


def _cotangents(outs: Sequence[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(dtype=o.dtype, device=o.device) for o in outs]


def _grads(outs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], seed: int = 0, keep_none: bool = False):
    """Gradients of sum(cotangent * output) with respect to the inputs (zeros for unused inputs)."""
    live = [o for o in outs if o.requires_grad]
    if not live or not inputs:
        return [None if keep_none else torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(live, list(inputs), _cotangents(live, seed), allow_unused=True)
    return [g if g is not None or keep_none else torch.zeros_like(x) for g, x in zip(grads, inputs)]


def _index(t: torch.Tensor, flat: int) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), t.shape)) if t.dim() else ()


def _num(v: float) -> str:
    return f"{v:.6g}"


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    """max |got - want| / max(1, max |want|), and where it is largest (NaN where only one side is NaN)."""
    if got.numel() == 0:
        return 0.0, ()
    g, w = got.detach().double(), want.detach().double()
    diff = (g - w).abs()
    both_nan = g.isnan() & w.isnan()
    same_inf = g.isinf() & (g == w)
    diff = torch.where(both_nan | same_inf, 0.0, diff).nan_to_num(nan=math.inf)
    finite = w[w.isfinite()]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    flat = int(diff.argmax())
    return diff.reshape(-1)[flat].item() / scale, _index(w, flat)


def _where(sample: SampleInput, i: int, n: int) -> str:
    if n == 1 and not sample.desc:
        return ""
    return f" sample {i}" + (f" ({sample.desc})" if sample.desc else "")


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Float32 at full precision on CUDA (TF32 matmuls and convolutions would round to 10 bits)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---- the Functions behind an op ------------------------------------------------------------


def _custom_nodes(outs: Sequence[torch.Tensor]) -> list[Any]:
    """The backward nodes of custom autograd.Functions in the graph of these outputs (each node is its ctx)."""
    seen, found, stack = set(), [], [o.grad_fn for o in outs if o.grad_fn is not None]
    while stack and len(seen) < 10_000:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if getattr(type(node), "_forward_cls", None) is not None:
            found.append(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _functions(t: _Target) -> list[type]:
    """The autograd.Function classes the op applies (found in the graph of its first sample)."""
    if t._functions is None:
        t._functions = []
        samples = t.samples(torch.float64)
        if samples:
            values, _ = _fresh(samples[0])
            try:
                with torch.enable_grad():
                    outs = _outputs(_call(t.op, samples[0], values))
                for node in _custom_nodes(outs):
                    cls = type(node)._forward_cls
                    if cls not in t._functions:
                        t._functions.append(cls)
            except Exception:
                pass
    return t._functions


def _function_name(t: _Target) -> str:
    found = _functions(t)
    return found[0].__name__ if found else t.name


def _input_names(t: _Target, sample: SampleInput) -> list[str]:
    names = argument_names(t.op)
    if names:
        return names
    for cls in _functions(t)[:1]:
        names = argument_names(cls.forward)
        if names and not _has_setup_context(cls):  # forward(ctx, ...): ctx is not an input
            names = names[1:]
    return names


def _has_setup_context(cls: type) -> bool:
    return getattr(cls, "setup_context", None) is not getattr(torch.autograd.Function, "setup_context", None)


def _describe(t: _Target, sample: SampleInput, key: Key) -> str:
    if isinstance(key, str):
        return f"input {key!r}"
    names = _input_names(t, sample)
    return f"input {key} ({names[key]})" if key < len(names) else f"input {key}"


_ONCE_DIFFERENTIABLE = torch.autograd.function.once_differentiable(lambda ctx, *g: g).__code__


def _once_differentiable(cls: type) -> bool:
    backward = getattr(cls, "backward", None)
    return getattr(backward, "__code__", None) is _ONCE_DIFFERENTIABLE


# ---- what a failure means ------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _hint_gradient_count(m: re.Match, fn: str, named: Callable[[int], str], sample: SampleInput | None) -> str:
    want, got = int(m.group(1)), int(m.group(2))
    return (
        f"{fn}.backward returns {_plural(got, 'gradient')} but forward takes {_plural(want, 'input')}. Fix: return "
        "exactly one gradient per input of forward, in its order, with None for the inputs that are not "
        "differentiable (non-tensors, ids, masks): e.g. `return grad_x, None`."
    )


def _hint_gradient_shape(m: re.Match, fn: str, named: Callable[[int], str], sample: SampleInput | None) -> str:
    i, got, want = int(m.group(1)), _shape(m.group(2)), _shape(m.group(3))
    other = ""
    for key in _tensor_keys(sample) if sample is not None else []:
        if isinstance(key, int) and key != i and tuple(_get(sample, key).shape) == got:
            other = f" It has the shape of {named(key)}: the gradients are returned in the wrong order."
            break
    return (
        f"{fn}.backward's gradient for {named(i)} has shape {got}, but the input has shape {want}.{other} "
        "Fix: return the gradients in forward's input order, each reduced to its input's shape "
        "(sum over broadcast dimensions)."
    )


def _hint_needs_input_grad(m: re.Match, fn: str, named: Callable[[int], str], sample: SampleInput | None) -> str:
    i = int(m.group(1)) - 1  # torch counts the positions from 1
    return (
        f"{fn}.backward returns a gradient for {named(i)}, which is not a tensor in this call (None or a number): "
        f"it ignores ctx.needs_input_grad. Fix: compute each gradient only `if ctx.needs_input_grad[{i}]` and "
        "return None otherwise."
    )


def _hint_setup_context(m: re.Match, fn: str, named, sample) -> str:
    return (
        f"{fn}.forward takes ctx: torch.func (vmap, grad, jacrev, ...) needs the form forward(inputs) + "
        "setup_context(ctx, inputs, output), saving with ctx.save_for_backward there, and a vmap rule. "
        "Fix: split forward that way and set generate_vmap_rule = True (customops.Function, a drop-in "
        "base class, sets it)."
    )


def _hint_vmap_rule(m: re.Match, fn: str, named, sample) -> str:
    return (
        f"{fn} has no vmap rule: set generate_vmap_rule = True (with setup_context) or write a vmap "
        "staticmethod (customops.Function, a drop-in base class, sets generate_vmap_rule = True)."
    )


def _hint_saved_modified(m: re.Match, fn: str, named, sample) -> str:
    return (
        "a tensor saved for backward was changed in place after forward saved it. Fix: do not modify inputs "
        "or outputs in place after saving them (compute out of place, or save a copy)."
    )


def _hint_batched_in_place(m: re.Match, fn: str, named, sample) -> str:
    return (
        "an in-place operation writes a tensor that vmap batches into one it does not (e.g. buffer.mul_(grad)). "
        "Fix: compute out of place while torch.func transforms are active "
        "(torch._C._functorch.is_functorch_wrapped_tensor tells batched tensors apart)."
    )


def _hint_data_dependent(m: re.Match, fn: str, named, sample) -> str:
    where = re.search(r'File "([^"]+)", line (\d+), in (\w+)', m.string)
    at = f" (at {where.group(1)}:{where.group(2)}, in {where.group(3)})" if where else ""
    return (
        f"a Python branch on a tensor's value{at}, such as `if x.sum() > 0:`, cannot be traced into one graph. "
        "Fix: make it branchless (torch.where, clamp) or run value checks only outside tracing "
        "(`if not torch.compiler.is_compiling(): ...`)."
    )


def _hint_reentrant(m: re.Match, fn: str, named, sample) -> str:
    return (
        "backward gives different gradients for the same grad_output: it draws random numbers or keeps state "
        "between calls. Fix: make backward a function of what forward saved."
    )


def _hint_leaf_in_place(m: re.Match, fn: str, named, sample) -> str:
    return "forward changes an input in place. Fix: compute out of place (x * 2 rather than x.mul_(2))."


# What torch's error text tells about the cause, first match wins.
_HINTS: list[tuple[re.Pattern[str], Callable[..., str]]] = [
    (re.compile(r"returned an incorrect number of gradients \(expected (\d+), got (\d+)\)"), _hint_gradient_count),
    (
        re.compile(
            r"invalid gradient at index (\d+) - got \[([\d, ]*)\] but expected shape compatible with \[([\d, ]*)\]"
        ),
        _hint_gradient_shape,
    ),
    (
        re.compile(r"gradient different than None at position (\d+), but the corresponding forward input was not"),
        _hint_needs_input_grad,
    ),
    (re.compile(r"must override the setup_context staticmethod"), _hint_setup_context),
    (re.compile(r"does not have vmap support|generate_vmap_rule"), _hint_vmap_rule),
    (re.compile(r"modified by an inplace operation"), _hint_saved_modified),
    (re.compile(r"vmap: .* is not possible because there exists a Tensor"), _hint_batched_in_place),
    (re.compile(r"data-dependent", re.IGNORECASE), _hint_data_dependent),
    (re.compile(r"Backward is not reentrant"), _hint_reentrant),
    (re.compile(r"leaf Variable that requires grad .*in-place"), _hint_leaf_in_place),
]


def _explain(err: BaseException, t: _Target, sample: SampleInput | None = None) -> str:
    """The failure's first line, and where its text tells it, the likely cause and fix."""
    text = str(err).strip()
    line = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
    names = _input_names(t, sample) if sample is not None else []

    def named(i: int) -> str:
        return f"input {i} ({names[i]})" if i < len(names) else f"input {i}"

    for pattern, hint in _HINTS:
        m = pattern.search(text)
        if m:
            return f"{line}. Likely cause: {hint(m, _function_name(t), named, sample)}"
    return line


def _probe(t: _Target, name: str, run: Callable[[], str | None]) -> str | None:
    """A diagnostic run, once per target (its finding, or None)."""
    if name not in t._probes:
        try:
            t._probes[name] = run()
        except Exception:
            t._probes[name] = None
    return t._probes[name]


def _probes(t: _Target) -> str:
    """What the cheap probes find wrong, for a failure whose own symptom does not say (the first
    sentence of each finding, with the check that tells the rest)."""
    found = [
        (_probe(t, "mutation", lambda: _mutation_problem(t)), "no_input_mutation"),
        (_probe(t, "stash", lambda: _stash_problem(t)), "saved_tensors"),
        (_probe(t, "determinism", lambda: _nondeterminism_problem(t)), "determinism"),
    ]
    notes = [f"{text.split('. ')[0].rstrip('.')} (see {check})." for text, check in found if text]
    return (" Also found: " + " ".join(notes)) if notes else ""


# ---- no_input_mutation, saved_tensors, determinism ----------------------------------------------


def _changed(before: torch.Tensor, after: torch.Tensor) -> tuple[int, ...] | None:
    """Where `after` differs from `before` (NaN equal to NaN), or None."""
    if before.shape != after.shape:
        return ()
    same = (before == after) | (before.isnan() & after.isnan()) if before.is_floating_point() else before == after
    if bool(same.all()):
        return None
    return _index(before, int((~same).reshape(-1).nonzero()[0]))


def _mutation_problem(t: _Target) -> str | None:
    samples = t.samples(torch.float64)
    fn = _function_name(t)
    for i, sample in enumerate(samples):
        where = _where(sample, i, len(samples))
        values, diff = _fresh(sample)
        before = {k: (v.detach().clone(), v._version) for k, v in values.items()}
        with torch.enable_grad():
            outs = _outputs(_call(t.op, sample, values))
        for key, (copy, version) in before.items():
            now = values[key]
            at = _changed(copy, now.detach())
            if at is not None or now._version != version:
                what = (
                    f"element {at}: {_num(copy[at].item())} before, {_num(now.detach()[at].item())} after"
                    if at
                    else "its version counter moved: an in-place write"
                )
                return (
                    f"forward changed {_describe(t, sample, key)} in place{where} ({what}). Likely cause: an in-place "
                    "operation on an input (x.mul_(2), x += 1, x[i] = v) in forward. Fix: compute out of place "
                    "(x * 2), or on a copy (x.clone())."
                )
        live = [o for o in outs if o.requires_grad]
        if not live or not diff:
            continue
        received: list[tuple[Any, torch.Tensor, torch.Tensor]] = []

        def record(grad_outputs, node=None, received=received):
            for g in grad_outputs:
                if isinstance(g, torch.Tensor):
                    received.append((node, g, g.detach().clone()))

        handles = [n.register_prehook(lambda go, n=n: record(go, n)) for n in _custom_nodes(live)]
        cts = _cotangents(live)
        ct_copies = [c.clone() for c in cts]
        try:
            torch.autograd.grad(live, [values[k] for k in diff], cts, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        for node, g, copy in received:
            at = _changed(copy, g.detach())
            if at is not None:
                who = type(node).__name__.removesuffix("Backward") if node is not None else fn
                return (
                    f"{who}.backward changed its grad_output in place{where} (element {at}: {_num(copy[at].item())} "
                    f"received, {_num(g.detach()[at].item())} after). Likely cause: grad_output.mul_(...), "
                    "grad_output[...] = ... or `+=` on it in backward; autograd can hand the same tensor to other "
                    "nodes of the graph (a tensor used twice), which then see a wrong gradient. "
                    "Fix: compute out of place (grad_output * mask)."
                )
        for c, copy in zip(cts, ct_copies):
            at = _changed(copy, c)
            if at is not None:
                return f"backward changed the gradient it was given in place{where} (element {at})."
        for key, (copy, _) in before.items():
            at = _changed(copy, values[key].detach())
            if at is not None:
                return (
                    f"backward changed {_describe(t, sample, key)} in place{where} (element {at}). "
                    "Fix: compute gradients out of place; never write into saved inputs."
                )
    return None


def _check_no_input_mutation(t: _Target) -> None:
    problem = _mutation_problem(t)
    if problem:
        raise CheckFailure(problem)


def _stash_problem(t: _Target) -> str | None:
    samples = t.samples(torch.float64)
    for i, sample in enumerate(samples):
        values, _ = _fresh(sample)
        with torch.enable_grad():
            outs = _outputs(_call(t.op, sample, values))
        for node in _custom_nodes(outs):
            stashed = []
            for attr, v in vars(node).items():
                inner = list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, (list, tuple)) else [v]
                if any(isinstance(x, torch.Tensor) for x in inner):
                    stashed.append(f"ctx.{attr}")
            if stashed:
                cls = type(node)._forward_cls.__name__
                return (
                    f"{cls} keeps tensors on ctx ({', '.join(stashed)}){_where(sample, i, len(samples))}. Tensors that "
                    "backward needs must go through ctx.save_for_backward(...) and come back as ctx.saved_tensors: "
                    "a tensor stashed on ctx escapes autograd's checks (an in-place change after forward silently "
                    "changes the gradient), saved-tensor hooks (activation checkpointing, offloading) and can keep "
                    "memory alive through a reference cycle (ctx.out = output). Keep only non-tensors (shapes, "
                    "flags, numbers) as ctx attributes."
                )
    return None


def _check_saved_tensors(t: _Target) -> None:
    samples = t.samples(torch.float64)
    if samples:
        values, _ = _fresh(samples[0])
        with torch.enable_grad():
            outs = _outputs(_call(t.op, samples[0], values))
        if not _custom_nodes(outs):
            raise _Skip("the output's graph holds no torch.autograd.Function")
    problem = _stash_problem(t)
    if problem:
        raise CheckFailure(problem)


def _run_once(t: _Target, sample: SampleInput) -> list[torch.Tensor]:
    values, diff = _fresh(sample)
    with torch.enable_grad():
        outs = _outputs(_call(t.op, sample, values))
    grads = _grads(outs, [values[k] for k in diff])
    return [o.detach() for o in outs] + list(grads)


def _nondeterminism_problem(t: _Target) -> str | None:
    samples = t.samples(torch.float64)
    for i, sample in enumerate(samples):
        first, second = _run_once(t, sample), _run_once(t, sample)
        n_out = len(first) - len(_diff_keys(sample))
        for j, (a, b) in enumerate(zip(first, second)):
            if t.device.type == "cpu":
                at = _changed(a, b)
            else:
                err, idx = _relative_error(b, a)
                at = idx if err > 1e-10 else None
            if at is not None:
                what = (
                    f"output {j}"
                    if j < n_out
                    else f"the gradient of {_describe(t, sample, _diff_keys(sample)[j - n_out])}"
                )
                return (
                    f"two calls with the same inputs differ{_where(sample, i, len(samples))}: {what}, element {at}: "
                    f"{_num(a[at].item())} then {_num(b[at].item())}. Likely cause: the op draws random numbers "
                    "(torch.rand, bernoulli_) or keeps state between calls. Fix: take a torch.Generator (or seed) "
                    "argument so that a call can be repeated; a spec of a random op seeds one per call."
                )
    return None


def _check_determinism(t: _Target) -> None:
    problem = _nondeterminism_problem(t)
    if problem:
        raise CheckFailure(problem)


# ---- gradcheck, gradgradcheck, batched_gradcheck ---------------------------------------------


def _closure(t: _Target, sample: SampleInput) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...], list[Key]]:
    """(f, inputs, keys): f takes only the differentiable inputs and returns the op's output tensors."""
    keys = _diff_keys(sample)

    def f(*grad_inputs):
        return tuple(_outputs(_call(t.op, sample, dict(zip(keys, grad_inputs)))))

    return f, tuple(_get(sample, k) for k in keys), keys


def _numerical_vjp(f, inputs, cts, eps: float = 1e-6, limit: int = 512) -> list[torch.Tensor]:
    """Central differences of sum(ct * f(inputs)) for each input element (at most `limit` per input, NaN elsewhere)."""
    base = [x.detach().clone(memory_format=torch.contiguous_format) for x in inputs]

    def phi(values) -> float:
        with torch.no_grad():
            outs = f(*values)
        return sum(float((o.double() * c.double()).sum()) for o, c in zip(outs, cts) if o.is_floating_point())

    result = []
    for i, x in enumerate(base):
        n = torch.full((x.numel(),), math.nan, dtype=torch.float64)
        picks = range(x.numel()) if x.numel() <= limit else torch.randperm(x.numel())[:limit].tolist()
        for j in picks:
            values = [b.clone() for b in base]
            values[i].view(-1)[j] += eps
            plus = phi(values)
            values[i].view(-1)[j] -= 2 * eps
            minus = phi(values)
            n[j] = (plus - minus) / (2 * eps)
        result.append(n.view(x.shape))
    return result


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    known = ~b.isnan()
    a, b = a.double()[known], b[known]
    scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
    return bool(((a - b).abs() <= 1e-5 * scale + 1e-3 * b.abs()).all())


def _gradient_diagnosis(t: _Target, sample: SampleInput) -> str | None:
    """Which input's gradient is wrong, where, and what the pattern says (a factor, another input's gradient)."""
    f, inputs, keys = _closure(t, sample)
    leaves = [_clone(x).requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        outs = [o for o in f(*leaves) if o.requires_grad]
    if not outs:
        return None
    cts = _cotangents(outs)
    analytic = torch.autograd.grad(outs, leaves, cts, allow_unused=True)
    numeric = _numerical_vjp(lambda *v: [o for o in f(*v) if o.is_floating_point()][: len(outs)], inputs, cts)
    for i, (a, n, key) in enumerate(zip(analytic, numeric, keys)):
        name = _describe(t, sample, key)
        if a is None:
            if _close(torch.zeros_like(n), n):
                continue
            return f"the gradient of {name} is None (not computed) but the numerical one is not zero."
        if _close(a, n):
            continue
        known = ~n.isnan()
        diff = torch.where(known, (a.detach().double() - n).abs(), -1.0)
        at = _index(n, int(diff.argmax()))
        line = (
            f"the gradient of {name} is wrong: element {at}: analytic {_num(a[at].item())} vs numerical "
            f"{_num(n[at].item())}."
        )
        a_k, n_k = a.detach().double()[known], n[known]
        cause = ""
        if a_k.abs().max() == 0:
            cause = "backward returns zeros for it."
        for j, (n_j, key_j) in enumerate(zip(numeric, keys)):
            if not cause and j != i and n_j.shape == a.shape and not n_j.isnan().any() and _close(a, n_j):
                cause = (
                    f"it equals the numerical gradient of {_describe(t, sample, key_j)}: backward returns the "
                    "gradients in the wrong order. Fix: return them in forward's input order."
                )
        nn = float((n_k * n_k).sum())
        if not cause and nn > 0:
            c = float((a_k * n_k).sum()) / nn
            if _close(a_k, c * n_k):
                if abs(c + 1) < 1e-3:
                    cause = "it has the wrong sign everywhere."
                elif abs(c - 1) > 1e-3:
                    cause = (
                        f"it is {c:.4g} times the numerical gradient everywhere: a constant factor is wrong in "
                        "backward (a doubled term, a missing 1/N or scale)."
                    )
        return line + (f" Likely cause: {cause}" if cause else "")
    return None


def _check_gradcheck(t: _Target, batched: bool = False) -> None:
    samples = t.samples(torch.float64)
    if not any(_diff_keys(s) for s in samples):
        raise _Skip("no sample has an input with requires_grad=True")
    for i, sample in enumerate(samples):
        f, inputs, _ = _closure(t, sample)
        if not inputs:
            continue
        where = _where(sample, i, len(samples))
        try:
            torch.autograd.gradcheck(f, inputs, check_batched_grad=batched, raise_exception=True, **GRADCHECK)
        except GradcheckError as err:
            if batched and "batched" in str(err):  # the batched part failed, not the gradient itself
                raise CheckFailure(f"{t.name}{where}: {_explain(err, t, sample)}") from err
            found = None
            with contextlib.suppress(Exception):
                found = _gradient_diagnosis(t, sample)
            raise CheckFailure(f"{t.name}{where}: {found or _explain(err, t, sample)}{_probes(t)}") from err
        except Exception as err:
            raise CheckFailure(f"{t.name}{where}: {_explain(err, t, sample)}") from err


def _check_gradgradcheck(t: _Target) -> None:
    once = [cls.__name__ for cls in _functions(t) if _once_differentiable(cls)]
    if once:
        raise _Skip(f"{', '.join(once)}.backward is @once_differentiable")
    samples = t.samples(torch.float64)
    if not any(_diff_keys(s) for s in samples):
        raise _Skip("no sample has an input with requires_grad=True")
    for i, sample in enumerate(samples):
        f, inputs, _ = _closure(t, sample)
        if not inputs:
            continue
        where = _where(sample, i, len(samples))
        try:
            torch.autograd.gradgradcheck(f, inputs, raise_exception=True, **GRADGRADCHECK)
        except GradcheckError as err:
            raise CheckFailure(
                f"{t.name}{where}: {_explain(err, t, sample)}. Likely cause: backward is not differentiable as "
                "written: under create_graph=True (torch.is_grad_enabled() in backward) the gradient must be built "
                "from differentiable operations on the saved inputs; a value forward computed and saved (a softmax, "
                "a mask, statistics) is a constant to the second derivative unless backward rebuilds it from the "
                "inputs. If backward is first-order only, mark it @once_differentiable."
            ) from err
        except Exception as err:
            raise CheckFailure(f"{t.name}{where}: {_explain(err, t, sample)}") from err


# ---- parity -----------------------------------------------------------------------------------


def _forward_and_grads(fn: Callable[..., Any], sample: SampleInput, dtype: torch.dtype | None = None):
    values, diff = _fresh(sample, dtype)
    with torch.enable_grad():
        outs = _outputs(_call(fn, sample, values))
    grads = _grads(outs, [values[k] for k in diff])
    return [o.detach() for o in outs], grads, diff


def _compare_runs(
    t: _Target,
    sample: SampleInput,
    where: str,
    got: tuple[list[torch.Tensor], list[torch.Tensor]],
    want: tuple[list[torch.Tensor], list[torch.Tensor]],
    diff: list[Key],
    tol: float,
    atol: float,
    what: str,
    other: str,
) -> float:
    """The largest relative error of (outputs, gradients) against the reference; raises past atol + tol * scale."""
    worst = 0.0
    (outs, grads), (ref_outs, ref_grads) = got, want
    if len(outs) != len(ref_outs):
        raise CheckFailure(f"{t.name}{where}: {len(outs)} outputs but {other} gives {len(ref_outs)}")
    pairs = [(f"output {j}", o, r) for j, (o, r) in enumerate(zip(outs, ref_outs))]
    pairs += [(f"the gradient of {_describe(t, sample, k)}", g, r) for k, g, r in zip(diff, grads, ref_grads)]
    for name, a, b in pairs:
        if a.shape != b.shape:
            raise CheckFailure(f"{t.name}{where}: {name} has shape {tuple(a.shape)}, {other} {tuple(b.shape)}")
        if a.dtype != b.dtype:
            raise CheckFailure(f"{t.name}{where}: {name} is {a.dtype}, {other}'s {b.dtype}")
        err, at = _relative_error(a, b)
        scale = max(1.0, b.detach().double().abs().nan_to_num(posinf=0, neginf=0).max().item()) if b.numel() else 1.0
        worst = max(worst, err)
        if err * scale > atol + tol * scale:
            message = (
                f"{t.name}{where}: {name} differs from the {other}'s ({what}): element {at}: custom "
                f"{_num(a[at].item())} vs {other} {_num(b[at].item())} (error {err:.1e} of the scale {_num(scale)}, "
                f"allowed {tol:.0e})."
            )
            if a.dtype in LOW and not bool(a[at].isfinite()) and bool(b[at].isfinite()):
                message += (
                    f" Likely cause: an intermediate leaves {a.dtype}'s range (float16 ends at 65504). Fix: scale "
                    "before multiplying, and accumulate sums, means and variances in float32 (rounding once at the "
                    "end), as torch does."
                )
            raise CheckFailure(message, err)
    return worst


def _check_parity(t: _Target, dtype: torch.dtype) -> float:
    if t.twin is None:
        raise _Skip("no twin")
    samples = t.samples(dtype)
    if not samples:
        raise _Skip(f"no {dtype} samples")
    if dtype in LOW or t.rtol is None:
        tol = PARITY_TOLERANCE[dtype]
    else:
        tol = t.rtol
    atol = t.atol if (t.atol is not None and dtype not in LOW) else 0.0
    worst = 0.0
    for i, sample in enumerate(samples):
        where = _where(sample, i, len(samples))
        with _no_tf32():
            try:
                want = _forward_and_grads(t.twin, sample)
            except Exception as err:
                raise _Skip(f"the twin does not run on this {dtype} sample: {type(err).__name__}: {err}") from err
            try:
                got = _forward_and_grads(t.op, sample)
            except Exception as err:
                raise CheckFailure(f"{t.name}{where}: {_explain(err, t, sample)}") from err
            try:
                err = _compare_runs(t, sample, where, got[:2], want[:2], got[2], tol, atol, str(dtype), "twin")
            except CheckFailure as failure:
                if dtype not in LOW:
                    raise
                if not _as_accurate(got, want, _forward_and_grads(t.twin, sample, torch.float64), tol):
                    raise CheckFailure(f"{failure}{_low_precision_hint(t, sample)}", failure.error) from None
                err = max(_relative_error(a, b)[0] for a, b in zip(got[0] + got[1], want[0] + want[1]))
        worst = max(worst, err)
    return worst


def _low_precision_hint(t: _Target, sample: SampleInput) -> str:
    """Whether the same sample agrees with the twin in float32: then the low precision is the cause."""
    try:
        got, want = _forward_and_grads(t.op, sample, torch.float32), _forward_and_grads(t.twin, sample, torch.float32)
        _compare_runs(t, sample, "", got[:2], want[:2], got[2], PARITY_TOLERANCE[torch.float32], 0.0, "", "twin")
    except Exception:
        return " (The op differs from its twin in float32 too: see parity_float32.)"
    return (
        " In float32 the same sample agrees with the twin. Likely cause: sums, means or variances accumulated in "
        "the low precision, or an intermediate that leaves its range. Fix: accumulate in float32 and round once "
        "at the end, as torch does."
    )


def _as_accurate(got, want, exact, tol: float) -> bool:
    """In low precision the twin rounds too: the op also passes where each of its results is within
    `tol` of the float64 computation (of the same rounded inputs) or at least as close to it as the twin's."""
    pairs = zip(got[0] + got[1], want[0] + want[1], exact[0] + exact[1])
    return all(_relative_error(a, e)[0] <= max(tol, _relative_error(b, e)[0]) for a, b, e in pairs)


def _check_parity_cuda(t: _Target) -> float:
    if t.device.type != "cpu":
        raise _Skip(f"the samples are on {t.device} already")
    if not torch.cuda.is_available():
        raise _Skip("no CUDA device")
    cuda = torch.device("cuda")
    worst = 0.0
    for dtype in (torch.float64, torch.float32):
        samples = t.samples(dtype)
        for i, sample in enumerate(samples):
            moved = _to_device(sample, cuda)
            where = _where(sample, i, len(samples)) + " on cuda"
            with _no_tf32():
                if t.twin is not None:
                    want, other = _forward_and_grads(t.twin, moved), "twin"
                else:
                    ref = _forward_and_grads(t.op, sample)
                    want, other = ([o.to(cuda) for o in ref[0]], [g.to(cuda) for g in ref[1]], ref[2]), "CPU"
                got = _forward_and_grads(t.op, moved)
            tol = PARITY_TOLERANCE[dtype] * 10
            worst = max(worst, _compare_runs(t, moved, where, got[:2], want[:2], got[2], tol, 0.0, str(dtype), other))
    return worst


def _to_device(sample: SampleInput, device: torch.device) -> SampleInput:
    def move(a):
        if not isinstance(a, torch.Tensor):
            return a
        return a.detach().to(device).requires_grad_(a.requires_grad)

    return SampleInput(tuple(move(a) for a in sample.args), {k: move(v) for k, v in sample.kwargs.items()}, sample.desc)


# ---- torch.func ---------------------------------------------------------------------------------


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str, tol: float) -> None:
    if got.shape != want.shape:
        raise CheckFailure(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err, at = _relative_error(got, want)
    if not err <= tol:
        raise CheckFailure(
            f"{what}: element {at}: {_num(got[at].item())} vs {_num(want[at].item())} (error {err:.1e} > {tol:.0e})"
        )


def _tensor_closure(t: _Target, sample: SampleInput):
    """(f, tensors, keys): f takes every tensor argument (ids and masks too), the rest held fixed."""
    keys = _tensor_keys(sample)

    def f(*tensors):
        return tuple(_outputs(_call(t.op, sample, dict(zip(keys, tensors)))))

    return f, [_get(sample, k) for k in keys], keys


def _func_checks(t: _Target, sample_a: SampleInput, sample_b: SampleInput, where: str) -> None:
    from torch.func import grad, jacrev, vjp, vmap

    tol = t.rtol if t.rtol is not None else SAME_TOLERANCE[torch.float64]
    f, tensors_a, keys = _tensor_closure(t, sample_a)
    _, tensors_b, _ = _tensor_closure(t, sample_b)
    if [x.shape for x in tensors_a] != [x.shape for x in tensors_b]:
        raise CheckFailure(f"{t.name}{where}: two seeds gave samples of different shapes (vmap stacks them)")
    batch = tuple(torch.stack([a.detach(), b.detach()]) for a, b in zip(tensors_a, tensors_b))
    randomness = "same" if t.random else "error"
    stage = "vmap"
    try:
        out_v = vmap(f, randomness=randomness)(*batch)
        for k, tensors in enumerate((tensors_a, tensors_b)):
            loop = f(*(x.detach() for x in tensors))
            for j, (o, w) in enumerate(zip(out_v, loop)):
                _assert_close(o[k], w, f"{t.name}{where}: vmap output {j} of sample {k} differs from a loop", tol)
        argnums = tuple(i for i, x in enumerate(tensors_a) if x.is_floating_point() and x.requires_grad)
        if not argnums:
            return
        first = [o[0] for o in out_v]
        with torch.enable_grad():  # the outputs autograd differentiates (not those marked non-differentiable)
            eager = f(*(x.detach().requires_grad_(i in argnums) for i, x in enumerate(tensors_a)))
        diff_out = [j for j, o in enumerate(eager) if o.requires_grad]
        cts = {j: c for j, c in zip(diff_out, _cotangents([first[j] for j in diff_out]))}

        def scalar(*tensors):
            outs = f(*tensors)
            return sum((outs[j] * c).sum() for j, c in cts.items())

        stage = "per-sample gradients (vmap of grad)"
        per_sample = vmap(grad(scalar, argnums=argnums), randomness=randomness)(*batch)
        for k, tensors in enumerate((tensors_a, tensors_b)):
            leaves = [x.detach().requires_grad_(i in argnums) for i, x in enumerate(tensors)]
            with torch.enable_grad():
                want = torch.autograd.grad(scalar(*leaves), [leaves[i] for i in argnums], allow_unused=True)
            for j, (g, w) in enumerate(zip(per_sample, want)):
                w = torch.zeros_like(g[k]) if w is None else w
                name = _describe(t, sample_a, keys[argnums[j]])
                _assert_close(g[k], w, f"{t.name}{where}: per-sample gradient of {name}, sample {k}", tol)
        fixed = [x.detach() for x in tensors_a]

        def of_diff(*diff):
            full = list(fixed)
            for i, x in zip(argnums, diff):
                full[i] = x
            outs = f(*full)
            return tuple(outs[j] for j in diff_out)

        primals = tuple(fixed[i] for i in argnums)
        leaves = [p.clone().requires_grad_(True) for p in primals]
        ct = tuple(cts[j] for j in diff_out)
        with torch.enable_grad():
            want = torch.autograd.grad(of_diff(*leaves), leaves, ct, allow_unused=True)
        stage = "vjp"
        _, vjp_fn = vjp(of_diff, *primals)
        for j, (g, w) in enumerate(zip(vjp_fn(ct), want)):
            w = torch.zeros_like(g) if w is None else w
            _assert_close(g, w, f"{t.name}{where}: vjp of {_describe(t, sample_a, keys[argnums[j]])}", tol)
        stage = "jacrev"
        jac = jacrev(of_diff, argnums=tuple(range(len(primals))))(*primals)
        want_jac = torch.autograd.functional.jacobian(of_diff, primals)
        for o, (J_o, W_o) in enumerate(zip(jac, want_jac)):
            for j, (J, W) in enumerate(zip(J_o, W_o)):
                name = _describe(t, sample_a, keys[argnums[j]])
                _assert_close(J, W, f"{t.name}{where}: jacrev of output {o} by {name}", tol)
    except CheckFailure:
        raise
    except Exception as err:
        raise CheckFailure(f"{t.name}{where}: {stage}: {_explain(err, t, sample_a)}") from err


def _check_torch_func(t: _Target) -> None:
    pairs = list(zip(t.samples(torch.float64, 0), t.samples(torch.float64, 1)))
    for i, (a, b) in enumerate(pairs):
        _func_checks(t, a, b, _where(a, i, len(pairs)))


# ---- autocast, compile, export ---------------------------------------------------------------------


def autocast_dtypes(device: torch.device) -> list[torch.dtype]:
    return [torch.bfloat16] if device.type == "cpu" else [torch.float16, torch.bfloat16]


def _check_autocast(t: _Target) -> None:
    samples = t.samples(torch.float32)
    for dtype in autocast_dtypes(t.device):
        for i, sample in enumerate(samples):
            where = _where(sample, i, len(samples))

            def run(fn, autocast: bool, sample=sample, dtype=dtype):
                values, diff = _fresh(sample)
                with torch.autocast(t.device.type, dtype=dtype, enabled=autocast), torch.enable_grad():
                    outs = _outputs(_call(fn, sample, values))
                grads = _grads(outs, [values[k] for k in diff])
                return outs, grads, [values[k] for k in diff], diff

            try:
                outs, grads, _, diff = run(t.op, True)
            except Exception as err:
                raise CheckFailure(f"{t.name}{where} under autocast {dtype}: {_explain(err, t, sample)}") from err
            expected = {"lower": dtype, "fp32": torch.float32, "same": torch.float32}.get(t.autocast)
            policy = f"policy {t.autocast!r}"
            if t.autocast is None and t.twin is not None:
                with contextlib.suppress(Exception):
                    twin_outs = run(t.twin, True)[0]
                    expected, policy = twin_outs[0].dtype, "as the twin's"
            for j, o in enumerate(outs):
                if expected is not None and o.is_floating_point() and o.dtype != expected:
                    raise CheckFailure(
                        f"{t.name}{where} under autocast {dtype}: output {j} is {o.dtype}, {policy} wants {expected}"
                    )
            ref_outs, ref_grads, _, _ = run(t.op, False)
            low = any(o.dtype in LOW for o in outs) or t.autocast in (None, "lower")
            tol = AUTOCAST_TOLERANCE[dtype] if low else 1e-5
            for j, (o, r) in enumerate(zip(outs, ref_outs)):
                _assert_close(o.detach().float(), r.detach(), f"{t.name}{where} autocast {dtype} output {j}", tol)
            for g, r, key in zip(grads, ref_grads, diff):
                what = f"{t.name}{where} autocast {dtype} gradient of {_describe(t, sample, key)}"
                _assert_close(g, r, what, tol)


def _check_random_grad(t: _Target, sample: SampleInput, values, outs, grads, diff, what: str) -> None:
    """A random op of the form out = x * mask: the gradient is the cotangent times the output's own mask."""
    (key,) = diff
    x = values[key].detach()
    (g,) = grads
    ct = _cotangents([o for o in outs if o.requires_grad])[0]
    live = x != 0
    _assert_close(g[live], (ct * outs[0].detach() / x)[live], f"{t.name}: {what} gradient against its own mask", 1e-5)


def _check_compile(t: _Target) -> None:
    samples = t.samples(torch.float32)[:1]
    for sample in samples:
        keys = _tensor_keys(sample)
        torch._dynamo.reset()

        op = _on_tensors(t.op, sample, keys)
        compiled = torch.compile(op, fullgraph=True, backend=t.compile_backend, dynamic=False)
        runs = []
        for fn in (op, compiled):
            values, diff = _fresh(sample)
            try:
                with torch.enable_grad():
                    outs = _outputs(fn(*(values[k] for k in keys)))
                grads = _grads(outs, [values[k] for k in diff])
            except Exception as err:
                stage = "torch.compile(fullgraph=True)" if fn is compiled else "eager"
                raise CheckFailure(f"{t.name}: {stage}: {_explain(err, t, sample)}") from err
            runs.append((values, outs, grads, diff))
        (_, want_outs, want_grads, diff), (values, outs, grads, _) = runs
        if t.random:
            _check_random_grad(t, sample, values, outs, grads, diff, "compiled")
            return
        tol = t.rtol if t.rtol is not None else SAME_TOLERANCE[torch.float32]
        for j, (o, w) in enumerate(zip(outs, want_outs)):
            _assert_close(o.detach(), w.detach(), f"{t.name}: compiled output {j} differs from eager", tol)
        for g, w, key in zip(grads, want_grads, diff):
            what = f"{t.name}: compiled gradient of {_describe(t, sample, key)} differs from eager"
            _assert_close(g, w, what, tol)


def _on_tensors(op: Callable[..., Any], sample: SampleInput, keys: list[Key]) -> Callable[..., Any]:
    """op as a function of the sample's tensors (positionally, in `keys` order), the rest held fixed."""

    def f(*tensors):
        return _call(op, sample, dict(zip(keys, tensors)))

    return f


class _Call(torch.nn.Module):
    """A module calling the op on a sample's tensors (what torch.export exports)."""

    def __init__(self, op: Callable[..., Any], sample: SampleInput, keys: list[Key]):
        super().__init__()
        self.op, self.sample, self.keys = op, sample, keys

    def forward(self, *tensors):
        return tuple(_outputs(_call(self.op, self.sample, dict(zip(self.keys, tensors)))))


def _check_export(t: _Target) -> None:
    samples = t.samples(torch.float32)[:1]
    for sample in samples:
        keys = _tensor_keys(sample)
        try:
            program = torch.export.export(_Call(t.op, sample, keys), tuple(_clone(_get(sample, k)) for k in keys))
            exported = program.module()
        except Exception as err:
            raise CheckFailure(f"{t.name}: torch.export: {_explain(err, t, sample)}") from err
        tol = t.rtol if t.rtol is not None else SAME_TOLERANCE[torch.float32]
        values, diff = _fresh(sample)
        with torch.no_grad():
            got = exported(*(values[k].detach() for k in keys))
            want = _outputs(_call(t.op, sample, {k: values[k].detach() for k in keys}))
        if not t.random:
            for j, (o, w) in enumerate(zip(got, want)):
                _assert_close(o, w, f"{t.name}: exported output {j} (no grad) differs from eager", tol)
        # With grad enabled the exported program is differentiable too (torch's autograd on its graph),
        # through the outputs eager autograd differentiates (the graph does not keep the marks of
        # outputs that the Function marked non-differentiable).
        ref_outs, ref_grads, _ = _forward_and_grads(t.op, sample)
        with torch.enable_grad():
            live = [o.requires_grad for o in _outputs(_call(t.op, sample, _fresh(sample)[0]))]
        try:
            with torch.enable_grad():
                outs = list(exported(*(values[k] for k in keys)))
            grads = _grads([o for o, d in zip(outs, live) if d], [values[k] for k in diff])
        except Exception as err:
            raise CheckFailure(f"{t.name}: the exported program with grad: {_explain(err, t, sample)}") from err
        if t.random:
            _check_random_grad(t, sample, values, outs, grads, diff, "exported")
            continue
        for j, (o, w) in enumerate(zip(outs, ref_outs)):
            _assert_close(o.detach(), w, f"{t.name}: exported output {j} (with grad) differs from eager", tol)
        for g, w, key in zip(grads, ref_grads, diff):
            what = f"{t.name}: the exported program's gradient of {_describe(t, sample, key)} differs from eager"
            try:
                _assert_close(g, w, what, tol * 10)
            except CheckFailure as failure:
                raise CheckFailure(
                    f"{failure}. Likely cause: torch.export keeps forward's operations, which torch's autograd then "
                    "differentiates, while eager runs the hand-written backward: that backward is not the derivative "
                    "of forward (see gradcheck)."
                ) from None


def _check_error_inputs(t: _Target) -> None:
    errors = t.errors() if t.errors is not None else []
    if not errors:
        raise _Skip("no error inputs")
    for error in errors:
        check_error_input(t.spec, error)


# ---- running them -------------------------------------------------------------------------------


def _run_one(t: _Target, name: str) -> Result:
    try:
        if name in PARITY_DTYPES:
            err = _check_parity(t, PARITY_DTYPES[name])
            return Result("SUCCESS", error=err)
        if name == "parity_cuda":
            return Result("SUCCESS", error=_check_parity_cuda(t))
        run = {
            "no_input_mutation": _check_no_input_mutation,
            "saved_tensors": _check_saved_tensors,
            "determinism": _check_determinism,
            "gradcheck": _check_gradcheck,
            "gradgradcheck": _check_gradgradcheck,
            "batched_gradcheck": lambda t: _check_gradcheck(t, batched=True),
            "torch_func": _check_torch_func,
            "autocast": _check_autocast,
            "compile": _check_compile,
            "export": _check_export,
            "error_inputs": _check_error_inputs,
        }[name]
        run(t)
        return Result("SUCCESS")
    except _Skip as skip:
        return Result("SKIPPED", str(skip))
    except CheckFailure as failure:
        return Result("FAILED", f"{name}: {failure}", failure.error)
    except Exception as err:  # a check that could not run is a failure, with what it says
        return Result("FAILED", f"{name}: {t.name}: {_explain(err, t)}")


def select_checks(checks: Iterable[str] | None, available: tuple[str, ...]) -> list[str]:
    if checks is None:
        return list(available)
    if isinstance(checks, str):
        checks = [checks]
    chosen = []
    for name in checks:
        expanded = [c for c in available if c.startswith("parity_")] if name == "parity" else [name]
        for c in expanded:
            if c not in available:
                raise ValueError(
                    f"unknown check {c!r}; choose from {list(available)} (or 'parity' for every parity check)"
                )
            if c not in chosen:
                chosen.append(c)
    return [c for c in available if c in chosen]  # always in CHECKS order


def run_checks(
    t: _Target, checks: Iterable[str] | None = None, available: tuple[str, ...] = CHECKS
) -> dict[str, Result]:
    """Each selected check's Result, in CHECKS order; torch's global generators are restored afterwards."""
    results = {}
    with seeded(0):
        for name in select_checks(checks, available):
            results[name] = _run_one(t, name)
    return results


def _as_strings(results: dict[str, Result], raise_exception: bool) -> dict[str, str]:
    if raise_exception:
        for r in results.values():
            if r.failed:
                raise AssertionError(r.message)
    return {name: str(r) for name, r in results.items()}


# ---- the public entry points ----------------------------------------------------------------------


def spec_target(
    spec: OpSpec, device: torch.device | str = "cpu", seed: int = 0, compile_backend: str = "aot_eager"
) -> _Target:
    device = torch.device(device)
    return _Target(
        name=spec.name,
        op=spec.op,
        twin=spec.twin,
        device=device,
        make=lambda dtype, s: spec.samples(device, dtype, requires_grad=True, seed=seed + s),
        autocast=spec.autocast,
        random=spec.random,
        compile_backend=compile_backend,
        errors=lambda: spec.errors(device),
        spec=spec,
    )


def check_spec(
    spec: OpSpec,
    *,
    device: torch.device | str = "cpu",
    checks: Iterable[str] | None = None,
    raise_exception: bool = True,
    seed: int = 0,
    compile_backend: str = "aot_eager",
) -> dict[str, str]:
    """Every check (or those named in `checks`, among SPEC_CHECKS) of a spec's op on its samples.

    Returns check name -> "SUCCESS", "SKIPPED: <why>" or the failure's message; with
    raise_exception=True the first failure raises an AssertionError carrying its message.
    """
    target = spec_target(spec, device, seed, compile_backend)
    return _as_strings(run_checks(target, checks, SPEC_CHECKS), raise_exception)


def _as_samples(args: Any, kwargs: dict[str, Any] | None) -> list[SampleInput]:
    if isinstance(args, list):
        if kwargs:
            raise TypeError(
                "check_function: with a list of sample calls, give each its kwargs (SampleInput(args, kwargs))"
            )
        samples = [a if isinstance(a, SampleInput) else SampleInput(tuple(a)) for a in args]
    elif isinstance(args, SampleInput):
        samples = [args]
    else:
        samples = [SampleInput(tuple(args) if isinstance(args, tuple) else (args,), dict(kwargs or {}))]
    if not samples:
        raise ValueError("check_function: no sample call given")
    if not any(s.tensors() for s in samples):
        raise ValueError("check_function: a sample call needs at least one tensor argument")
    return samples


def _derived(samples: list[SampleInput], dtype: torch.dtype, seed: int) -> list[SampleInput]:
    """The samples with their floating tensors in `dtype` (seed > 0: values nudged by about 1%, same shapes)."""
    gen = torch.Generator().manual_seed(seed)

    def convert(a):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            return a
        x = _clone(a)
        if seed:
            noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device)
            x = x + (0.01 * max(1e-3, x.double().abs().mean().item()) * noise).to(x.dtype)
        return x.to(dtype).requires_grad_(a.requires_grad)

    return [
        SampleInput(tuple(convert(a) for a in s.args), {k: convert(v) for k, v in s.kwargs.items()}, s.desc)
        for s in samples
    ]


def _callable_name(fn: Callable[..., Any]) -> str:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return owner.__name__
    return getattr(fn, "__name__", None) or type(fn).__name__


def check_function(
    fn: Callable[..., Any],
    args: Any,
    kwargs: dict[str, Any] | None = None,
    *,
    twin: Callable[..., Any] | None = None,
    checks: Iterable[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    raise_exception: bool = True,
) -> dict[str, str]:
    """Check a callable that applies a torch.autograd.Function, in the manner of torch.library.opcheck.

    Args:
        fn: `MyFunction.apply` or a typed wrapper calling it; returns a tensor or a tuple of tensors.
        args: one sample call's positional arguments (a tuple), in float64, with requires_grad=True
            on the differentiable tensors; or a list of sample calls (tuples or SampleInputs).
            float32, float16 and bfloat16 copies (and CUDA ones, where a GPU exists) are derived.
        kwargs: the sample call's keyword arguments.
        twin: a reference with the same signature built from torch's own ops; without one the
            parity checks are skipped and the others still run.
        checks: names from CHECKS to run (default all; "parity" selects every parity check).
        atol, rtol: override the float64 / float32 tolerances of the comparisons with the twin
            (pass when |custom - twin| <= atol + rtol * max(1, max |twin|)) and of the
            torch.func, compile and export comparisons (rtol); the low-precision checks keep theirs.
        raise_exception: raise AssertionError with the first failure's message.

    Returns:
        check name -> "SUCCESS", "SKIPPED: <why>" or the failure's message.
    """
    samples = _as_samples(args, kwargs)
    device = samples[0].tensors()[0].device if samples[0].tensors() else torch.device("cpu")
    target = _Target(
        name=_callable_name(fn),
        op=fn,
        twin=twin,
        device=device,
        make=lambda dtype, seed: _derived(samples, dtype, seed),
        atol=atol,
        rtol=rtol,
    )
    return _as_strings(run_checks(target, checks), raise_exception)
