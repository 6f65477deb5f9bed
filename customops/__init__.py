"""customops: neural-network layers as torch.autograd.Functions with hand-written backward passes.

Each op is a typed lowercase function (`affine`, `conv2d`, ...) that validates its arguments
and applies its Function class; the nn.Module layers (`Linear`, `Conv2d`, ...) own the
Parameters. `convert(module)` turns a torch.nn network (a torchvision model, say) into one
built from these layers, weights included. The ops work under torch.func (vmap, grad,
jacrev), autocast, torch.compile and torch.export. Derivations of every gradient: docs/derivations.md.
Check them all: `python -m customops.check`; time them: `python -m customops.bench`.
`customops.Function` is the Functions' base class, for your own ops too; check and time those
with `customops.testing` (docs/tutorial.md).
"""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from ._checks import Function
from .activation import HardtanhFunction, HardtanhInplaceFunction, hardtanh, relu6
from .affine import AffineFunction, affine
from .attention import ScaledDotProductAttentionFunction, scaled_dot_product_attention
from .batchnorm import BatchNormEvalFunction, BatchNormFunction, batch_norm
from .conv import Conv2dFunction, DepthwiseConv2dFunction, conv2d
from .convert import ConversionWarning, convert, unsupported_layers
from .dropout import DropoutFunction, dropout
from .embedding import WordEmbeddingFunction, word_embedding
from .losses import SoftmaxLossFunction, softmax_loss
from .modules import (
    LSTM,
    RNN,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    GroupNorm,
    Hardtanh,
    LayerNorm,
    Linear,
    MaxPool2d,
    MultiHeadAttention,
    PositionalEncoding,
    ReLU,
    ReLU6,
    SoftmaxLoss,
    TemporalAffine,
    TemporalSoftmaxLoss,
    WordEmbedding,
)
from .norm import GroupNormFunction, LayerNormFunction, group_norm, layer_norm
from .pool import AvgPool2dFunction, MaxPool2dFunction, adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .relu import ReLUFunction, relu
from .rnn import LSTMFunction, LSTMStepFunction, RNNFunction, RNNStepFunction, lstm, lstm_step, rnn, rnn_step
from .temporal import TemporalAffineFunction, TemporalSoftmaxLossFunction, temporal_affine, temporal_softmax_loss

__all__ = [
    "Function",
    "affine",
    "relu",
    "conv2d",
    "max_pool2d",
    "softmax_loss",
    "word_embedding",
    "rnn_step",
    "rnn",
    "lstm_step",
    "lstm",
    "temporal_affine",
    "temporal_softmax_loss",
    "layer_norm",
    "dropout",
    "scaled_dot_product_attention",
    "batch_norm",
    "group_norm",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "hardtanh",
    "relu6",
    "convert",
    "ConversionWarning",
    "unsupported_layers",
    "AffineFunction",
    "ReLUFunction",
    "Conv2dFunction",
    "MaxPool2dFunction",
    "SoftmaxLossFunction",
    "WordEmbeddingFunction",
    "RNNStepFunction",
    "RNNFunction",
    "LSTMStepFunction",
    "LSTMFunction",
    "TemporalAffineFunction",
    "TemporalSoftmaxLossFunction",
    "LayerNormFunction",
    "DropoutFunction",
    "ScaledDotProductAttentionFunction",
    "DepthwiseConv2dFunction",
    "BatchNormFunction",
    "BatchNormEvalFunction",
    "GroupNormFunction",
    "AvgPool2dFunction",
    "HardtanhFunction",
    "HardtanhInplaceFunction",
    "Linear",
    "ReLU",
    "Conv2d",
    "MaxPool2d",
    "SoftmaxLoss",
    "WordEmbedding",
    "RNN",
    "LSTM",
    "TemporalAffine",
    "TemporalSoftmaxLoss",
    "LayerNorm",
    "Dropout",
    "MultiHeadAttention",
    "PositionalEncoding",
    "BatchNorm1d",
    "BatchNorm2d",
    "GroupNorm",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Hardtanh",
    "ReLU6",
]
