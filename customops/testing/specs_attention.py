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
from .registry import BenchCase, ErrorInput, OpSpec, SampleInput, tensor_maker, transposed
from .twins import fwd_bwd

P_DROP = 0.3
LOW = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- layer norm


def sample_layer_norm(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(3, 5), make(5), make(5)))
    yield SampleInput((make(2, 3, 4, low=2.0, high=8.0), make(4), make(4)), {"eps": 1e-3}, desc="mean far from 0, eps")
    yield SampleInput((transposed(make, 4, 3, 6), make(6), None), desc="transposed x, no bias")
    yield SampleInput((make(2, 1, 7), None, None), desc="no weight, no bias")
    yield SampleInput((make(5), make(5), make(5, noncontiguous=True)), desc="a 1-D x, non-contiguous bias")
    if dtype in LOW:  # sum of squared deviations far beyond float16's 65504 (statistics must be float32)
        yield SampleInput(
            (make(4, 256, low=-35.0, high=35.0), make(256), make(256)), desc="rows of 256 values up to 35"
        )


def layer_norm_twin(x, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def error_layer_norm(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(3, 4), make(5))), ValueError, r"weight must have shape \(4,\)")
    yield ErrorInput(SampleInput((make(3, 4), make(4), make(4, 1))), ValueError, "bias must have 1")
    yield ErrorInput(SampleInput((torch.ones(3, 4, dtype=torch.long, device=device),)), TypeError, "floating")
    yield ErrorInput(SampleInput((make(3, 4),), {"eps": 0}), ValueError, "eps must be a positive")
    yield ErrorInput(SampleInput((make(3, 4), make(4, dtype=torch.float64))), TypeError, "mixed")
    yield ErrorInput(SampleInput((make(3, 0),)), ValueError, "D >= 1")


# --------------------------------------------------------------------------- dropout


def seeded_dropout(
    x: torch.Tensor, p: float = P_DROP, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """co.dropout with its mask drawn from a fresh generator seeded 0 (unless one is given): every call agrees.

    (torch.compile cannot trace a Generator made inside the graph: compiled, the global one draws.)
    """
    if generator is None and not torch.compiler.is_compiling():
        generator = torch.Generator(device=x.device).manual_seed(0)
    return dropout(x, p, training, generator)


def seeded_dropout_twin(x: torch.Tensor, p: float = P_DROP) -> torch.Tensor:
    keep = 1.0 - p
    gen = torch.Generator(device=x.device).manual_seed(0)
    return x * torch.empty_like(x, memory_format=torch.contiguous_format).bernoulli_(keep, generator=gen).div_(keep)


def sample_dropout(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(4, 5),))
    yield SampleInput((make(2, 3, 4),))
    yield SampleInput((transposed(make, 3, 6),), desc="transposed x")
    yield SampleInput((make(7, noncontiguous=True),), desc="non-contiguous x")


def error_dropout(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(3), 1.5)), ValueError, r"p must be a probability in \[0, 1\]")
    yield ErrorInput(SampleInput((make(3), -0.1)), ValueError, "probability")
    yield ErrorInput(SampleInput((torch.ones(3, dtype=torch.long, device=device), 0.1)), TypeError, "floating")
    yield ErrorInput(SampleInput((make(3), 0.1), {"training": 1}), TypeError, "training must be a bool")
    yield ErrorInput(SampleInput((make(3), 0.1), {"generator": 0}), TypeError, "generator")


# --------------------------------------------------------------------------- attention


def attention_twin(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sample_attention(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    causal = torch.ones(4, 4, dtype=torch.bool, device=device).tril()  # (S, T), broadcast over N, H
    keys = torch.rand(2, 1, 1, 5) > 0.4
    keys[..., 0] = True  # every query sees at least one key
    yield SampleInput((make(2, 3, 4, 5), make(2, 3, 6, 5), make(2, 3, 6, 3)), desc="cross-attention, Ev != E")
    yield SampleInput((make(1, 2, 4, 3), make(1, 2, 4, 3), make(1, 2, 4, 3), causal), desc="causal self-attention")
    yield SampleInput((make(2, 1, 3, 4), make(2, 1, 5, 4), make(2, 1, 5, 4), keys.to(device)), desc="key padding")
    yield SampleInput(
        (transposed(make, 1, 2, 3, 4), make(1, 2, 2, 4), make(1, 2, 2, 3, noncontiguous=True)),
        desc="transposed q, non-contiguous v",
    )
    if dtype in LOW:  # q k^T = 40 * 40 * 64 = 102400 overflows float16; the scaled scores (12800) do not
        # (q and k without gradients: theirs are 40 * a sum that cancels to 0 exactly, which a sum
        # rounded to float16 / bfloat16 resolves only to about 40 * its rounding)
        big = torch.full((1, 2, 3, 64), 40.0, dtype=dtype, device=device)
        yield SampleInput((big, big.clone(), make(1, 2, 3, 5)), desc="q = k = 40, E = 64")


def error_attention(device):
    make = tensor_maker(device, torch.float32)

    def mask(*shape):
        return torch.ones(*shape, dtype=torch.bool, device=device)

    yield ErrorInput(SampleInput((make(2, 3, 4), make(2, 3, 4), make(2, 3, 4))), ValueError, "4 dimensions")
    yield ErrorInput(SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 3), make(1, 2, 5, 4))), ValueError, "k must be")
    yield ErrorInput(SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 4), make(1, 2, 6, 4))), ValueError, "v must be")
    yield ErrorInput(SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 4), make(1, 2, 5, 4), make(3, 5))), TypeError, "bool")
    yield ErrorInput(
        SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 4), make(1, 2, 5, 4), mask(3, 4))),
        ValueError,
        "does not broadcast",
    )
    yield ErrorInput(  # broadcastable with (N, H, S, T), but larger: N = 2 for a batch of 1
        SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 4), make(1, 2, 5, 4), mask(2, 1, 3, 5))),
        ValueError,
        r"mask of shape \(2, 1, 3, 5\) does not broadcast",
    )
    yield ErrorInput(
        SampleInput((make(1, 2, 3, 4), make(1, 2, 5, 4), make(1, 2, 5, 4), mask(1, 1, 1, 3, 5))),
        ValueError,
        "at most 4 dimensions",
    )


SPECS: list[OpSpec] = [
    OpSpec(
        "layer_norm",
        layer_norm,
        sample_inputs=sample_layer_norm,
        error_inputs=error_layer_norm,
        twin=layer_norm_twin,
        autocast="fp32",
    ),
    OpSpec(
        "dropout",
        seeded_dropout,
        sample_inputs=sample_dropout,
        error_inputs=error_dropout,
        twin=seeded_dropout_twin,
        autocast="same",
        random=True,
    ),
    OpSpec(
        "scaled_dot_product_attention",
        scaled_dot_product_attention,
        sample_inputs=sample_attention,
        error_inputs=error_attention,
        twin=attention_twin,
        autocast="lower",
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
