"""What every public op does before its Function runs: validate the arguments, then follow
torch's autocast policy. Every error names the op and what was wrong.

Checks that read tensor *values* (label ranges, word ids) run only in eager mode on plain
tensors: while torch.compile / torch.export trace, or inside torch.func transforms, the
values are symbolic or batched, and reading them would break the graph.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INDEX = (torch.int64, torch.int32)


def check_tensor(op: str, name: str, t, ndim: int | tuple[int, ...] | None = None, floating: bool = True) -> None:
    """`t` is a tensor with the right number of dimensions and a floating (or integer) dtype."""
    if ndim is None and floating and isinstance(t, torch.Tensor) and t.dtype in _FLOATS:
        return  # the common case, checked in one step (ops run this on every call)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and t.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if not floating and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{op}: {name} must be an integer tensor, got dtype {t.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{op}: {name} must have {want} dimensions, got shape {tuple(t.shape)}")


def check_index(op: str, name: str, t, ndim: int | None = None) -> None:
    """`t` holds int64 (or int32) class or word ids."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _INDEX:
        raise TypeError(f"{op}: {name} must be an integer tensor of int64 (or int32) ids, got dtype {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


def check_shape(op: str, name: str, t: torch.Tensor, shape: tuple[int, ...], why: str = "") -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}{why}, got {tuple(t.shape)}")


def check_same_dtype_device(op: str, **tensors) -> None:
    """All floating tensors share one dtype; all tensors share one device."""
    present = {k: v for k, v in tensors.items() if v is not None}
    first_name, first = next(iter(present.items()))
    for name, t in present.items():
        if t.device != first.device:
            raise ValueError(
                f"{op}: tensors are on different devices: {first_name} on {first.device}, {name} on {t.device}"
            )
        if t.is_floating_point() and first.is_floating_point() and t.dtype != first.dtype:
            raise TypeError(
                f"{op}: mixed dtypes: {first_name} is {first.dtype} but {name} is {t.dtype}; convert one of them"
            )


def pair(op: str, name: str, value) -> tuple[int, int]:
    """An int or a pair of ints, as used for kernel sizes, strides and padding."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def tracing() -> bool:
    """True while torch.compile or torch.export traces."""
    return torch.compiler.is_compiling()


def in_place_ok() -> bool:
    """Whether an op may overwrite its own temporaries in place (saving a buffer): only in eager
    mode outside autograd. While tracing, the exported program must stay differentiable by
    torch's own autograd (and the compiler fuses buffers anyway); while a graph is built
    (double backward), autograd needs the values it saved."""
    return not tracing() and not torch.is_grad_enabled()


def unwrapped(*tensors: torch.Tensor | None) -> bool:
    """No tensor is a torch.func wrapper (vmap, grad) or batched by gradcheck's vmap: only then may an
    op write one operand into another's buffer (a batched operand cannot go into an unbatched buffer)."""
    if tracing():
        return True
    functorch = torch._C._functorch
    return not any(
        t is not None and (functorch.is_functorch_wrapped_tensor(t) or functorch.is_legacy_batchedtensor(t))
        for t in tensors
    )


def values_readable(*tensors: torch.Tensor) -> bool:
    """True when data-dependent checks may read these tensors' values (eager mode, plain tensors)."""
    if tracing():
        return False
    return not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def channels_last(t: torch.Tensor) -> bool:
    """t is a 4-D tensor in channels-last memory (torch.func's tensors only report the default format)."""
    if not tracing() and not unwrapped(t):
        return False
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def new_in_layout(shape, like: torch.Tensor, layout_of: torch.Tensor, zero: bool = False) -> torch.Tensor:
    """A new (uninitialised, or zero) tensor of like's dtype and device, in layout_of's memory format
    (channels-last or contiguous), so that an op's result keeps its input's layout."""
    fmt = torch.channels_last if len(shape) == 4 and channels_last(layout_of) else torch.contiguous_format
    t = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
    return t.zero_() if zero else t


def check_ids(op: str, name: str, ids: torch.Tensor, bound: int, what: str = "ids") -> None:
    """Every id lies in [0, bound); skipped where values can't be read (see values_readable)."""
    if ids.numel() == 0 or not values_readable(ids):
        return
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if lo < 0 or hi >= bound:
        raise ValueError(f"{op}: {name} must hold {what} in [0, {bound}), got values from {lo} to {hi}")


