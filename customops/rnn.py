"""Recurrent layers: vanilla (tanh) RNN and LSTM, one step and whole sequences.

The sequence ops run backpropagation through time inside one Function: the input
projections and the weight gradients are single large matmuls over all N*T rows,
and only the recurrence h_{t-1} -> h_t is a Python loop.

All backward passes are built from differentiable torch ops and never modify a
saved tensor, so they support double backward (gradgradcheck). Tensors they use
are inputs or outputs of the Function; where an intermediate is needed (the LSTM's
gates and cell states) it is recomputed from those when a graph of the backward is
being built, so second derivatives flow through it.

LSTM gates follow the order i, f, o, g along the 4H axis (torch.nn.LSTM uses i, f, g, o).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_recurrent(
    op: str,
    x: torch.Tensor,
    states: dict[str, torch.Tensor],
    Wx: torch.Tensor,
    Wh: torch.Tensor,
    b: torch.Tensor,
    gates: int,
    sequence: bool,
) -> None:
    """Shapes, dtypes and devices of a recurrent op's inputs; `gates` is 1 (RNN) or 4 (LSTM)."""
    tensors = {"x": x, **states, "Wx": Wx, "Wh": Wh, "b": b}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but x is {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")
    want = "(N, T, D)" if sequence else "(N, D)"
    if x.dim() != (3 if sequence else 2):
        raise ValueError(f"{op}: x must be {want}, got shape {tuple(x.shape)}")
    if Wh.dim() != 2:
        raise ValueError(f"{op}: Wh must be (H, {gates if gates > 1 else ''}H), got shape {tuple(Wh.shape)}")
    H = Wh.shape[0]
    N, D = x.shape[0], x.shape[-1]
    G = gates * H
    expected = {"Wx": (D, G), "Wh": (H, G), "b": (G,), **{name: (N, H) for name in states}}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{op}: {name} must have shape {shape} for x {tuple(x.shape)} and hidden size {H}, "
                f"got {tuple(tensors[name].shape)}"
            )


# --------------------------------------------------------------------------- vanilla RNN


class RNNStepFunction(torch.autograd.Function):
    """next_h = tanh(x Wx + prev_h Wh + b).

    x : N x D
    prev_h : N x H
    Wx : D x H
    Wh : H x H
    b : H
    next_h : N x H
    """

    @staticmethod
    def forward(ctx, x, prev_h, Wx, Wh, b):
        _check_recurrent("rnn_step", x, {"prev_h": prev_h}, Wx, Wh, b, gates=1, sequence=False)
        next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)
        ctx.save_for_backward(x, prev_h, Wx, Wh, next_h)
        return next_h

    @staticmethod
    def backward(ctx, grad_next_h):
        x, prev_h, Wx, Wh, next_h = ctx.saved_tensors
        grad_x = grad_prev_h = grad_Wx = grad_Wh = grad_b = None
        # tanh'(a) = 1 - tanh(a)^2, written with the saved output.  docs/derivations.md#rnn-step
        grad_a = grad_next_h * (1 - next_h * next_h)  # (N, H)
        if ctx.needs_input_grad[0]:
            grad_x = grad_a @ Wx.t()
        if ctx.needs_input_grad[1]:
            grad_prev_h = grad_a @ Wh.t()
        if ctx.needs_input_grad[2]:
            grad_Wx = x.t() @ grad_a
        if ctx.needs_input_grad[3]:
            grad_Wh = prev_h.t() @ grad_a
        if ctx.needs_input_grad[4]:
            grad_b = grad_a.sum(0)
        return grad_x, grad_prev_h, grad_Wx, grad_Wh, grad_b


rnn_step = RNNStepFunction.apply


