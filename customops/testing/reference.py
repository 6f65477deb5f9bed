"""The three 2-D operations of the convolution derivation, written literally from their
1-indexed definitions on single matrices (slow, loop-based; for tests and teaching).

For a (Ha x Wa) and b (Hb x Wb), with Python's 0-indexing shifted by one:

- valid convolution  (a *valid b)[i, j] = sum_{k,l} a[i + k - 1, j + l - 1] * b[Hb - k + 1, Wb - l + 1]
  for 1 <= i <= Ha - Hb + 1, 1 <= j <= Wa - Wb + 1 (the kernel is flipped);
- full convolution   (a *full b)[i, j] = sum_{k,l} a[k, l] * b[i - k + 1, j - l + 1]
  over the indices where both exist, 1 <= i <= Ha + Hb - 1, 1 <= j <= Wa + Wb - 1;
- filtering          (a *filt b)[i, j] = sum_{k,l} a[i + k - 1, j + l - 1] * b[k, l]
  (cross-correlation: the kernel is not flipped), same output size as *valid.

See docs/derivations.md#convolution.
"""

from __future__ import annotations

import torch


def _check(name: str, a: torch.Tensor, b: torch.Tensor, valid: bool) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"{name}: a and b must be matrices, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if valid and (b.shape[0] > a.shape[0] or b.shape[1] > a.shape[1]):
        raise ValueError(f"{name}: kernel b {tuple(b.shape)} is larger than a {tuple(a.shape)}")


def conv_valid(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a *valid b: (Ha - Hb + 1) x (Wa - Wb + 1)."""
    _check("conv_valid", a, b, valid=True)
    ha, wa = a.shape
    hb, wb = b.shape
    out = a.new_zeros(ha - hb + 1, wa - wb + 1)
    for i in range(1, ha - hb + 2):
        for j in range(1, wa - wb + 2):
            total = a.new_zeros(())
            for k in range(1, hb + 1):
                for l in range(1, wb + 1):
                    total = total + a[i + k - 2, j + l - 2] * b[hb - k, wb - l]
            out[i - 1, j - 1] = total
    return out


def conv_full(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a *full b: (Ha + Hb - 1) x (Wa + Wb - 1)."""
    _check("conv_full", a, b, valid=False)
    ha, wa = a.shape
    hb, wb = b.shape
    out = a.new_zeros(ha + hb - 1, wa + wb - 1)
    for i in range(1, ha + hb):
        for j in range(1, wa + wb):
            total = a.new_zeros(())
            for k in range(1, ha + 1):
                for l in range(1, wa + 1):
                    if 1 <= i - k + 1 <= hb and 1 <= j - l + 1 <= wb:
                        total = total + a[k - 1, l - 1] * b[i - k, j - l]
            out[i - 1, j - 1] = total
    return out


def filt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a *filt b (cross-correlation): (Ha - Hb + 1) x (Wa - Wb + 1)."""
    _check("filt", a, b, valid=True)
    ha, wa = a.shape
    hb, wb = b.shape
    out = a.new_zeros(ha - hb + 1, wa - wb + 1)
    for i in range(1, ha - hb + 2):
        for j in range(1, wa - wb + 2):
            total = a.new_zeros(())
            for k in range(1, hb + 1):
                for l in range(1, wb + 1):
                    total = total + a[i + k - 2, j + l - 2] * b[k - 1, l - 1]
            out[i - 1, j - 1] = total
    return out
