"""customops/__init__.py: the public names, each op a typed, documented function."""

from __future__ import annotations

import customops as co


def test_public_names():
    assert set(co.__all__) >= {"affine", "relu", "conv2d", "max_pool2d", "softmax_loss", "Linear", "Conv2d"}


def test_public_functions_have_documented_signatures():
    import inspect

    for name in (
        "affine",
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
        "relu",
    ):
        fn = getattr(co, name)
        params = inspect.signature(fn).parameters
        assert params and all(p.annotation is not inspect.Parameter.empty for p in params.values()), name
        assert fn.__doc__ and len(fn.__doc__.strip()) > 20, name
