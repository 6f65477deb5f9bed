"""Native torch twins of the custom ops: the same computations from torch built-ins
(F.linear, F.embedding, F.cross_entropy, plain autograd loops), used only as references by
`python -m customops.check`, the tests and `python -m customops.bench`. No custom op calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def affine_twin(x, w, b=None):
    return F.linear(x.flatten(1), w.t(), b)


def embedding_twin(x, W):
    return F.embedding(x, W)


def rnn_step_twin(x, prev_h, Wx, Wh, b):
    return torch.tanh(x @ Wx + prev_h @ Wh + b)


def rnn_twin(x, h0, Wx, Wh, b):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ Wx + h @ Wh + b)
        hs.append(h)
    return torch.stack(hs, dim=1)  # (N, T, H)


def lstm_cell_twin(x, h, c, Wx, Wh, b):
    i, f, o, g = (x @ Wx + h @ Wh + b).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_step_twin(x, prev_h, prev_c, Wx, Wh, b):
    return torch.cat(lstm_cell_twin(x, prev_h, prev_c, Wx, Wh, b), dim=1)


def lstm_twin(x, h0, Wx, Wh, b):
    h, c, hs = h0, torch.zeros_like(h0), []
    for t in range(x.shape[1]):
        h, c = lstm_cell_twin(x[:, t], h, c, Wx, Wh, b)
        hs.append(h)
    return torch.stack(hs, dim=1)  # (N, T, H)


def temporal_affine_twin(x, w, b=None):
    return F.linear(x, w.t(), b)


def temporal_softmax_loss_twin(scores, y, mask, label_smoothing=0.0):
    N, T, V = scores.shape
    per_step = F.cross_entropy(
        scores.reshape(N * T, V), y.reshape(N * T), reduction="none", label_smoothing=label_smoothing
    ).reshape(N, T)
    return (per_step * mask).sum() / N


class FwdBwd:
    """A benchmark callable: fn(*args), then the gradients of its output w.r.t. `wrt`."""

    def __init__(self, fn: Callable[..., torch.Tensor], args: tuple[Any, ...], wrt: tuple[torch.Tensor, ...]):
        self.fn, self.args, self.wrt = fn, args, wrt

    def __call__(self):
        out = self.fn(*self.args)
        grad = None if out.dim() == 0 else torch.ones_like(out)
        return torch.autograd.grad(out, self.wrt, grad)

    def compiled(self, fullgraph: bool = True) -> FwdBwd:
        """The same with fn under torch.compile (inductor): forward and backward become generated kernels."""
        return FwdBwd(torch.compile(self.fn, fullgraph=fullgraph, dynamic=False), self.args, self.wrt)


def fwd_bwd(fn: Callable[..., torch.Tensor], args: tuple[Any, ...], wrt: tuple[torch.Tensor, ...]) -> FwdBwd:
    """A zero-argument callable for a BenchCase: fn(*args), then the gradients of its output w.r.t. `wrt`."""
    return FwdBwd(fn, args, wrt)
