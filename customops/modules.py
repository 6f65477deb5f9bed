"""nn.Module layers: each owns its Parameters and calls the matching customops op.

Every layer with parameters takes `device` and `dtype`, like torch.nn's.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import pair
from .affine import affine
from .conv import conv2d
from .embedding import word_embedding
from .losses import softmax_loss
from .pool import max_pool2d
from .relu import relu
from .rnn import lstm, lstm_step, rnn, rnn_step
from .temporal import temporal_affine, temporal_softmax_loss


def _uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn's default for Linear and Conv2d (kaiming_uniform, a=sqrt(5))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return nn.init.uniform_(t, -bound, bound)


class Linear(nn.Module):
    """Affine layer Y = X W + b. weight : in_features x out_features (rows of X are samples)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self.weight, self.in_features)
        if self.bias is not None:
            _uniform_(self.bias, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(nn.Module):
    """max(x, 0) element-wise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)


class Conv2d(nn.Module):
    """2-D cross-correlation. weight : out_channels x in_channels x kh x kw."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size)
        self.stride, self.padding = pair("Conv2d", "stride", stride), pair("Conv2d", "padding", padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        _uniform_(self.weight, fan_in)
        if self.bias is not None:
            _uniform_(self.bias, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


class MaxPool2d(nn.Module):
    """Max over kernel_size windows; stride defaults to kernel_size."""

    def __init__(self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = pair("MaxPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair("MaxPool2d", "stride", stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class SoftmaxLoss(nn.Module):
    """Mean softmax cross-entropy: SoftmaxLoss()(scores (N, C), y (N,)) -> scalar."""

    def forward(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return softmax_loss(scores, y)


# ---- sequence layers (image captioning) ------------------------------------------------


class WordEmbedding(nn.Module):
    """Owns the (vocab_size, dim) table; forward (N, T) ids -> (N, T, dim)."""

    def __init__(self, vocab_size: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        # Small N(0, 1/D) entries keep the first RNN pre-activations out of tanh's flat tails.
        self.weight = nn.Parameter(torch.randn(vocab_size, dim, device=device, dtype=dtype) / math.sqrt(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return word_embedding(x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}"


class RNN(nn.Module):
    """Vanilla tanh RNN owning Wx (D, H), Wh (H, H), b (H,); forward (x (N, T, D), h0 (N, H)) -> (N, T, H)."""

    gates = 1

    def __init__(self, input_dim: int, hidden_dim: int, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        G = self.gates * hidden_dim
        # N(0, 1/fan_in) weights keep pre-activations O(1) (the homework's initialisation).
        self.Wx = nn.Parameter(torch.randn(input_dim, G, **factory) / math.sqrt(input_dim))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, G, **factory) / math.sqrt(hidden_dim))
        self.b = nn.Parameter(torch.zeros(G, **factory))

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


class TemporalAffine(nn.Module):
    """Owns weight (in_features, out_features) and bias; forward (N, T, in) -> (N, T, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(in_features, out_features, **factory) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_affine(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class TemporalSoftmaxLoss(nn.Module):
    """(scores (N, T, V), y (N, T), mask (N, T) bool) -> scalar masked loss."""

    def forward(self, scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return temporal_softmax_loss(scores, y, mask)
