"""One registry of the project's networks, in the manner of torchvision's ``models/_api.py``.

Every network is registered once under one key, and built by that key from a plain config::

    net = get_model("conv_net", filters=32, kernel_size=5, hidden=256)
    net = build_model({"name": "lstm_captioner", "vocab_size": 1000, "feature_dim": 1280})

The keys: ``two_layer_net``, ``conv_net`` (``networks``), ``rnn_captioner``, ``lstm_captioner``,
``transformer_captioner`` (``captioners``) and ``transfer_<backbone>`` for each backbone of
``pretrained.BACKBONES`` (``transfer``). Checkpoints store ``{"name": key, **config}`` (a plain dict,
so they load with ``weights_only=True``); the programs and the tests build networks the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

B = TypeVar("B", bound=Callable[..., nn.Module])

BUILTIN_MODULES = ("lightning_modules.networks", "lightning_modules.captioners", "lightning_modules.transfer")
BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[B], B]:
    """Decorator: register a builder (a class or a function taking the config as keywords) under `name`."""

    def wrapper(builder: B) -> B:
        if name in BUILDERS and BUILDERS[name] is not builder:
            raise ValueError(f"register_model: {name!r} is registered already ({BUILDERS[name]})")
        BUILDERS[name] = builder
        return builder

    return wrapper


def _load_builtins() -> None:
    # The networks register themselves when their modules are imported.
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Every registered key, sorted."""
    _load_builtins()
    return sorted(BUILDERS)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    _load_builtins()
    if name not in BUILDERS:
        raise ValueError(f"get_model: unknown model {name!r}; choose one of {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name]


def get_model(name: str, **config: Any) -> nn.Module:
    """A fresh network: the builder registered as `name`, called with `config`."""
    return get_model_builder(name)(**config)


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A fresh network from its spec, ``{"name": key, **config}`` (what checkpoints store)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"build_model: expected a dict with a 'name' key (a registered model), got {spec!r}")
    return get_model(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
