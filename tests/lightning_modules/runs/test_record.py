"""runs.record: the run digest covers the weights only, so a resumed run with the same weights has it."""

from __future__ import annotations

import torch

from lightning_modules.classifier import ClassifierModule
from lightning_modules.runs import record


def test_the_digest_covers_the_weights_and_not_the_metric_accumulators():
    module = ClassifierModule({"name": "two_layer_net", "hidden": 4})
    before = record.parameter_digests(module)
    module.metrics["train_loss"](torch.tensor(2.5), weight=3)  # what a resumed attempt accumulates differently
    module.metrics["val_acc"](torch.randn(4, 10), torch.tensor([1, 2, 3, 4]))
    assert record.parameter_digests(module) == before
    assert not any(name.startswith("metrics.") for name in record.weights(module))
    with torch.no_grad():
        next(module.parameters())[0, 0] += 1.0
    assert record.parameter_digests(module) != before
