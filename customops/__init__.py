"""customops: neural-network layers as torch.autograd.Functions with hand-written backward passes.

Each op is a lowercase function (`affine`, `conv2d`, ...) applying its Function class; the
nn.Module wrappers (`Linear`, `Conv2d`, ...) own the Parameters. Derivations of every
gradient: docs/derivations.md. Check them all: `python -m customops.check`.
"""
from .affine import AffineFunction, affine
from .conv import Conv2dFunction, conv2d
from .embedding import WordEmbedding, WordEmbeddingFunction, word_embedding
from .losses import SoftmaxLossFunction, softmax_loss
from .modules import Conv2d, Linear, MaxPool2d, ReLU, SoftmaxLoss
from .pool import MaxPool2dFunction, max_pool2d
from .relu import ReLUFunction, relu
from .rnn import LSTM, RNN, LSTMFunction, LSTMStepFunction, RNNFunction, RNNStepFunction, lstm, lstm_step, rnn, rnn_step
from .temporal import (
    TemporalAffine,
    TemporalAffineFunction,
    TemporalSoftmaxLoss,
    TemporalSoftmaxLossFunction,
    temporal_affine,
    temporal_softmax_loss,
)

__all__ = [
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
]
