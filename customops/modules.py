"""nn.Module layers: each owns its Parameters and calls the matching customops op.

Every layer with parameters takes `device` and `dtype`, like torch.nn's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import pair
from .activation import hardtanh
from .affine import affine
from .attention import scaled_dot_product_attention
from .batchnorm import batch_norm
from .conv import conv2d
from .dropout import dropout
from .embedding import word_embedding
from .losses import softmax_loss
from .norm import group_norm, layer_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
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
    """2-D cross-correlation, torch.nn.Conv2d's arguments. weight : out_channels x in_channels/groups x kh x kw.

    padding: an int, a pair, "valid" or "same"; only zero padding (padding_mode="zeros").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode={padding_mode!r} is not supported (only 'zeros')")
        if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2d: groups={groups!r} must be a positive int dividing in_channels ({in_channels}) "
                f"and out_channels ({out_channels})"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size)
        self.stride, self.dilation = pair("Conv2d", "stride", stride), pair("Conv2d", "dilation", dilation)
        self.padding = padding if padding in ("valid", "same") else pair("Conv2d", "padding", padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        _uniform_(self.weight, fan_in)
        if self.bias is not None:
            _uniform_(self.bias, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"


class MaxPool2d(nn.Module):
    """Max over kernel_size windows, torch.nn.MaxPool2d's arguments; stride defaults to kernel_size.

    Only return_indices=False and ceil_mode=False are supported.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        super().__init__()
        for name, value in (("return_indices", return_indices), ("ceil_mode", ceil_mode)):
            if value:
                raise ValueError(f"MaxPool2d: {name}=True is not supported")
        self.kernel_size = pair("MaxPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair("MaxPool2d", "stride", stride)
        self.padding, self.dilation = pair("MaxPool2d", "padding", padding), pair("MaxPool2d", "dilation", dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")


class AvgPool2d(nn.Module):
    """Mean over kernel_size windows (zero padding), torch.nn.AvgPool2d's arguments."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        super().__init__()
        self.kernel_size = pair("AvgPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair("AvgPool2d", "stride", stride)
        self.padding = pair("AvgPool2d", "padding", padding)
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(nn.Module):
    """Average pooling to output_size (an int, a pair, None entries keep the input's size); (1, 1) is global."""

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Hardtanh(nn.Module):
    """min(max(x, min_val), max_val) element-wise; inplace overwrites x (eager mode), as torch.nn.Hardtanh."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
        super().__init__()
        if not min_val < max_val:
            raise ValueError(f"{type(self).__name__}: min_val must be less than max_val, got {min_val}, {max_val}")
        self.min_val, self.max_val, self.inplace = float(min_val), float(max_val), bool(inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hardtanh(x, self.min_val, self.max_val, self.inplace)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """min(max(x, 0), 6) element-wise (MobileNet's activation)."""

    def __init__(self, inplace: bool = False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


# ---- normalisation -------------------------------------------------------------------------


class _BatchNorm(nn.modules.batchnorm._BatchNorm):
    """torch.nn's batch-norm module (its parameters, buffers, state_dict and options) running co.batch_norm.

    A subclass of torch.nn.modules.batchnorm._BatchNorm, so code that finds batch-norm layers by
    that class (to freeze their statistics with .eval(), for instance) finds these too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        # The momentum and buffer logic of torch.nn.modules.batchnorm._BatchNorm.forward
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            # momentum None: a cumulative moving average, 1/(batches seen so far)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_running = not self.training or self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if keep_running else None,
            self.running_var if keep_running else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) or (N, C, L) inputs, torch.nn.BatchNorm1d's arguments, parameters and buffers."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(
                f"BatchNorm1d: expected a 2-D or 3-D input (N, C) or (N, C, L), got shape {tuple(x.shape)}"
            )


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) inputs, torch.nn.BatchNorm2d's arguments, parameters and buffers."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"BatchNorm2d: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")


class GroupNorm(nn.Module):
    """Group norm, torch.nn.GroupNorm's arguments and parameters (weight ones, bias zeros at first)."""

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None, dtype=None
    ):
        super().__init__()
        if not isinstance(num_groups, int) or num_groups < 1 or num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={num_groups!r} must be a positive int dividing num_channels ({num_channels})"
            )
        factory = {"device": device, "dtype": dtype}
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = nn.Parameter(torch.ones(num_channels, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels, **factory)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class SoftmaxLoss(nn.Module):
    """Mean softmax cross-entropy: SoftmaxLoss()(scores (N, C), y (N,)) -> scalar; options as nn.CrossEntropyLoss's."""

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return softmax_loss(scores, y, self.ignore_index, self.label_smoothing)


# ---- sequence layers (image captioning) ------------------------------------------------


class WordEmbedding(nn.Module):
    """Owns the (vocab_size, dim) table; forward ids (N, T) -> (N, T, dim) (ids of any shape: (*, dim)).

    padding_idx: that row starts at zero and gets no gradient, as in torch.nn.Embedding.
    """

    def __init__(self, vocab_size: int, dim: int, padding_idx: int | None = None, device=None, dtype=None):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        if padding_idx is not None:
            if not -vocab_size <= padding_idx < vocab_size:
                raise ValueError(
                    f"WordEmbedding: padding_idx must be in [-{vocab_size}, {vocab_size}), got {padding_idx}"
                )
            padding_idx %= vocab_size
        self.padding_idx = padding_idx
        # Small N(0, 1/D) entries keep the first RNN pre-activations out of tanh's flat tails.
        self.weight = nn.Parameter(torch.randn(vocab_size, dim, device=device, dtype=dtype) / math.sqrt(dim))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return word_embedding(x, self.weight, self.padding_idx)
        rows = x.reshape(1, -1)  # (1, M): any shape of ids, looked up as one row
        return word_embedding(rows, self.weight, self.padding_idx).view(*x.shape, self.dim)

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}" + (
            f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        )


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


# ---- attention layers --------------------------------------------------------------------


class LayerNorm(nn.Module):
    """Layer norm over the last dimension, weight ones and bias zeros at first (torch.nn.LayerNorm's options)."""

    def __init__(
        self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim, self.eps, self.elementwise_affine = dim, eps, elementwise_affine
        self.weight = nn.Parameter(torch.ones(dim, **factory)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(dim, **factory)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}" + ("" if self.elementwise_affine else ", elementwise_affine=False")


class Dropout(nn.Module):
    """Inverted dropout while training (module.train()); the identity in evaluation."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MultiHeadAttention(nn.Module):
    """Multi-head attention: query (N, S, D), key and value (N, T, D) -> (N, S, D).

    The four projections (query, key, value, output) are Linear layers (co.affine); each head
    attends with co.scaled_dot_product_attention over its D / num_heads features; dropout
    (co.dropout) acts on the output, as the Transformer's residual dropout does.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        if not (isinstance(embed_dim, int) and isinstance(num_heads, int) and embed_dim > 0 and num_heads > 0):
            raise ValueError(
                f"MultiHeadAttention: embed_dim and num_heads must be positive ints, got {embed_dim}, {num_heads}"
            )
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.query, self.key, self.value, self.out = (Linear(embed_dim, embed_dim, **factory) for _ in range(4))
        self.dropout = Dropout(dropout)

    def _project(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        """x (N, L, D) -> (N, H, L, D / H): a projection, split into heads."""
        N, L, D = x.shape
        heads = affine(x.reshape(N * L, D), layer.weight, layer.bias)  # (N*L, D)
        return heads.view(N, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (N, H, L, D/H)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """mask: bool, broadcastable to (N, H, S, T) (e.g. (S, T)), True where a query may attend to a key."""
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: query must be (N, S, {self.embed_dim}), got {tuple(query.shape)}")
        if (
            key.shape != value.shape
            or key.dim() != 3
            or key.shape[0] != query.shape[0]
            or key.shape[-1] != self.embed_dim
        ):
            raise ValueError(
                f"MultiHeadAttention: key and value must both be (N={query.shape[0]}, T, {self.embed_dim}), "
                f"got {tuple(key.shape)} and {tuple(value.shape)}"
            )
        N, S, D = query.shape
        q, k, v = self._project(self.query, query), self._project(self.key, key), self._project(self.value, value)
        heads = scaled_dot_product_attention(q, k, v, mask)  # (N, H, S, D/H)
        merged = heads.transpose(1, 2).reshape(N * S, D)  # (N*S, D)
        return self.dropout(affine(merged, self.out.weight, self.out.bias).view(N, S, D))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout.p}"


class PositionalEncoding(nn.Module):
    """Adds the Transformer's sinusoidal position codes: x (N, T, D) -> x + PE[:T] (T <= max_len).

    PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)).
    """

    def __init__(self, dim: int, max_len: int = 512, device=None, dtype=None):
        super().__init__()
        if not (isinstance(dim, int) and isinstance(max_len, int) and dim > 0 and max_len > 0):
            raise ValueError(f"PositionalEncoding: dim and max_len must be positive ints, got {dim}, {max_len}")
        position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))  # (ceil(D/2),)
        pe = torch.zeros(max_len, dim, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq[: dim // 2])
        self.register_buffer("pe", pe.to(device=device, dtype=dtype or torch.get_default_dtype()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.pe.shape[0]:
            raise ValueError(f"PositionalEncoding: sequence length {T} exceeds max_len {self.pe.shape[0]}")
        return x + self.pe[:T]