class RNNFunction(torch.autograd.Function):
    """h[:, t] = tanh(x[:, t] Wx + h[:, t-1] Wh + b), with h[:, -1] = h0.

    x : N x T x D
    h0 : N x H
    Wx : D x H
    Wh : H x H
    b : H
    h : N x T x H (every hidden state)
    """

    @staticmethod
    def forward(ctx, x, h0, Wx, Wh, b):
        _check_recurrent("rnn", x, {"h0": h0}, Wx, Wh, b, gates=1, sequence=True)
        N, T, D = x.shape
        H = h0.shape[1]
        # Input projections of all steps at once; only the recurrence is sequential.
        xw = (x.reshape(N * T, D) @ Wx + b).reshape(N, T, H)  # (N*T, D) -> (N, T, H)
        hs = []
        prev_h = h0
        for t in range(T):
            prev_h = torch.tanh(torch.addmm(xw[:, t], prev_h, Wh))  # (N, H)
            hs.append(prev_h)
        h = torch.stack(hs, dim=1)  # (N, T, H)
        ctx.save_for_backward(x, h0, Wx, Wh, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        x, h0, Wx, Wh, h = ctx.saved_tensors
        grad_x = grad_h0 = grad_Wx = grad_Wh = grad_b = None
        N, T, D = x.shape
        H = h0.shape[1]
        # Backprop through time: the gradient reaching h_t is the loss's own (grad_h[:, t])
        # plus what flows back from step t+1 through Wh.  docs/derivations.md#backprop-through-time
        dtanh = 1 - h * h  # (N, T, H)
        grad_a_steps = [None] * T
        grad_next = torch.zeros_like(h0)  # dL/dh_t arriving from step t+1
        for t in reversed(range(T)):
            grad_a_t = (grad_h[:, t] + grad_next) * dtanh[:, t]  # (N, H)
            grad_a_steps[t] = grad_a_t
            grad_next = grad_a_t @ Wh.t()
        grad_a = torch.stack(grad_a_steps, dim=1).reshape(N * T, H)  # (N*T, H)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_a @ Wx.t()).reshape(N, T, D)  # (N, T, D)
        if ctx.needs_input_grad[1]:
            grad_h0 = grad_next
        if ctx.needs_input_grad[2]:
            grad_Wx = x.reshape(N * T, D).t() @ grad_a  # (D, H)
        if ctx.needs_input_grad[3]:
            h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1).reshape(N * T, H)  # (N*T, H)
            grad_Wh = h_prev.t() @ grad_a
        if ctx.needs_input_grad[4]:
            grad_b = grad_a.sum(0)
        return grad_x, grad_h0, grad_Wx, grad_Wh, grad_b


rnn = RNNFunction.apply


# --------------------------------------------------------------------------- LSTM


def _lstm_gates(a: torch.Tensor, H: int) -> torch.Tensor:
    """Pre-activations (..., 4H) -> gate values (..., 4H): sigmoid for i, f, o; tanh for g."""
    return torch.cat([torch.sigmoid(a[..., : 3 * H]), torch.tanh(a[..., 3 * H :])], dim=-1)


def _lstm_gate_grad(gates: torch.Tensor, grad_ifog: torch.Tensor, H: int) -> torch.Tensor:
    """dL/da from dL/d(gate values): sigmoid' = s(1-s) for i, f, o; tanh' = 1-g^2 for g."""
    local = torch.cat([gates[..., : 3 * H] * (1 - gates[..., : 3 * H]), 1 - gates[..., 3 * H :] ** 2], dim=-1)
    return grad_ifog * local


