"""Registry entries of the captioning ops: word_embedding, rnn_step, rnn, lstm_step, lstm,
temporal_affine, temporal_softmax_loss.

Twins are the same computation from torch built-ins (F.embedding, F.linear,
F.cross_entropy, and plain autograd recurrences in the same gate order); the
benchmark rows time forward+backward against nn.Embedding, nn.RNN and nn.LSTM
at captioning shapes (N=128, T=16, D=256, H=512, V=3000).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..embedding import word_embedding
from ..rnn import lstm, lstm_step, rnn, rnn_step
from ..temporal import temporal_affine, temporal_softmax_loss
from . import twins
from .registry import BenchCase, Case, OpSpec
from .twins import fwd_bwd


def _randn(shape, dtype, device, gen, grad=True, scale=1.0) -> torch.Tensor:
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    return t.requires_grad_(grad)


def _noncontig(shape, dtype, device, gen, scale=1.0) -> torch.Tensor:
    """A tensor of `shape` that is a transposed view (not contiguous) and requires grad."""
    base = _randn(tuple(reversed(shape)), dtype, device, gen, grad=False, scale=scale)
    return base.permute(*reversed(range(len(shape)))).requires_grad_()


# --------------------------------------------------------------------------- op helpers


def _lstm_step_hc(x, prev_h, prev_c, Wx, Wh, b):
    """lstm_step's two outputs side by side, (N, 2H), so checkers see one tensor."""
    return torch.cat(lstm_step(x, prev_h, prev_c, Wx, Wh, b), dim=1)


# --------------------------------------------------------------------------- cases


def _embedding_cases(dtype, device, gen) -> list[Case]:
    ids = lambda *s, v: torch.randint(0, v, s, generator=gen).to(device)  # noqa: E731
    repeated = torch.tensor([[1, 1, 3], [3, 1, 0]], device=device)  # ids 1 and 3 repeat: gradients accumulate
    return [
        ((repeated, _randn((5, 4), dtype, device, gen)), {}),
        ((ids(3, 6, v=4), _randn((4, 3), dtype, device, gen)), {}),  # more lookups than words
        ((ids(5, 2, v=7).t(), _noncontig((7, 3), dtype, device, gen)), {}),  # non-contiguous ids and table
        ((ids(1, 1, v=1), _randn((1, 1), dtype, device, gen)), {}),
    ]


def _recurrent_args(dtype, device, gen, N, T, D, H, gates, states, noncontig=False):
    """x (N, T, D) (or (N, D) when T is None), states (N, H) each, Wx, Wh, b; weights kept small
    so the nonlinearities are not saturated."""
    x_shape = (N, D) if T is None else (N, T, D)
    x = _noncontig(x_shape, dtype, device, gen) if noncontig else _randn(x_shape, dtype, device, gen)
    hs = [_randn((N, H), dtype, device, gen, scale=0.5) for _ in range(states)]
    Wx = _randn((D, gates * H), dtype, device, gen, scale=0.5)
    Wh = (
        _noncontig((H, gates * H), dtype, device, gen, 0.5)
        if noncontig
        else _randn((H, gates * H), dtype, device, gen, scale=0.5)
    )
    b = _randn((gates * H,), dtype, device, gen, scale=0.5)
    return (x, *hs, Wx, Wh, b)


def _make_recurrent_cases(T_values, gates, states):
    def make(dtype, device, gen) -> list[Case]:
        shapes = [(3, 4, 3), (2, 3, 2), (1, 1, 1)]  # (N, D, H)
        cases = [
            (_recurrent_args(dtype, device, gen, N, T, D, H, gates, states), {})
            for (N, D, H), T in zip(shapes, T_values)
        ]
        cases.append((_recurrent_args(dtype, device, gen, 2, T_values[0], 3, 4, gates, states, noncontig=True), {}))
        return cases

    return make


def _temporal_affine_cases(dtype, device, gen) -> list[Case]:
    r = lambda *s: _randn(s, dtype, device, gen)  # noqa: E731
    return [
        ((r(2, 3, 4), r(4, 5), r(5)), {}),
        ((r(1, 1, 1), r(1, 1), r(1)), {}),
        ((_noncontig((3, 4, 2), dtype, device, gen), r(2, 3), None), {}),
        ((r(4, 2, 3), _noncontig((3, 6), dtype, device, gen), r(6)), {}),
    ]


def _loss_cases(dtype, device, gen) -> list[Case]:
    def ys(N, T, V):
        return torch.randint(0, V, (N, T), generator=gen).to(device)

    def masks(N, T):
        m = torch.rand((N, T), generator=gen) > 0.3
        m[:, 0] = True  # at least one live step per row
        return m.to(device)

    big = (_randn((2, 3, 4), dtype, device, gen, grad=False) * 3 + 300).requires_grad_()  # stability
    all_masked_step = masks(3, 4)
    all_masked_step[:, 2] = False  # one time step masked for every caption
    return [
        ((_randn((3, 4, 5), dtype, device, gen), ys(3, 4, 5), all_masked_step), {}),
        ((big, ys(2, 3, 4), masks(2, 3)), {}),
        ((_noncontig((2, 5, 6), dtype, device, gen), ys(2, 5, 6), masks(2, 5)), {}),
        ((_randn((1, 1, 3), dtype, device, gen), ys(1, 1, 3), torch.ones(1, 1, dtype=torch.bool, device=device)), {}),
    ]


