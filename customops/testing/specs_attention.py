"""Registry entries of the attention layers: layer_norm, dropout, scaled_dot_product_attention.

Twins: F.layer_norm and F.scaled_dot_product_attention; dropout's twin multiplies by the
same mask drawn from the same seed (torch's F.dropout draws its own). The benchmark rows time
forward+backward at the attention captioner's shapes against F.layer_norm, F.dropout and
F.scaled_dot_product_attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import scaled_dot_product_attention
from ..dropout import dropout
from ..norm import layer_norm
from .registry import BenchCase, Case, OpSpec
from .twins import fwd_bwd

P_DROP = 0.3


def _randn(shape, dtype, device, gen, grad=True, scale=1.0) -> torch.Tensor:
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    return t.requires_grad_(grad)


def _noncontig(shape, dtype, device, gen) -> torch.Tensor:
    base = _randn(tuple(reversed(shape)), dtype, device, gen, grad=False)
    return base.permute(*reversed(range(len(shape)))).requires_grad_()


# --------------------------------------------------------------------------- layer norm


def _layer_norm_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s, **k: _randn(s, dtype, device, gen, **k)  # noqa: E731
    return [
        ((r(3, 5), r(5), r(5)), {}),
        ((r(2, 3, 4, scale=3.0) + 5, r(4), r(4)), {"eps": 1e-3}),  # far from zero mean, other eps
        ((_noncontig((4, 3, 6), dtype, device, gen), r(6), None), {}),
        ((r(2, 1, 7), None, None), {}),
    ]


def layer_norm_twin(x, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------- dropout


def seeded_dropout(x: torch.Tensor) -> torch.Tensor:
    """co.dropout with p = 0.3 and a mask drawn from a fresh generator seeded 0: every call agrees.

    (torch.compile cannot trace a Generator made inside the graph: compiled, the global one draws.)
    """
    if torch.compiler.is_compiling():
        return dropout(x, P_DROP)
    return dropout(x, P_DROP, generator=torch.Generator(device=x.device).manual_seed(0))


def seeded_dropout_twin(x: torch.Tensor) -> torch.Tensor:
    keep = 1.0 - P_DROP
    gen = torch.Generator(device=x.device).manual_seed(0)
    return x * torch.empty_like(x, memory_format=torch.contiguous_format).bernoulli_(keep, generator=gen).div_(keep)


def _dropout_cases(dtype, device, gen) -> list[Case]:
    return [
        ((_randn((4, 5), dtype, device, gen),), {}),
        ((_randn((2, 3, 4), dtype, device, gen),), {}),
        ((_noncontig((3, 6), dtype, device, gen),), {}),
        ((_randn((7,), dtype, device, gen),), {}),
    ]


# --------------------------------------------------------------------------- attention


def attention_twin(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _attention_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    causal = torch.ones(4, 4, dtype=torch.bool, device=device).tril()  # (S, T), broadcast over N, H
    keys = torch.rand(2, 1, 1, 5, generator=gen) > 0.4
    keys[..., 0] = True  # every query sees at least one key
    return [
        ((r(2, 3, 4, 5), r(2, 3, 6, 5), r(2, 3, 6, 3)), {}),  # cross-attention, Ev != E
        ((r(1, 2, 4, 3), r(1, 2, 4, 3), r(1, 2, 4, 3), causal), {}),  # causal self-attention
        ((r(2, 1, 3, 4), r(2, 1, 5, 4), r(2, 1, 5, 4), keys.to(device)), {}),  # key padding, (N, 1, 1, T)
        (
            (_noncontig((1, 2, 3, 4), dtype, device, gen), r(1, 2, 2, 4), _noncontig((1, 2, 2, 3), dtype, device, gen)),
            {},
        ),
    ]


SPECS: list[OpSpec] = [
    OpSpec("layer_norm", layer_norm, layer_norm_twin, _layer_norm_cases, autocast="fp32"),
    OpSpec("dropout", seeded_dropout, seeded_dropout_twin, _dropout_cases, random=True),
    OpSpec(
        "scaled_dot_product_attention", scaled_dot_product_attention, attention_twin, _attention_cases, autocast="lower"
    ),
]


# --------------------------------------------------------------------------- benchmark rows

N, T, D = 64, 16, 256  # attention captioner: 64 captions of 16 steps, model width 256
H, S, K, E = 4, 16, 49, 64  # 4 heads; 16 queries attend to 7x7 image positions; 64 features per head


def _bench_layer_norm(device):
    x = torch.randn(N, T, D, device=device, requires_grad=True)
    w = torch.ones(D, device=device, requires_grad=True)
    b = torch.zeros(D, device=device, requires_grad=True)
    return fwd_bwd(layer_norm, (x, w, b), (x, w, b)), fwd_bwd(layer_norm_twin, (x, w, b), (x, w, b))


def _bench_dropout(device):
    x = torch.randn(N, T, D, device=device, requires_grad=True)
    return fwd_bwd(dropout, (x, 0.1), (x,)), fwd_bwd(F.dropout, (x, 0.1), (x,))


def _bench_attention(queries: int, keys: int, causal: bool):
    def setup(device):
        q = torch.randn(N, H, queries, E, device=device, requires_grad=True)
        k = torch.randn(N, H, keys, E, device=device, requires_grad=True)
        v = torch.randn(N, H, keys, E, device=device, requires_grad=True)
        mask = torch.ones(queries, keys, dtype=torch.bool, device=device).tril() if causal else None
        return (
            fwd_bwd(scaled_dot_product_attention, (q, k, v, mask), (q, k, v)),
            fwd_bwd(attention_twin, (q, k, v, mask), (q, k, v)),
        )

    return setup


BENCH: list[BenchCase] = [
    BenchCase(f"layer_norm {N}x{T}x{D}", _bench_layer_norm),
    BenchCase(f"dropout {N}x{T}x{D}, p=0.1", _bench_dropout),
    BenchCase(f"attention {N}x{H}x{S}x{E}, {K} keys", _bench_attention(S, K, causal=False)),
    BenchCase(f"attention {N}x{H}x{T}x{E}, causal self", _bench_attention(T, T, causal=True)),
]