class LSTMStepFunction(torch.autograd.Function):
    """One LSTM step: a = x Wx + prev_h Wh + b split into i, f, o, g;
    next_c = f * prev_c + i * g; next_h = o * tanh(next_c).

    x : N x D
    prev_h, prev_c : N x H
    Wx : D x 4H
    Wh : H x 4H
    b : 4H
    next_h, next_c : N x H
    """

    @staticmethod
    def forward(ctx, x, prev_h, prev_c, Wx, Wh, b):
        _check_recurrent("lstm_step", x, {"prev_h": prev_h, "prev_c": prev_c}, Wx, Wh, b, gates=4, sequence=False)
        H = prev_h.shape[1]
        gates = _lstm_gates(x @ Wx + prev_h @ Wh + b, H)  # (N, 4H)
        i, f, o, g = gates.split(H, dim=1)
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
        # Only inputs are saved: the gates are recomputed in backward (one small matmul),
        # which keeps backward differentiable for double backward.
        ctx.save_for_backward(x, prev_h, prev_c, Wx, Wh, b)
        return next_h, next_c

    @staticmethod
    def backward(ctx, grad_next_h, grad_next_c):
        x, prev_h, prev_c, Wx, Wh, b = ctx.saved_tensors
        grad_x = grad_prev_h = grad_prev_c = grad_Wx = grad_Wh = grad_b = None
        H = prev_h.shape[1]
        gates = _lstm_gates(x @ Wx + prev_h @ Wh + b, H)  # (N, 4H)
        i, f, o, g = gates.split(H, dim=1)
        tanh_c = torch.tanh(f * prev_c + i * g)
        # next_c reaches the loss directly and through next_h = o * tanh(next_c).
        # docs/derivations.md#lstm-step
        grad_c = grad_next_c + grad_next_h * o * (1 - tanh_c * tanh_c)  # (N, H)
        grad_ifog = torch.cat([grad_c * g, grad_c * prev_c, grad_next_h * tanh_c, grad_c * i], dim=1)  # (N, 4H)
        grad_a = _lstm_gate_grad(gates, grad_ifog, H)  # (N, 4H)
        if ctx.needs_input_grad[0]:
            grad_x = grad_a @ Wx.t()
        if ctx.needs_input_grad[1]:
            grad_prev_h = grad_a @ Wh.t()
        if ctx.needs_input_grad[2]:
            grad_prev_c = grad_c * f
        if ctx.needs_input_grad[3]:
            grad_Wx = x.t() @ grad_a
        if ctx.needs_input_grad[4]:
            grad_Wh = prev_h.t() @ grad_a
        if ctx.needs_input_grad[5]:
            grad_b = grad_a.sum(0)
        return grad_x, grad_prev_h, grad_prev_c, grad_Wx, grad_Wh, grad_b


lstm_step = LSTMStepFunction.apply


def _lstm_replay(x, h0, Wx, Wh, b, h):
    """Gates (N, T, 4H) and cell states (N, T, H) of a sequence, from its hidden states.

    With every h_{t-1} known, all pre-activations are two large matmuls; only the
    cell recurrence c_t = f_t c_{t-1} + i_t g_t is sequential (elementwise).
    """
    N, T, D = x.shape
    H = h0.shape[1]
    h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)  # (N, T, H)
    a = (x.reshape(N * T, D) @ Wx + h_prev.reshape(N * T, H) @ Wh + b).reshape(N, T, 4 * H)  # (N, T, 4H)
    gates = _lstm_gates(a, H)
    i, f, _, g = gates.split(H, dim=2)
    ig = i * g
    cs = []
    c = torch.zeros_like(h0)
    for t in range(T):
        c = f[:, t] * c + ig[:, t]
        cs.append(c)
    return gates, torch.stack(cs, dim=1)  # (N, T, 4H), (N, T, H)