SPECS: list[OpSpec] = [
    OpSpec("word_embedding", word_embedding, twins.embedding_twin, _embedding_cases),
    OpSpec(
        "rnn_step",
        rnn_step,
        twins.rnn_step_twin,
        _make_recurrent_cases([None] * 3, gates=1, states=1),
        autocast="lower",
    ),
    OpSpec("rnn", rnn, twins.rnn_twin, _make_recurrent_cases([4, 3, 1], gates=1, states=1), autocast="lower"),
    OpSpec(
        "lstm_step",
        _lstm_step_hc,
        twins.lstm_step_twin,
        _make_recurrent_cases([None] * 3, gates=4, states=2),
        autocast="lower",
    ),
    OpSpec("lstm", lstm, twins.lstm_twin, _make_recurrent_cases([4, 3, 1], gates=4, states=1), autocast="lower"),
    OpSpec("temporal_affine", temporal_affine, twins.temporal_affine_twin, _temporal_affine_cases, autocast="lower"),
    OpSpec(
        "temporal_softmax_loss", temporal_softmax_loss, twins.temporal_softmax_loss_twin, _loss_cases, autocast="fp32"
    ),
]


# --------------------------------------------------------------------------- benchmark rows

N, T, D, H, V = 128, 16, 256, 512, 3000  # captioning shapes


def _bench_embedding(device):
    x = torch.randint(0, V, (N, T), device=device)
    native = nn.Embedding(V, D).to(device)
    W = native.weight.detach().clone().requires_grad_()
    return fwd_bwd(word_embedding, (x, W), (W,)), fwd_bwd(native, (x,), (native.weight,))


def _bench_recurrent(cell: str):
    def setup(device):
        gates = 1 if cell == "rnn" else 4
        native = (
            nn.RNN(D, H, batch_first=True, nonlinearity="tanh") if cell == "rnn" else nn.LSTM(D, H, batch_first=True)
        ).to(device)
        x = torch.randn(N, T, D, device=device, requires_grad=True)
        h0 = torch.randn(N, H, device=device, requires_grad=True)
        Wx = (torch.randn(D, gates * H, device=device) / D**0.5).requires_grad_()
        Wh = (torch.randn(H, gates * H, device=device) / H**0.5).requires_grad_()
        b = torch.zeros(gates * H, device=device, requires_grad=True)
        op = rnn if cell == "rnn" else lstm
        params = tuple(native.parameters())
        if cell == "rnn":
            run_native = lambda x, h0: native(x, h0.unsqueeze(0))[0]  # noqa: E731
        else:
            c0 = torch.zeros(1, N, H, device=device)
            run_native = lambda x, h0: native(x, (h0.unsqueeze(0), c0))[0]  # noqa: E731
        return (fwd_bwd(op, (x, h0, Wx, Wh, b), (x, h0, Wx, Wh, b)), fwd_bwd(run_native, (x, h0), (x, h0, *params)))

    return setup


def _bench_temporal_affine(device):
    x = torch.randn(N, T, H, device=device, requires_grad=True)
    w = (torch.randn(H, V, device=device) / H**0.5).requires_grad_()
    b = torch.zeros(V, device=device, requires_grad=True)
    w_native = w.detach().t().contiguous().requires_grad_()  # nn.Linear stores (out, in)
    return (fwd_bwd(temporal_affine, (x, w, b), (x, w, b)), fwd_bwd(F.linear, (x, w_native, b), (x, w_native, b)))


def _bench_loss(device):
    s = torch.randn(N, T, V, device=device, requires_grad=True)
    y = torch.randint(0, V, (N, T), device=device)
    mask = torch.rand(N, T, device=device) > 0.2
    return (
        fwd_bwd(temporal_softmax_loss, (s, y, mask), (s,)),
        fwd_bwd(twins.temporal_softmax_loss_twin, (s, y, mask), (s,)),
    )


BENCH: list[BenchCase] = [
    BenchCase(f"word_embedding {N}x{T} ids, {V}x{D} (nn.Embedding)", _bench_embedding),
    BenchCase(f"rnn {N}x{T}x{D} -> {H} (nn.RNN tanh)", _bench_recurrent("rnn")),
    BenchCase(f"lstm {N}x{T}x{D} -> {H} (nn.LSTM)", _bench_recurrent("lstm")),
    BenchCase(f"temporal_affine {N}x{T}x{H} -> {V}", _bench_temporal_affine),
    BenchCase(f"temporal_softmax_loss {N}x{T}x{V} masked", _bench_loss),
]
