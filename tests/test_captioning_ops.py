"""Captioning ops: hand-computed values, agreement with nn.RNN / nn.LSTM, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from customops import lstm, lstm_step, rnn, rnn_step, temporal_affine, temporal_softmax_loss, word_embedding
from customops.testing.specs_captioning import SPECS

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# gradcheck, gradgradcheck, batched gradients, parity, torch.func, autocast and compile of these
# ops run in tests/test_ops.py and tests/test_citizens.py, over the one registry of every op.


# --------------------------------------------------------------------------- hand-computed values


def test_embedding_gradient_accumulates_repeated_ids():
    W = torch.arange(12.0).view(4, 3).requires_grad_()
    x = torch.tensor([[2, 2, 0], [2, 1, 1]])
    out = word_embedding(x, W)
    assert torch.equal(out[1, 0], W[2].detach())
    grad = torch.arange(18.0).view(2, 3, 3)
    out.backward(grad)
    expected = torch.zeros(4, 3)
    expected[2] = grad[0, 0] + grad[0, 1] + grad[1, 0]  # id 2 appears three times
    expected[0] = grad[0, 2]
    expected[1] = grad[1, 1] + grad[1, 2]
    torch.testing.assert_close(W.grad, expected)  # row 3 never looked up: zero


def test_softmax_loss_fully_masked_step_contributes_nothing():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 3, 0], [2, 0, 1]])
    mask = torch.tensor([[True, False, True], [True, False, False]])
    loss = temporal_softmax_loss(scores, y, mask)
    log_p = torch.log_softmax(scores.detach(), dim=2)
    expected = -(log_p[0, 0, 1] + log_p[0, 2, 0] + log_p[1, 0, 2]) / 2  # summed over steps, / N
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert torch.all(scores.grad[:, 1] == 0) and torch.all(scores.grad[1, 2] == 0)
    # Changing a masked step's scores or target changes nothing.
    other = scores.detach().clone()
    other[:, 1] += 100.0
    y2 = y.clone()
    y2[:, 1] = 99  # out of range, but masked
    torch.testing.assert_close(temporal_softmax_loss(other, y2, mask), loss.detach())


def test_rnn_step_tiny_value():
    x = torch.tensor([[1.0, 2.0]])
    h = torch.tensor([[0.5]])
    Wx, Wh, b = torch.tensor([[0.1], [0.2]]), torch.tensor([[-1.0]]), torch.tensor([0.3])
    expected = torch.tanh(torch.tensor([[0.1 + 0.4 - 0.5 + 0.3]]))
    torch.testing.assert_close(rnn_step(x, h, Wx, Wh, b), expected)


def test_rnn_matches_nn_rnn():
    torch.manual_seed(0)
    N, T, D, H = 3, 5, 4, 6
    native = torch.nn.RNN(D, H, batch_first=True, nonlinearity="tanh").double()
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    b = (native.bias_ih_l0 + native.bias_hh_l0).detach()
    ours = rnn(x, h0, native.weight_ih_l0.detach().t(), native.weight_hh_l0.detach().t(), b)
    torch.testing.assert_close(ours, native(x, h0[None])[0].detach())


def test_lstm_matches_nn_lstm_and_steps():
    torch.manual_seed(0)
    N, T, D, H = 3, 5, 4, 6
    native = torch.nn.LSTM(D, H, batch_first=True).double()

    def ifog(w):  # torch orders the gates i, f, g, o; customops i, f, o, g
        i, f, g, o = w.detach().chunk(4, dim=0)
        return torch.cat([i, f, o, g], dim=0)

    Wx, Wh = ifog(native.weight_ih_l0).t(), ifog(native.weight_hh_l0).t()
    b = ifog(native.bias_ih_l0 + native.bias_hh_l0)
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    ref = native(x, (h0[None], torch.zeros(1, N, H, dtype=torch.float64)))[0].detach()
    torch.testing.assert_close(lstm(x, h0, Wx, Wh, b), ref)
    h, c = h0, torch.zeros(N, H, dtype=torch.float64)
    for t in range(T):  # the step op, unrolled, agrees with the sequence op
        h, c = lstm_step(x[:, t], h, c, Wx, Wh, b)
        torch.testing.assert_close(h, ref[:, t])


def test_rnn_backward_is_one_node_not_T():
    x = torch.randn(2, 7, 3, requires_grad=True)
    out = rnn(x, torch.zeros(2, 4), torch.randn(3, 4), torch.randn(4, 4), torch.zeros(4))
    assert type(out.grad_fn).__name__ == "RNNFunctionBackward"
    assert all(type(fn).__name__ in ("AccumulateGrad", "NoneType") for fn, _ in out.grad_fn.next_functions if fn)


# --------------------------------------------------------------------------- bad input

N_, T_, D_, H_, V_ = 2, 3, 4, 5, 6


def _rnn_args(gates=1):
    return [
        torch.randn(N_, T_, D_),
        torch.randn(N_, H_),
        torch.randn(D_, gates * H_),
        torch.randn(H_, gates * H_),
        torch.randn(gates * H_),
    ]


def _with(args, i, value):
    args = list(args)
    args[i] = value
    return args


BAD = [
    # word_embedding
    ("word_embedding", lambda: word_embedding(torch.randn(2, 3), torch.randn(5, 4)), TypeError, "int64"),
    ("word_embedding", lambda: word_embedding(torch.tensor([[0, 5]]), torch.randn(5, 4)), ValueError, r"\[0, 5\)"),
    ("word_embedding", lambda: word_embedding(torch.tensor([[-1, 0]]), torch.randn(5, 4)), ValueError, "ids"),
    (
        "word_embedding",
        lambda: word_embedding(torch.tensor([[0, 1]]), torch.randn(5)),
        ValueError,
        "W must have 2 dimensions",
    ),
    (
        "word_embedding",
        lambda: word_embedding(torch.tensor([0, 1]), torch.randn(5, 4)),
        ValueError,
        "x must have 2 dimensions",
    ),
    (
        "word_embedding",
        lambda: word_embedding(torch.tensor([[0]]), torch.ones(5, 4, dtype=torch.long)),
        TypeError,
        "floating",
    ),
    # rnn_step
    (
        "rnn_step",
        lambda: rnn_step(torch.randn(2, 4), torch.randn(3, 5), torch.randn(4, 5), torch.randn(5, 5), torch.randn(5)),
        ValueError,
        "prev_h",
    ),
    (
        "rnn_step",
        lambda: rnn_step(torch.randn(2, 4), torch.randn(2, 5), torch.randn(3, 5), torch.randn(5, 5), torch.randn(5)),
        ValueError,
        "Wx",
    ),
    (
        "rnn_step",
        lambda: rnn_step(torch.randn(2, 3, 4), torch.randn(2, 5), torch.randn(4, 5), torch.randn(5, 5), torch.randn(5)),
        ValueError,
        r"\(N, D\)",
    ),
    (
        "rnn_step",
        lambda: rnn_step(
            torch.randn(2, 4),
            torch.randn(2, 5, dtype=torch.float64),
            torch.randn(4, 5),
            torch.randn(5, 5),
            torch.randn(5),
        ),
        TypeError,
        "float64",
    ),
    (
        "rnn_step",
        lambda: rnn_step(torch.randn(2, 4), torch.randn(2, 5), torch.randn(4, 5), torch.randn(5, 5), torch.randn(4)),
        ValueError,
        "b must have shape",
    ),
    # rnn
    ("rnn", lambda: rnn(*_with(_rnn_args(), 0, torch.randn(N_, D_))), ValueError, r"\(N, T, D\)"),
    ("rnn", lambda: rnn(*_with(_rnn_args(), 1, torch.randn(N_ + 1, H_))), ValueError, "h0"),
    ("rnn", lambda: rnn(*_with(_rnn_args(), 3, torch.randn(H_, H_ + 1))), ValueError, "Wh"),
    ("rnn", lambda: rnn(*_with(_rnn_args(), 2, torch.ones(D_, H_, dtype=torch.long))), TypeError, "Wx"),
    ("rnn", lambda: rnn(*_with(_rnn_args(), 4, "bias")), TypeError, "b must be a torch.Tensor"),
    # lstm_step
    (
        "lstm_step",
        lambda: lstm_step(
            torch.randn(2, 4),
            torch.randn(2, 5),
            torch.randn(2, 4),
            torch.randn(4, 20),
            torch.randn(5, 20),
            torch.randn(20),
        ),
        ValueError,
        "prev_c",
    ),
    (
        "lstm_step",
        lambda: lstm_step(
            torch.randn(2, 4),
            torch.randn(2, 5),
            torch.randn(2, 5),
            torch.randn(4, 5),
            torch.randn(5, 5),
            torch.randn(5),
        ),
        ValueError,
        "Wx",
    ),
    (
        "lstm_step",
        lambda: lstm_step(
            torch.randn(2, 4),
            torch.randn(2, 5),
            torch.randn(2, 5),
            torch.randn(4, 20),
            torch.randn(5, 20),
            torch.randn(5),
        ),
        ValueError,
        "b must have shape",
    ),
    (
        "lstm_step",
        lambda: lstm_step(
            torch.randn(2, 4).int(),
            torch.randn(2, 5),
            torch.randn(2, 5),
            torch.randn(4, 20),
            torch.randn(5, 20),
            torch.randn(20),
        ),
        TypeError,
        "floating",
    ),
    # lstm
    ("lstm", lambda: lstm(*_rnn_args(gates=1)), ValueError, r"\(4, 20\)|must have shape"),
    ("lstm", lambda: lstm(*_with(_rnn_args(4), 0, torch.randn(N_, T_, D_ + 1))), ValueError, "Wx"),
    ("lstm", lambda: lstm(*_with(_rnn_args(4), 1, torch.randn(H_))), ValueError, "h0"),
    ("lstm", lambda: lstm(*_with(_rnn_args(4), 2, torch.randn(D_, 20, dtype=torch.float64))), TypeError, "Wx"),
    # temporal_affine
    (
        "temporal_affine",
        lambda: temporal_affine(torch.randn(2, 4), torch.randn(4, 3), torch.randn(3)),
        ValueError,
        "3 dimensions",
    ),
    (
        "temporal_affine",
        lambda: temporal_affine(torch.randn(2, 3, 4), torch.randn(5, 3), torch.randn(3)),
        ValueError,
        "D=4",
    ),
    (
        "temporal_affine",
        lambda: temporal_affine(torch.randn(2, 3, 4), torch.randn(4, 3), torch.randn(4)),
        ValueError,
        r"\(3,\)",
    ),
    (
        "temporal_affine",
        lambda: temporal_affine(torch.randn(2, 3, 4), torch.randn(4, 3).double(), None),
        TypeError,
        "w is torch.float64",
    ),
    ("temporal_affine", lambda: temporal_affine([[1.0]], torch.randn(4, 3), None), TypeError, "must be a torch.Tensor"),
    # temporal_softmax_loss
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(2, 3, 4), torch.zeros(2, 3).long(), torch.ones(2, 3)),
        TypeError,
        "bool",
    ),
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(2, 3, 4), torch.zeros(2, 4).long(), torch.ones(2, 4).bool()),
        ValueError,
        r"y must have shape",
    ),
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(2, 3, 4), torch.zeros(2, 3).long(), torch.ones(3, 2).bool()),
        ValueError,
        "mask must have",
    ),
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(2, 3, 4), torch.full((2, 3), 4), torch.ones(2, 3).bool()),
        ValueError,
        r"\[0, 4\)",
    ),
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(2, 3, 4), torch.zeros(2, 3), torch.ones(2, 3).bool()),
        TypeError,
        "int64",
    ),
    (
        "temporal_softmax_loss",
        lambda: temporal_softmax_loss(torch.randn(6, 4), torch.zeros(2, 3).long(), torch.ones(2, 3).bool()),
        ValueError,
        "3 dimensions",
    ),
]


@pytest.mark.parametrize("op,call,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_clear_error(op, call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert op in str(info.value), f"the error should name {op}: {info.value}"


def test_every_op_has_at_least_four_bad_input_cases():
    counts = {spec.name: sum(b[0] == spec.name for b in BAD) for spec in SPECS}
    assert all(n >= 4 for n in counts.values()), counts


@CUDA
@pytest.mark.cuda
def test_device_mismatch_is_named():
    with pytest.raises(ValueError, match="word_embedding"):
        word_embedding(torch.tensor([[0]]), torch.randn(2, 3, device="cuda"))
    with pytest.raises(ValueError, match="rnn"):
        rnn(*_with(_rnn_args(), 1, torch.randn(N_, H_, device="cuda")))