class LSTMFunction(torch.autograd.Function):
    """LSTM over a sequence with initial cell state zero (the homework's lstm_forward).

    x : N x T x D
    h0 : N x H
    Wx : D x 4H
    Wh : H x 4H
    b : 4H
    h : N x T x H (every hidden state)
    """

    @staticmethod
    def forward(ctx, x, h0, Wx, Wh, b):
        _check_recurrent("lstm", x, {"h0": h0}, Wx, Wh, b, gates=4, sequence=True)
        N, T, D = x.shape
        H = h0.shape[1]
        xw = (x.reshape(N * T, D) @ Wx + b).reshape(N, T, 4 * H)  # (N*T, D) -> (N, T, 4H)
        hs, gate_steps, cs = [], [], []
        prev_h, prev_c = h0, torch.zeros_like(h0)
        for t in range(T):
            gates = _lstm_gates(torch.addmm(xw[:, t], prev_h, Wh), H)  # (N, 4H)
            i, f, o, g = gates.split(H, dim=1)
            prev_c = f * prev_c + i * g
            prev_h = o * torch.tanh(prev_c)
            hs.append(prev_h)
            gate_steps.append(gates)
            cs.append(prev_c)
        h = torch.stack(hs, dim=1)  # (N, T, H)
        # gates and c are intermediates: used as they are by a plain backward, and
        # recomputed from (inputs, h) by _lstm_replay when double backward needs their graph.
        ctx.save_for_backward(x, h0, Wx, Wh, b, h, torch.stack(gate_steps, dim=1), torch.stack(cs, dim=1))
        return h

    @staticmethod
    def backward(ctx, grad_h):
        x, h0, Wx, Wh, b, h, gates, c = ctx.saved_tensors
        grad_x = grad_h0 = grad_Wx = grad_Wh = grad_b = None
        N, T, D = x.shape
        H = h0.shape[1]
        if torch.is_grad_enabled():  # create_graph=True: rebuild gates and c with their graph
            gates, c = _lstm_replay(x, h0, Wx, Wh, b, h)
        i, f, o, g = gates.split(H, dim=2)  # each (N, T, H)
        tanh_c = torch.tanh(c)
        c_prev = torch.cat([torch.zeros_like(h0).unsqueeze(1), c[:, :-1]], dim=1)  # (N, T, H)
        # Everything but the two recurrent gradients is known for all steps at once:
        # dL/da_t = [dc_t g_t, dc_t c_{t-1}, dh_t tanh(c_t), dc_t i_t] * gate derivatives.
        # docs/derivations.md#lstm-sequence
        coef = _lstm_gate_grad(gates, torch.cat([g, c_prev, tanh_c, i], dim=2), H)  # (N, T, 4H)
        dc_from_h = o * (1 - tanh_c * tanh_c)  # (N, T, H)
        grad_a_steps = [None] * T
        grad_h_next = torch.zeros_like(h0)
        grad_c_next = torch.zeros_like(h0)
        for t in reversed(range(T)):
            dh = grad_h[:, t] + grad_h_next  # (N, H)
            dc = grad_c_next + dh * dc_from_h[:, t]
            grad_a_t = torch.cat([dc, dc, dh, dc], dim=1) * coef[:, t]  # (N, 4H)
            grad_a_steps[t] = grad_a_t
            grad_h_next = grad_a_t @ Wh.t()
            grad_c_next = dc * f[:, t]
        grad_a = torch.stack(grad_a_steps, dim=1).reshape(N * T, 4 * H)  # (N*T, 4H)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_a @ Wx.t()).reshape(N, T, D)  # (N, T, D)
        if ctx.needs_input_grad[1]:
            grad_h0 = grad_h_next
        if ctx.needs_input_grad[2]:
            grad_Wx = x.reshape(N * T, D).t() @ grad_a  # (D, 4H)
        if ctx.needs_input_grad[3]:
            h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1).reshape(N * T, H)  # (N*T, H)
            grad_Wh = h_prev.t() @ grad_a  # (H, 4H)
        if ctx.needs_input_grad[4]:
            grad_b = grad_a.sum(0)
        return grad_x, grad_h0, grad_Wx, grad_Wh, grad_b


lstm = LSTMFunction.apply


# --------------------------------------------------------------------------- modules


class RNN(nn.Module):
    """Vanilla tanh RNN owning Wx (D, H), Wh (H, H), b (H,); forward (x (N, T, D), h0 (N, H)) -> (N, T, H)."""

    gates = 1

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        G = self.gates * hidden_dim
        # N(0, 1/fan_in) weights keep pre-activations O(1) (the homework's initialisation).
        self.Wx = nn.Parameter(torch.randn(input_dim, G) / math.sqrt(input_dim))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, G) / math.sqrt(hidden_dim))
        self.b = nn.Parameter(torch.zeros(G))

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return rnn(x, h0, self.Wx, self.Wh, self.b)

    def init_state(self, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Recurrent state for step(): (h,) here, (h, c) for the LSTM."""
        return (h0,)

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step: x (N, D), state -> (next_h (N, H), next state)."""
        next_h = rnn_step(x, state[0], self.Wx, self.Wh, self.b)
        return next_h, (next_h,)

    def extra_repr(self) -> str:
        return f"{self.input_dim}, {self.hidden_dim}"


class LSTM(RNN):
    """LSTM (gates i, f, o, g) owning Wx (D, 4H), Wh (H, 4H), b (4H,); initial cell state zero."""

    gates = 4

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return lstm(x, h0, self.Wx, self.Wh, self.b)

    def init_state(self, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (h0, torch.zeros_like(h0))

    def step(self, x, state):
        next_h, next_c = lstm_step(x, state[0], state[1], self.Wx, self.Wh, self.b)
        return next_h, (next_h, next_c)
