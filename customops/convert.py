"""customops.convert: the same network, built from customops layers.

In the shape of torch.nn.SyncBatchNorm.convert_sync_batchnorm: walk the module tree by
named_children(), build each layer's customops twin from the layer's own options, hand it the
layer's parameters and buffers, and put it in the layer's place.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

from . import modules as co

# Layers that only hold or route other modules (or reshape): kept, and their children converted.
_STRUCTURAL = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Flatten, nn.Unflatten)


class ConversionWarning(UserWarning):
    """convert(strict=False) left some layers as torch.nn layers (the message lists them)."""


def _meta(factory: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    """The twin built on the meta device (no memory, no initialisation); it then takes the old tensors."""
    return factory(*args, **kwargs, device="meta")


def _take(new: nn.Module, old: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """new uses old's parameters and buffers of these names (the same tensors, requires_grad included)."""
    for name in names:
        setattr(new, name, getattr(old, name))
    return new


def _linear(m: nn.Linear) -> nn.Module:
    new = _meta(co.Linear, m.in_features, m.out_features, bias=m.bias is not None)
    # co.Linear keeps rows of x as samples: its weight is (in_features, out_features), nn.Linear's transposed
    new.weight = nn.Parameter(m.weight.detach().t().contiguous(), requires_grad=m.weight.requires_grad)
    return _take(new, m, ("bias",))


def _conv2d(m: nn.Conv2d) -> nn.Module:
    new = _meta(
        co.Conv2d, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
        bias=m.bias is not None,
    )  # fmt: skip
    return _take(new, m, ("weight", "bias"))


def _conv2d_options(m: nn.Conv2d) -> str | None:
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} is not supported (only 'zeros')"
    if m.padding == "same" and any(d * (k - 1) % 2 for d, k in zip(m.dilation, m.kernel_size)):
        return f"padding='same' with kernel {m.kernel_size} and dilation {m.dilation} pads unevenly (not supported)"
    return None


def _batch_norm(twin):
    def convert(m: nn.modules.batchnorm._BatchNorm) -> nn.Module:
        new = _meta(twin, m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        return _take(new, m, ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))

    return convert


def _layer_norm(m: nn.LayerNorm) -> nn.Module:
    new = _meta(co.LayerNorm, m.normalized_shape[0], m.eps, m.elementwise_affine, bias=m.bias is not None)
    return _take(new, m, ("weight", "bias"))


def _refused(m: nn.Module, options: dict[str, object]) -> str | None:
    """Why m's options have no twin: the first option that differs from the one value supported."""
    for name, supported in options.items():
        if getattr(m, name) != supported:
            return f"{name}={getattr(m, name)!r} is not supported (only {name}={supported!r})"
    return None


# torch.nn layer type (matched exactly, not subclasses) -> (why its options have no twin (None: they
# have one), its twin). The twin is built from the layer's options and takes its tensors.
TWINS: dict[type[nn.Module], tuple[Callable[[nn.Module], str | None], Callable[[nn.Module], nn.Module]]] = {
    nn.Linear: (lambda m: None, _linear),
    nn.Conv2d: (_conv2d_options, _conv2d),
    nn.BatchNorm1d: (lambda m: None, _batch_norm(co.BatchNorm1d)),
    nn.BatchNorm2d: (lambda m: None, _batch_norm(co.BatchNorm2d)),
    nn.GroupNorm: (
        lambda m: None,
        lambda m: _take(_meta(co.GroupNorm, m.num_groups, m.num_channels, m.eps, m.affine), m, ("weight", "bias")),
    ),
    nn.LayerNorm: (
        lambda m: (
            None
            if len(m.normalized_shape) == 1
            else (f"normalized_shape={tuple(m.normalized_shape)} is not supported (only the last dimension)")
        ),
        _layer_norm,
    ),
    nn.ReLU: (lambda m: None, lambda m: co.ReLU()),  # out of place (inplace only saves memory)
    nn.ReLU6: (lambda m: None, lambda m: co.ReLU6(m.inplace)),
    nn.Hardtanh: (lambda m: None, lambda m: co.Hardtanh(m.min_val, m.max_val, m.inplace)),
    nn.MaxPool2d: (
        lambda m: _refused(m, {"ceil_mode": False, "return_indices": False}),
        lambda m: co.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation),
    ),
    nn.AvgPool2d: (
        lambda m: None,
        lambda m: co.AvgPool2d(
            m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
        ),
    ),
    nn.AdaptiveAvgPool2d: (lambda m: None, lambda m: co.AdaptiveAvgPool2d(m.output_size)),
    nn.Dropout: (lambda m: None, lambda m: co.Dropout(m.p)),
    nn.Embedding: (
        lambda m: _refused(m, {"max_norm": None, "scale_grad_by_freq": False, "sparse": False}),
        lambda m: _take(_meta(co.WordEmbedding, m.num_embeddings, m.embedding_dim, m.padding_idx), m, ("weight",)),
    ),
}


