"""The networks as PyTorch citizens: torch.compile(fullgraph=True) of a training step, torch.export,
per-sample gradients (torch.func) and Lightning mixed precision, for the three networks built from
customops layers. (Each op's own torch.func, autocast, compile and export checks run over the registry
in tests/customops/testing/test_specs.py.)"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import customops as co
from lightning_modules.captioning import CaptioningConfig, CaptioningModule, CaptioningRNN
from lightning_modules.classifier import ClassifierModule
from lightning_modules.networks import ConvNet, TwoLayerNet

# ---- the networks -------------------------------------------------------------------------


def _tiny_caption_batch(gen, n=4, length=7, vocab=13, feature_dim=6):
    features = torch.randn(n, feature_dim, generator=gen)
    captions = torch.randint(3, vocab, (n, length), generator=gen)
    captions[:, 0] = 1  # <START>
    for i in range(n):  # <END> then <NULL> padding, at different lengths
        end = 3 + i % (length - 3)
        captions[i, end] = 2
        captions[i, end + 1 :] = 0
    return features, captions


def _networks():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28, generator=gen), torch.randint(0, 10, (6,), generator=gen)
    cap = CaptioningRNN(CaptioningConfig(vocab_size=13, feature_dim=6, wordvec_dim=5, hidden_dim=8, cell="lstm"))
    return [
        ("TwoLayerNet", TwoLayerNet(hidden=16), (x,), lambda out: co.softmax_loss(out, y)),
        ("ConvNet", ConvNet(filters=4, kernel_size=5, hidden=16), (x,), lambda out: co.softmax_loss(out, y)),
        ("captioner", cap, _tiny_caption_batch(gen), lambda out: out),
    ]


def _loss_and_grads(model, fn, inputs, loss_of):
    model.zero_grad()
    loss = loss_of(fn(*inputs))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("index", range(3), ids=["TwoLayerNet", "ConvNet", "captioner"])
def test_training_step_compiles_without_graph_breaks(index):
    name, model, inputs, loss_of = _networks()[index]
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(*inputs)
    assert explanation.graph_break_count == 0, (name, explanation.break_reasons)
    assert explanation.graph_count == 1, name
    want_loss, want_grads = _loss_and_grads(model, model, inputs, loss_of)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss, grads = _loss_and_grads(model, compiled, inputs, loss_of)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for key in want_grads:
        torch.testing.assert_close(grads[key], want_grads[key], rtol=1e-4, atol=1e-6, msg=f"{name} {key}")


def test_inductor_compiles_the_convnet_training_step():
    """The real compiler (generated kernels), forward and backward, equals eager."""
    name, model, inputs, loss_of = _networks()[1]
    want_loss, want_grads = _loss_and_grads(model, model, inputs, loss_of)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss, grads = _loss_and_grads(model, compiled, inputs, loss_of)
    torch.testing.assert_close(loss, want_loss, rtol=1e-4, atol=1e-5)
    for key in want_grads:
        torch.testing.assert_close(grads[key], want_grads[key], rtol=1e-3, atol=1e-5, msg=key)


@pytest.mark.parametrize("index", range(3), ids=["TwoLayerNet", "ConvNet", "captioner"])
def test_export_runs_with_and_without_grad(index):
    name, model, inputs, loss_of = _networks()[index]
    want_loss, want_grads = _loss_and_grads(model, model, inputs, loss_of)
    exported = torch.export.export(model, inputs).module()
    with torch.no_grad():
        torch.testing.assert_close(loss_of(exported(*inputs)), want_loss, rtol=1e-5, atol=1e-6)
    # With grad enabled the exported program is differentiable too, with the same gradients.
    loss, grads = _loss_and_grads(exported, exported, inputs, loss_of)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for key, g in grads.items():
        torch.testing.assert_close(g, want_grads[key], rtol=1e-4, atol=1e-6, msg=f"{name} {key}")


def test_per_sample_gradients_of_a_network():
    """vmap(grad(loss)) over a batch equals one backward per sample (the DP-SGD recipe)."""
    from torch.func import functional_call, grad, vmap

    _, model, (x,), _ = _networks()[1]
    y = torch.arange(x.shape[0]) % 10
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return co.softmax_loss(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        model.zero_grad()
        co.softmax_loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, rtol=1e-4, atol=1e-6, msg=k)


def _fit(module, loader, precision, steps):
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    return trainer


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("task", ["ConvNet", "captioner"])
def test_lightning_mixed_precision_trains_close_to_float32(task, precision):
    gen = torch.Generator().manual_seed(0)
    if task == "ConvNet":
        data = TensorDataset(torch.randn(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen))

        def make():
            torch.manual_seed(0)
            net = ConvNet(filters=4, kernel_size=5, hidden=32)
            return ClassifierModule(net, 10, lr=3e-3, scheduler="constant"), net

        def loss_of(net):
            x, y = data.tensors
            return co.softmax_loss(net(x), y).item()
    else:
        data = TensorDataset(*_tiny_caption_batch(gen, n=32, vocab=13))

        def make():
            torch.manual_seed(0)
            module = CaptioningModule(vocab_size=13, feature_dim=6, wordvec_dim=8, hidden_dim=16, cell="lstm", lr=1e-2)
            return module, module.model

        def loss_of(net):
            return net(*data.tensors).item()

    results = {}
    for run in ("32-true", precision):
        module, net = make()
        start = loss_of(net)
        _fit(module, DataLoader(data, batch_size=16, shuffle=False), run, steps=20)
        results[run] = (start, loss_of(net))
        assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay float32
    (start32, end32), (start16, end16) = results["32-true"], results[precision]
    assert end32 < 0.9 * start32 and end16 < 0.9 * start16, results  # both learn
    assert math.isclose(end16, end32, rel_tol=0.1), results  # and end close to each other
