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
from .registry import BenchCase, ErrorInput, OpSpec, SampleInput, tensor_maker, transposed
from .twins import fwd_bwd

# --------------------------------------------------------------------------- op helpers


def lstm_step_hc(x, prev_h, prev_c, Wx, Wh, b):
    """lstm_step's two outputs side by side, (N, 2H), so checkers see one tensor."""
    return torch.cat(lstm_step(x, prev_h, prev_c, Wx, Wh, b), dim=1)


# --------------------------------------------------------------------------- word_embedding


def sample_word_embedding(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)

    def ids(*shape, words):
        return torch.randint(0, words, shape, device=device)

    repeated = torch.tensor([[1, 1, 3], [3, 1, 0]], device=device)
    yield SampleInput((repeated, make(5, 4)), desc="ids 1 and 3 repeat: gradients accumulate")
    yield SampleInput((ids(3, 6, words=4), make(4, 3)), desc="more lookups than words")
    yield SampleInput((ids(5, 2, words=7).t(), transposed(make, 7, 3)), desc="non-contiguous ids and table")
    yield SampleInput((ids(1, 1, words=1), make(1, 1)))


def error_word_embedding(device):
    make = tensor_maker(device, torch.float32)

    def ids(values):
        return torch.tensor(values, device=device)

    yield ErrorInput(SampleInput((make(2, 3), make(5, 4))), TypeError, "int64")
    yield ErrorInput(SampleInput((ids([[0, 5]]), make(5, 4))), ValueError, r"\[0, 5\)")
    yield ErrorInput(SampleInput((ids([[-1, 0]]), make(5, 4))), ValueError, "ids")
    yield ErrorInput(SampleInput((ids([[0, 1]]), make(5))), ValueError, "W must have 2 dimensions")
    yield ErrorInput(SampleInput((ids([0, 1]), make(5, 4))), ValueError, "x must have 2 dimensions")
    yield ErrorInput(
        SampleInput((ids([[0]]), torch.ones(5, 4, dtype=torch.long, device=device))), TypeError, "floating"
    )
    yield ErrorInput(SampleInput((ids([[0, 7]]), make(5, 3))), ValueError, r"x must hold word ids in \[0, 5\)")


# --------------------------------------------------------------------------- rnn_step, rnn, lstm_step, lstm


def _recurrent_args(device, dtype, requires_grad, N, T, D, H, gates, states, noncontiguous=False):
    """x (N, T, D) (or (N, D) when T is None), states (N, H) each, Wx, Wh, b; states and weights
    within +-0.5 so the nonlinearities are not saturated."""
    make = tensor_maker(device, dtype, requires_grad)
    small = tensor_maker(device, dtype, requires_grad, low=-0.5, high=0.5)
    x_shape = (N, D) if T is None else (N, T, D)
    x = transposed(make, *x_shape) if noncontiguous else make(*x_shape)
    hs = [small(N, H) for _ in range(states)]
    Wh = transposed(small, H, gates * H) if noncontiguous else small(H, gates * H)
    return (x, *hs, small(D, gates * H), Wh, small(gates * H))


def _recurrent_samples(T_values, gates, states):
    def sample(device, dtype, requires_grad):
        for (N, D, H), T in zip([(3, 4, 3), (2, 3, 2), (1, 1, 1)], T_values):
            yield SampleInput(_recurrent_args(device, dtype, requires_grad, N, T, D, H, gates, states))
        yield SampleInput(
            _recurrent_args(device, dtype, requires_grad, 2, T_values[0], 3, 4, gates, states, noncontiguous=True),
            desc="transposed x and Wh",
        )

    return sample


N_, T_, D_, H_ = 2, 3, 4, 5  # the bad-input calls' sizes


def _rnn_args(make, gates=1):
    return [make(N_, T_, D_), make(N_, H_), make(D_, gates * H_), make(H_, gates * H_), make(gates * H_)]


def _with(args, i, value):
    args = list(args)
    args[i] = value
    return SampleInput(tuple(args))