def _plan(module: nn.Module, path: str, problems: list[tuple[str, str]]) -> None:
    """Record, for module and everything below it, each layer that cannot be converted and why."""
    kind = type(module)
    if kind in TWINS:
        reason = TWINS[kind][0](module)
        if reason is not None:
            problems.append((path, f"{kind.__name__}: {reason}"))
        return
    if kind.__module__.startswith("customops."):
        return  # a customops layer already
    twin_of = next((t for t in TWINS if isinstance(module, t)), None)
    if twin_of is not None:
        problems.append(
            (path, f"{kind.__name__}, a subclass of torch.nn.{twin_of.__name__}: its forward may differ, not converted")
        )
        return
    if kind.__module__.startswith("torch.") and not isinstance(module, _STRUCTURAL):
        problems.append((path, f"{kind.__name__}: no customops twin"))
        return  # its own forward uses its children its own way: leave the whole layer alone
    for name, child in module.named_children():
        _plan(child, f"{path}.{name}" if path else name, problems)


def unsupported_layers(module: nn.Module) -> list[tuple[str, str]]:
    """The layers of `module` that convert() cannot replace: (path in the tree, what is unsupported)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert: module must be a torch.nn.Module, got {type(module).__name__}")
    problems: list[tuple[str, str]] = []
    _plan(module, "", problems)
    return problems


def _replace(module: nn.Module, skip: set[str], path: str) -> nn.Module:
    """module with every convertible layer below it (itself included) replaced by its twin."""
    if path in skip:
        return module
    kind = type(module)
    if kind in TWINS:
        return TWINS[kind][1](module).train(module.training)
    if kind.__module__.startswith("customops."):
        return module
    for name, child in list(module.named_children()):
        new = _replace(child, skip, f"{path}.{name}" if path else name)
        if new is not child:
            module.add_module(name, new)  # same name, same place in the order
    return module


def _listing(problems: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {path or '(the module itself)'}: {reason}" for path, reason in problems)


def convert(module: nn.Module, *, strict: bool = True, inplace: bool = False) -> nn.Module:
    """The same network with every torch.nn layer that has a customops twin replaced by that twin.

    Twins (matched by exact type): Linear, Conv2d (zero padding), BatchNorm1d, BatchNorm2d,
    GroupNorm, LayerNorm (last dimension), ReLU, ReLU6, Hardtanh, MaxPool2d (ceil_mode=False),
    AvgPool2d, AdaptiveAvgPool2d, Dropout, Embedding (no max_norm, scale_grad_by_freq or sparse).
    Each twin is built from the layer's options and takes its parameters and buffers (values,
    requires_grad, device, dtype, train/eval mode); co.Linear's weight is nn.Linear's transposed
    ((in, out): rows of x are samples). Containers (Sequential, ModuleList, ModuleDict) and modules
    of other libraries or of your own (torchvision's blocks, say) are kept and their children
    converted. The customops BatchNorm layers subclass torch.nn.modules.batchnorm._BatchNorm, so
    code that finds batch-norm layers by that class still finds them.

    What stays as it is: functional calls inside a module's own forward (F.relu, torch.flatten,
    x + identity, ...) run natively; code that reads a converted layer's weight itself sees
    customops' layout; hooks registered on a replaced layer are not carried over.

    Args:
        module: any nn.Module (a layer itself is replaced and returned).
        strict: a layer without a twin (a torch.nn layer not listed, e.g. nn.Conv1d or nn.SiLU), or
            with options its twin does not support (e.g. padding_mode="reflect", ceil_mode=True),
            raises one ValueError naming each such layer's path in the tree and what is unsupported.
            strict=False leaves those layers native and warns (ConversionWarning) with the same
            list; `unsupported_layers(module)` returns it.
        inplace: convert `module` itself (its layers are replaced in place and share their tensors
            with the twins). By default the module is deep-copied first: the result shares
            nothing with it.

    Returns:
        The converted module (`module` itself when inplace=True, unless it is a layer).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert: module must be a torch.nn.Module, got {type(module).__name__}")
    for name, flag in (("strict", strict), ("inplace", inplace)):
        if not isinstance(flag, bool):
            raise TypeError(f"convert: {name} must be a bool, got {type(flag).__name__}")
    problems = unsupported_layers(module)
    if problems and strict:
        raise ValueError(
            f"convert: {len(problems)} layer(s) cannot be converted to customops (pass strict=False to keep "
            f"them as torch.nn layers):\n{_listing(problems)}"
        )
    if not inplace:
        try:
            module = copy.deepcopy(module)
        except RuntimeError as err:  # e.g. a non-leaf tensor stored on the module
            raise ValueError(
                f"convert: cannot copy the module ({err}); pass inplace=True to convert it in place"
            ) from err
    with torch.no_grad():
        converted = _replace(module, {path for path, _ in problems}, "")
    if problems:
        warnings.warn(
            f"convert: {len(problems)} layer(s) left as torch.nn layers:\n{_listing(problems)}",
            ConversionWarning,
            stacklevel=2,
        )
    return converted
