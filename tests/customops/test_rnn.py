"""customops/rnn.py: tiny values, agreement with nn.RNN / nn.LSTM, backprop through time in one
node; a device mismatch is named."""

from __future__ import annotations

import pytest
import torch

from customops import lstm, lstm_step, rnn, rnn_step


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


@pytest.mark.cuda
def test_device_mismatch_is_named(cuda):
    N, T, D, H = 2, 3, 4, 5
    args = [torch.randn(N, T, D), torch.randn(N, H, device=cuda), torch.randn(D, H), torch.randn(H, H), torch.randn(H)]
    with pytest.raises(ValueError, match="rnn"):
        rnn(*args)
