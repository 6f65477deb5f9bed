"""Sums over every dimension but the first two, shared by the normalisation ops.

On CPU a product a * b of two large tensors costs a fresh buffer of their size (page faults
for every new page) before the sum even starts, and torch.var_mean's Welford loop is several
times slower than a sum. These sums instead run a batch chunk at a time through one small
buffer that stays in cache.
"""

from __future__ import annotations

import torch

from ._checks import in_place_ok, unwrapped

# Entries per chunk of the chunked sums and per thread: a few hundred KB, well inside a core's cache.
_CHUNK_ENTRIES = 1 << 16


def chunk_entries() -> int:
    """Entries per chunk: _CHUNK_ENTRIES for each of torch's threads (each op splits its chunk among
    them; fewer, larger ops also wait less on threads that another process holds)."""
    return _CHUNK_ENTRIES * max(1, torch.get_num_threads())


def dot_sum(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(a * b).sum(dims) for a, b of the same shape (N, C, ...), dims including 0 or not.

    Eager: chunk by chunk along the batch dimension through one buffer; elsewhere (torch.func,
    torch.compile, a graph being built) the plain expression.
    """
    if not (in_place_ok() and unwrapped(a, b)) or a.shape[0] <= 1:
        return (a * b).sum(dims)
    per_sample = a[0].numel()
    chunk = max(1, chunk_entries() // max(1, per_sample))
    if chunk >= a.shape[0]:
        return (a * b).sum(dims)
    buf = torch.empty_like(a[:chunk])
    over_batch = 0 in dims
    parts = []
    for n0 in range(0, a.shape[0], chunk):
        ac, bc = a[n0 : n0 + chunk], b[n0 : n0 + chunk]
        prod = torch.mul(ac, bc, out=buf[: ac.shape[0]])
        parts.append(prod.sum(dims))
    if over_batch:
        return torch.stack(parts).sum(0)
    return torch.cat(parts)


def centred_square_sum(x: torch.Tensor, mean: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """((x - mean) ** 2).sum(dims) for x (N, C, ...) and mean broadcasting against x's rows (1 or N of them).

    The centred values are formed a chunk at a time (the sum of squares about zero would cancel
    digits where the mean is large against the spread), through one cache-sized buffer.
    """
    if not (in_place_ok() and unwrapped(x, mean)) or x.shape[0] <= 1:
        return (x - mean).square().sum(dims)
    chunk = max(1, chunk_entries() // max(1, x[0].numel()))
    if chunk >= x.shape[0]:
        return (x - mean).square().sum(dims)
    buf = torch.empty_like(x[:chunk])
    per_row = mean.dim() == x.dim() and mean.shape[0] == x.shape[0] and x.shape[0] > 1
    parts = []
    for n0 in range(0, x.shape[0], chunk):
        xc = x[n0 : n0 + chunk]
        centred = torch.sub(xc, mean[n0 : n0 + chunk] if per_row else mean, out=buf[: xc.shape[0]])
        parts.append(centred.mul_(centred).sum(dims))
    return torch.stack(parts).sum(0) if 0 in dims else torch.cat(parts)