def error_rnn_step(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(2, 4), make(3, 5), make(4, 5), make(5, 5), make(5))), ValueError, "prev_h")
    yield ErrorInput(SampleInput((make(2, 4), make(2, 5), make(3, 5), make(5, 5), make(5))), ValueError, "Wx")
    yield ErrorInput(SampleInput((make(2, 3, 4), make(2, 5), make(4, 5), make(5, 5), make(5))), ValueError, r"\(N, D\)")
    yield ErrorInput(
        SampleInput((make(2, 4), make(2, 5, dtype=torch.float64), make(4, 5), make(5, 5), make(5))),
        TypeError,
        "float64",
    )
    yield ErrorInput(
        SampleInput((make(2, 4), make(2, 5), make(4, 5), make(5, 5), make(4))), ValueError, "b must have shape"
    )


def error_rnn(device):
    make = tensor_maker(device, torch.float32)
    args = _rnn_args(make)
    yield ErrorInput(_with(args, 0, make(N_, D_)), ValueError, r"\(N, T, D\)")
    yield ErrorInput(_with(args, 1, make(N_ + 1, H_)), ValueError, "h0")
    yield ErrorInput(_with(args, 3, make(H_, H_ + 1)), ValueError, "Wh")
    yield ErrorInput(_with(args, 2, torch.ones(D_, H_, dtype=torch.long, device=device)), TypeError, "Wx")
    yield ErrorInput(_with(args, 4, "bias"), TypeError, "b must be a torch.Tensor")
    yield ErrorInput(_with(args, 0, make(N_, 0, D_)), ValueError, "x has no time steps")


def error_lstm_step(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(
        SampleInput((make(2, 4), make(2, 5), make(2, 4), make(4, 20), make(5, 20), make(20))), ValueError, "prev_c"
    )
    yield ErrorInput(
        SampleInput((make(2, 4), make(2, 5), make(2, 5), make(4, 5), make(5, 5), make(5))), ValueError, "Wx"
    )
    yield ErrorInput(
        SampleInput((make(2, 4), make(2, 5), make(2, 5), make(4, 20), make(5, 20), make(5))),
        ValueError,
        "b must have shape",
    )
    yield ErrorInput(
        SampleInput(
            (make(2, 4, dtype=torch.int32), make(2, 5), make(2, 5), make(4, 20), make(5, 20), make(20)),
        ),
        TypeError,
        "floating",
    )


def error_lstm(device):
    make = tensor_maker(device, torch.float32)
    args = _rnn_args(make, gates=4)
    yield ErrorInput(SampleInput(tuple(_rnn_args(make, gates=1))), ValueError, r"\(4, 20\)|must have shape")
    yield ErrorInput(_with(args, 0, make(N_, T_, D_ + 1)), ValueError, "Wx")
    yield ErrorInput(_with(args, 1, make(H_)), ValueError, "h0")
    yield ErrorInput(_with(args, 2, make(D_, 20, dtype=torch.float64)), TypeError, "Wx")
    yield ErrorInput(_with(args, 0, make(N_, 0, D_)), ValueError, "x has no time steps")


# --------------------------------------------------------------------------- temporal_affine


def sample_temporal_affine(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)
    yield SampleInput((make(2, 3, 4), make(4, 5), make(5)))
    yield SampleInput((make(1, 1, 1), make(1, 1), make(1)))
    yield SampleInput((transposed(make, 3, 4, 2), make(2, 3), None), desc="transposed x, no bias")
    yield SampleInput((make(4, 2, 3), transposed(make, 3, 6), make(6)), desc="transposed w")


def error_temporal_affine(device):
    make = tensor_maker(device, torch.float32)
    yield ErrorInput(SampleInput((make(2, 4), make(4, 3), make(3))), ValueError, "3 dimensions")
    yield ErrorInput(SampleInput((make(2, 3, 4), make(5, 3), make(3))), ValueError, "D=4")
    yield ErrorInput(SampleInput((make(2, 3, 4), make(4, 3), make(4))), ValueError, r"\(3,\)")
    yield ErrorInput(
        SampleInput((make(2, 3, 4), make(4, 3, dtype=torch.float64), None)), TypeError, "w is torch.float64"
    )
    yield ErrorInput(SampleInput(([[1.0]], make(4, 3), None)), TypeError, "must be a torch.Tensor")


# --------------------------------------------------------------------------- temporal_softmax_loss


def sample_temporal_softmax_loss(device, dtype, requires_grad):
    make = tensor_maker(device, dtype, requires_grad)

    def ys(N, T, V):
        return torch.randint(0, V, (N, T), device=device)

    def masks(N, T):
        m = torch.rand(N, T) > 0.3
        m[:, 0] = True  # at least one live step per row
        return m.to(device)

    all_masked_step = masks(3, 4)
    all_masked_step[:, 2] = False
    ones = torch.ones(1, 1, dtype=torch.bool, device=device)
    yield SampleInput((make(3, 4, 5), ys(3, 4, 5), all_masked_step), desc="one time step masked for every caption")
    yield SampleInput((make(2, 3, 4, low=295.0, high=305.0), ys(2, 3, 4), masks(2, 3)), desc="scores near 300")
    yield SampleInput((transposed(make, 2, 5, 6), ys(2, 5, 6), masks(2, 5)), desc="transposed scores")
    yield SampleInput((make(1, 1, 3), ys(1, 1, 3), ones))
    yield SampleInput((make(2, 4, 6), ys(2, 4, 6), masks(2, 4)), {"label_smoothing": 0.1}, desc="label smoothing 0.1")


def error_temporal_softmax_loss(device):
    make = tensor_maker(device, torch.float32)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=torch.long, device=device)

    def ones(*shape):
        return torch.ones(*shape, dtype=torch.bool, device=device)

    yield ErrorInput(SampleInput((make(2, 3, 4), zeros(2, 3), make(2, 3))), TypeError, "bool")
    yield ErrorInput(SampleInput((make(2, 3, 4), zeros(2, 4), ones(2, 4))), ValueError, r"y must have shape")
    yield ErrorInput(SampleInput((make(2, 3, 4), zeros(2, 3), ones(3, 2))), ValueError, "mask must have")
    yield ErrorInput(SampleInput((make(2, 3, 4), zeros(2, 3) + 4, ones(2, 3))), ValueError, r"\[0, 4\)")
    yield ErrorInput(SampleInput((make(2, 3, 4), make(2, 3), ones(2, 3))), TypeError, "int64")
    yield ErrorInput(SampleInput((make(6, 4), zeros(2, 3), ones(2, 3))), ValueError, "3 dimensions")
    yield ErrorInput(SampleInput((make(2, 3, 0), zeros(2, 3), ones(2, 3))), ValueError, "V = 0")
    yield ErrorInput(
        SampleInput((make(2, 3, 4), zeros(2, 3), ones(2, 3)), {"label_smoothing": 1.5}), ValueError, "label_smoothing"
    )