# ---- mixed precision -------------------------------------------------------------------
# torch's autocast runs matrix products and convolutions in the low precision and losses in
# float32; elementwise ops and lookups keep their input's dtype. The ops follow the same
# policy: the public function casts the floating inputs (a differentiable .to(), so each
# gradient comes back in its parameter's dtype) and runs the Function with autocast off, so
# that forward and backward compute in exactly the dtype chosen here.

LOWER = "lower"  # matmul-like: the autocast dtype (float16 / bfloat16)
FP32 = "fp32"  # losses: float32


def autocast_cast(policy: str, *tensors: torch.Tensor | None) -> tuple[Any, ...]:
    """The tensors cast as autocast would for an op of this policy; unchanged outside autocast."""
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None or not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.float32 if policy == FP32 else torch.get_autocast_dtype(first.device.type)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


def apply(function: type[torch.autograd.Function], *args: Any) -> Any:
    """function.apply(*args), with autocast off inside if it is on (the inputs are cast already)."""
    device_type = next(a for a in args if isinstance(a, torch.Tensor)).device.type
    if not torch.is_autocast_enabled(device_type):
        return function.apply(*args)
    with torch.autocast(device_type, enabled=False):
        return function.apply(*args)


def check_recurrent(
    op: str,
    x,
    states: dict[str, Any],
    Wx,
    Wh,
    b,
    gates: int,
    sequence: bool,
) -> None:
    """Shapes, dtypes and devices of a recurrent op's inputs; `gates` is 1 (RNN) or 4 (LSTM)."""
    tensors = {"x": x, **states, "Wx": Wx, "Wh": Wh, "b": b}
    for name, t in tensors.items():
        check_tensor(op, name, t)
    check_same_dtype_device(op, **tensors)
    want = "(N, T, D)" if sequence else "(N, D)"
    if x.dim() != (3 if sequence else 2):
        raise ValueError(f"{op}: x must be {want}, got shape {tuple(x.shape)}")
    if sequence and x.shape[1] == 0:
        raise ValueError(f"{op}: x has no time steps (shape {tuple(x.shape)}, T = 0)")
    if Wh.dim() != 2:
        raise ValueError(f"{op}: Wh must be (H, {gates if gates > 1 else ''}H), got shape {tuple(Wh.shape)}")
    H = Wh.shape[0]
    N, D = x.shape[0], x.shape[-1]
    G = gates * H
    expected = {"Wx": (D, G), "Wh": (H, G), "b": (G,), **{name: (N, H) for name in states}}
    for name, shape in expected.items():
        check_shape(op, name, tensors[name], shape, f" for x {tuple(x.shape)} and hidden size {H}")


class Function(torch.autograd.Function):
    """The recommended base for a hand-written `torch.autograd.Function` (every customops op uses it).

    Write the form PyTorch's extending guide recommends: `forward(*inputs)` computes (no ctx),
    `setup_context(ctx, inputs, output)` saves with `ctx.save_for_backward(...)`, and
    `backward(ctx, *grad_outputs)` returns one gradient per input of forward, None where
    `ctx.needs_input_grad[i]` is False. What this base adds:

    - `generate_vmap_rule = True`: torch.func derives vmap of forward and backward, so `vmap`,
      `grad`, `vjp`, `jacrev` and per-sample gradients work (a plain torch.autograd.Function
      refuses them: "does not have vmap support").
    - A check at class definition: a `forward(ctx, ...)` without `setup_context` (the older form,
      which torch.func cannot use) raises TypeError saying how to split it.
    - forward's signature computed once per class: torch binds forward's arguments with
      inspect.signature on every call of a Function that has setup_context, which costs a few
      microseconds per call (what matters for small ops such as a 128x10 loss).

    Check a subclass with `customops.testing.check_function(MyFunction.apply, args)`.
    """

    generate_vmap_rule = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is None:
            return
        fn = forward.__func__ if isinstance(forward, staticmethod) else forward
        params = list(inspect.signature(fn).parameters)
        if params and params[0] == "ctx" and cls.setup_context is torch.autograd.Function.setup_context:
            raise TypeError(
                f"{cls.__name__}: customops.Function takes forward(*inputs) without ctx and saves in "
                "setup_context(ctx, inputs, output); move what forward saves on ctx there "
                "(ctx.save_for_backward(...)), or subclass torch.autograd.Function for the older form"
            )
        if isinstance(forward, staticmethod):
            forward.__func__.__signature__ = inspect.signature(forward.__func__)
