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

import torch

from ._checks import LOWER, Function, apply, autocast_cast, check_recurrent, in_place_ok, unwrapped

# --------------------------------------------------------------------------- vanilla RNN


class RNNStepFunction(Function):
    """next_h = tanh(x Wx + prev_h Wh + b).

    x : N x D
    prev_h : N x H
    Wx : D x H
    Wh : H x H
    b : H
    next_h : N x H
    """

    @staticmethod
    def forward(x, prev_h, Wx, Wh, b):
        return torch.tanh(torch.addmm(b, x, Wx) + prev_h @ Wh)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, prev_h, Wx, Wh, b = inputs
        ctx.save_for_backward(x, prev_h, Wx, Wh, output)

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


def rnn_step(
    x: torch.Tensor, prev_h: torch.Tensor, Wx: torch.Tensor, Wh: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """One vanilla RNN step, next_h = tanh(x Wx + prev_h Wh + b) (low precision under autocast).

    Args:
        x: (N, D) inputs.
        prev_h: (N, H) previous hidden state.
        Wx: (D, H), Wh: (H, H), b: (H,).

    Returns:
        next_h: (N, H).
    """
    x, prev_h, Wx, Wh, b = autocast_cast(LOWER, x, prev_h, Wx, Wh, b)
    check_recurrent("rnn_step", x, {"prev_h": prev_h}, Wx, Wh, b, gates=1, sequence=False)
    return apply(RNNStepFunction, x, prev_h, Wx, Wh, b)


class RNNFunction(Function):
    """h[:, t] = tanh(x[:, t] Wx + h[:, t-1] Wh + b), with h[:, -1] = h0.

    x : N x T x D
    h0 : N x H
    Wx : D x H
    Wh : H x H
    b : H
    h : N x T x H (every hidden state)
    """

    @staticmethod
    def forward(x, h0, Wx, Wh, b):
        N, T, D = x.shape
        H = h0.shape[1]
        # Input projections of all steps at once; only the recurrence is sequential.
        xw = (x.reshape(N * T, D) @ Wx + b).reshape(N, T, H)  # (N*T, D) -> (N, T, H)
        hs = []
        prev_h = h0
        for t in range(T):
            prev_h = torch.tanh(torch.addmm(xw[:, t], prev_h, Wh))  # (N, H)
            hs.append(prev_h)
        return torch.stack(hs, dim=1)  # (N, T, H)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h0, Wx, Wh, b = inputs
        ctx.save_for_backward(x, h0, Wx, Wh, output)

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


def rnn(x: torch.Tensor, h0: torch.Tensor, Wx: torch.Tensor, Wh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Vanilla tanh RNN over a sequence (low precision under autocast).

    Args:
        x: (N, T, D) inputs, T >= 1.
        h0: (N, H) initial hidden state.
        Wx: (D, H), Wh: (H, H), b: (H,).

    Returns:
        h: (N, T, H), every hidden state; h[:, t] = tanh(x[:, t] Wx + h[:, t-1] Wh + b).
    """
    x, h0, Wx, Wh, b = autocast_cast(LOWER, x, h0, Wx, Wh, b)
    check_recurrent("rnn", x, {"h0": h0}, Wx, Wh, b, gates=1, sequence=True)
    return apply(RNNFunction, x, h0, Wx, Wh, b)


# --------------------------------------------------------------------------- LSTM


def _lstm_gates(a: torch.Tensor, H: int) -> torch.Tensor:
    """Pre-activations (..., 4H) -> gate values (..., 4H): sigmoid for i, f, o; tanh for g."""
    return torch.cat([torch.sigmoid(a[..., : 3 * H]), torch.tanh(a[..., 3 * H :])], dim=-1)


def _lstm_gate_grad(gates: torch.Tensor, grad_ifog: torch.Tensor, H: int) -> torch.Tensor:
    """dL/da from dL/d(gate values): sigmoid' = s(1-s) for i, f, o; tanh' = 1-g^2 for g."""
    local = torch.cat([gates[..., : 3 * H] * (1 - gates[..., : 3 * H]), 1 - gates[..., 3 * H :] ** 2], dim=-1)
    return grad_ifog * local


class LSTMStepFunction(Function):
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
    def forward(x, prev_h, prev_c, Wx, Wh, b):
        H = prev_h.shape[1]
        gates = _lstm_gates(x @ Wx + prev_h @ Wh + b, H)  # (N, 4H)
        i, f, o, g = gates.split(H, dim=1)
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
        return next_h, next_c

    @staticmethod
    def setup_context(ctx, inputs, output):
        # Only inputs are saved: the gates are recomputed in backward (one small matmul),
        # which keeps backward differentiable for double backward.
        ctx.save_for_backward(*inputs)

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


def lstm_step(
    x: torch.Tensor,
    prev_h: torch.Tensor,
    prev_c: torch.Tensor,
    Wx: torch.Tensor,
    Wh: torch.Tensor,
    b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, gates in the order i, f, o, g (low precision under autocast).

    Args:
        x: (N, D) inputs.
        prev_h, prev_c: (N, H) previous hidden and cell states.
        Wx: (D, 4H), Wh: (H, 4H), b: (4H,).

    Returns:
        (next_h, next_c), each (N, H).
    """
    x, prev_h, prev_c, Wx, Wh, b = autocast_cast(LOWER, x, prev_h, prev_c, Wx, Wh, b)
    check_recurrent("lstm_step", x, {"prev_h": prev_h, "prev_c": prev_c}, Wx, Wh, b, gates=4, sequence=False)
    return apply(LSTMStepFunction, x, prev_h, prev_c, Wx, Wh, b)


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


class LSTMFunction(Function):
    """LSTM over a sequence with initial cell state zero (the homework's lstm_forward).

    x : N x T x D
    h0 : N x H
    Wx : D x 4H
    Wh : H x 4H
    b : 4H
    h : N x T x H (every hidden state)
    """

    @staticmethod
    def forward(x, h0, Wx, Wh, b):
        N, T, D = x.shape
        H = h0.shape[1]
        xw = (x.reshape(N * T, D) @ Wx + b).reshape(N, T, 4 * H)  # (N*T, D) -> (N, T, 4H)
        if in_place_ok() and unwrapped(x, h0, Wx, Wh, b):
            return _lstm_forward_in_buffers(xw, h0, Wh)
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
        # gates (N, T, 4H) and c (N, T, H) are intermediates, returned as non-differentiable outputs:
        # used as they are by a plain backward, and recomputed from (inputs, h) by _lstm_replay
        # when double backward needs their graph.
        return torch.stack(hs, dim=1), torch.stack(gate_steps, dim=1), torch.stack(cs, dim=1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, gates, c = output
        ctx.mark_non_differentiable(gates, c)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs
        ctx.save_for_backward(*inputs, h, gates, c)

    @staticmethod
    def backward(ctx, grad_h, _grad_gates, _grad_c):
        if grad_h is None:  # no gradient reached the output (materialize_grads is off)
            return None, None, None, None, None
        x, h0, Wx, Wh, b, h, gates, c = ctx.saved_tensors
        grad_x = grad_h0 = grad_Wx = grad_Wh = grad_b = None
        N, T, D = x.shape
        H = h0.shape[1]
        if torch.is_grad_enabled():  # create_graph=True: rebuild gates and c with their graph
            gates, c = _lstm_replay(x, h0, Wx, Wh, b, h)
        if in_place_ok() and unwrapped(grad_h, x, h0, Wx, Wh, gates):
            grad_a, grad_h0 = _lstm_backward_in_buffers(grad_h, h0, Wh, gates, c)
        else:
            grad_a, grad_h0 = _lstm_backward(grad_h, h0, Wh, gates, c)
        grad_a = grad_a.reshape(N * T, 4 * H)  # (N*T, 4H)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_a @ Wx.t()).reshape(N, T, D)  # (N, T, D)
        if not ctx.needs_input_grad[1]:
            grad_h0 = None
        if ctx.needs_input_grad[2]:
            grad_Wx = x.reshape(N * T, D).t() @ grad_a  # (D, 4H)
        if ctx.needs_input_grad[3]:
            h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1).reshape(N * T, H)  # (N*T, H)
            grad_Wh = h_prev.t() @ grad_a  # (H, 4H)
        if ctx.needs_input_grad[4]:
            grad_b = grad_a.sum(0)
        return grad_x, grad_h0, grad_Wx, grad_Wh, grad_b


def _lstm_backward(grad_h, h0, Wh, gates, c):
    """Backprop through time: dL/da (N, T, 4H) for every step, and dL/dh0 (N, H), out of place
    (double backward and torch.func)."""
    T = gates.shape[1]
    H = h0.shape[1]
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
    return torch.stack(grad_a_steps, dim=1), grad_h_next  # dL/da (N, T, 4H), dL/dh0 (N, H)


# ---- the same two passes in preallocated buffers (eager mode, plain tensors) -------------
# Fresh multi-megabyte tensors cost more on CPU than the arithmetic on them, so these keep every
# per-step result in a few buffers, written with out= and in-place ops. Buffers are time-major,
# (T, N, ...), so that each step's slice is contiguous.


def _lstm_forward_in_buffers(xw: torch.Tensor, h0: torch.Tensor, Wh: torch.Tensor):
    """xw (N, T, 4H) input projections + bias -> h (N, T, H), gates (N, T, 4H), c (N, T, H)."""
    N, T, G = xw.shape
    H = G // 4
    gates = xw.new_empty(T, N, G)
    hs, cs = xw.new_empty(T, N, H), xw.new_empty(T, N, H)
    tanh_c = xw.new_empty(N, H)
    prev_h = h0
    for t in range(T):
        a = torch.addmm(xw[:, t], prev_h, Wh, out=gates[t])  # (N, 4H) pre-activations
        a[:, : 3 * H].sigmoid_()  # i, f, o
        a[:, 3 * H :].tanh_()  # g
        i, f, o, g = a.split(H, dim=1)
        if t == 0:  # c_{-1} = 0
            torch.mul(i, g, out=cs[t])
        else:
            torch.mul(f, cs[t - 1], out=cs[t]).addcmul_(i, g)  # c_t = f c_{t-1} + i g
        prev_h = torch.mul(o, torch.tanh(cs[t], out=tanh_c), out=hs[t])  # h_t = o tanh(c_t)
    return hs.transpose(0, 1).contiguous(), gates.transpose(0, 1), cs.transpose(0, 1)


def _lstm_backward_in_buffers(grad_h, h0, Wh, gates, c):
    """_lstm_backward's results, computed in buffers: dL/da (T, N, 4H) seen as (N, T, 4H), dL/dh0."""
    N, T, G = gates.shape
    H = G // 4
    gates_t, c_t = gates.transpose(0, 1), c.transpose(0, 1)  # (T, N, .) views
    grad_a = gates.new_empty(T, N, G)
    dh, dc, grad_c, tanh_c, work = (h0.new_empty(N, H) for _ in range(5))
    grad_h_next = h0.new_zeros(N, H)
    Wh_t = Wh.t()
    for t in reversed(range(T)):
        i, f, o, g = gates_t[t].split(H, dim=1)  # (N, H) each
        ga_i, ga_f, ga_o, ga_g = grad_a[t].split(H, dim=1)
        torch.add(grad_h[:, t], grad_h_next, out=dh)  # dL/dh_t: its own and from step t+1
        torch.tanh(c_t[t], out=tanh_c)
        # dL/dc_t = (from step t+1) + dh_t o_t (1 - tanh^2 c_t)
        torch.mul(tanh_c, tanh_c, out=dc).neg_().add_(1).mul_(o).mul_(dh)
        if t < T - 1:
            dc.add_(grad_c)
        # dL/da = [dc g, dc c_{t-1}, dh tanh(c_t), dc i] * (sigmoid' for i, f, o; tanh' for g)
        torch.mul(dc, g, out=ga_i).mul_(i).mul_(torch.neg(i, out=work).add_(1))
        if t > 0:
            torch.mul(dc, c_t[t - 1], out=ga_f).mul_(f).mul_(torch.neg(f, out=work).add_(1))
        else:
            ga_f.zero_()  # c_{-1} = 0
        torch.mul(dh, tanh_c, out=ga_o).mul_(o).mul_(torch.neg(o, out=work).add_(1))
        torch.mul(dc, i, out=ga_g).mul_(torch.mul(g, g, out=work).neg_().add_(1))
        torch.mm(grad_a[t], Wh_t, out=grad_h_next)  # dL/dh_{t-1} through Wh
        torch.mul(dc, f, out=grad_c)  # dL/dc_{t-1}
    return grad_a.transpose(0, 1), grad_h_next


def lstm(x: torch.Tensor, h0: torch.Tensor, Wx: torch.Tensor, Wh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LSTM over a sequence, initial cell state zero, gates i, f, o, g (low precision under autocast).

    Args:
        x: (N, T, D) inputs, T >= 1.
        h0: (N, H) initial hidden state.
        Wx: (D, 4H), Wh: (H, 4H), b: (4H,).

    Returns:
        h: (N, T, H), every hidden state.
    """
    x, h0, Wx, Wh, b = autocast_cast(LOWER, x, h0, Wx, Wh, b)
    check_recurrent("lstm", x, {"h0": h0}, Wx, Wh, b, gates=4, sequence=True)
    return apply(LSTMFunction, x, h0, Wx, Wh, b)[0]