SPECS: list[OpSpec] = [
    OpSpec(
        "word_embedding",
        word_embedding,
        sample_inputs=sample_word_embedding,
        error_inputs=error_word_embedding,
        twin=twins.embedding_twin,
        autocast="same",
    ),
    OpSpec(
        "rnn_step",
        rnn_step,
        sample_inputs=_recurrent_samples([None] * 3, gates=1, states=1),
        error_inputs=error_rnn_step,
        twin=twins.rnn_step_twin,
        autocast="lower",
    ),
    OpSpec(
        "rnn",
        rnn,
        sample_inputs=_recurrent_samples([4, 3, 1], gates=1, states=1),
        error_inputs=error_rnn,
        twin=twins.rnn_twin,
        autocast="lower",
    ),
    OpSpec(
        "lstm_step",
        lstm_step_hc,
        sample_inputs=_recurrent_samples([None] * 3, gates=4, states=2),
        error_inputs=error_lstm_step,
        twin=twins.lstm_step_twin,
        autocast="lower",
    ),
    OpSpec(
        "lstm",
        lstm,
        sample_inputs=_recurrent_samples([4, 3, 1], gates=4, states=1),
        error_inputs=error_lstm,
        twin=twins.lstm_twin,
        autocast="lower",
    ),
    OpSpec(
        "temporal_affine",
        temporal_affine,
        sample_inputs=sample_temporal_affine,
        error_inputs=error_temporal_affine,
        twin=twins.temporal_affine_twin,
        autocast="lower",
    ),
    OpSpec(
        "temporal_softmax_loss",
        temporal_softmax_loss,
        sample_inputs=sample_temporal_softmax_loss,
        error_inputs=error_temporal_softmax_loss,
        twin=twins.temporal_softmax_loss_twin,
        autocast="fp32",
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
