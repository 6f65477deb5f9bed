"""Input validation shared by the ops: every error names the op and what was wrong."""
from __future__ import annotations

import torch


def describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, t, ndim: int | tuple[int, ...] | None = None, floating: bool = True) -> None:
    """`t` is a tensor with the right number of dimensions and a floating (or integer) dtype."""
    if type(t) is torch.Tensor and ndim is None and floating and t.dtype in _FLOATS:
        return  # the common case, checked in one step (ops run this on every call)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if not floating and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{op}: {name} must be an integer tensor, got dtype {t.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{op}: {name} must have {want} dimensions, got shape {tuple(t.shape)}")


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
