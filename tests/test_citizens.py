"""The ops as PyTorch citizens: torch.func (vmap, grad, vjp, jacrev, per-sample gradients),
autocast, torch.compile(fullgraph=True), torch.export and Lightning mixed precision, for every
op of the registry and for the three networks; and the edge cases that must end in a correct
result or an error naming the op."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import customops as co
from customops.testing import check
from customops.testing.specs import ALL_SPECS
from lightning_modules.captioning import CaptioningConfig, CaptioningModule, CaptioningRNN
from lightning_modules.classifier import ClassifierModule
from lightning_modules.networks import ConvNet, TwoLayerNet

ALL_IDS = [s.name for s in ALL_SPECS]
CPU = torch.device("cpu")


def _cases(spec, dtype=torch.float64, seed=0):
    return spec.make_cases(dtype, CPU, torch.Generator().manual_seed(seed))


# ---- every op -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_torch_func_equals_a_loop(spec):
    """vmap, per-sample gradients (vmap of grad), vjp and jacrev equal torch.autograd on each sample."""
    for case_a, case_b in zip(_cases(spec), _cases(spec, seed=1)):
        check.run_func_checks(spec, case_a, case_b)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_autocast_bfloat16_follows_the_policy(spec):
    """Forward and backward under CPU autocast: output dtype by policy, gradients in float32."""
    for case in _cases(spec, torch.float32):
        check.run_autocast_check(spec, case, torch.bfloat16)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_compile_fullgraph_equals_eager(spec):
    check.run_compile_check(spec, _cases(spec, torch.float32)[0], backend="aot_eager")


def test_compile_runs_the_hand_written_backward():
    """A compiled Function of the ops' convention differentiates with its own backward."""

    class Tripled(torch.autograd.Function):  # forward is the identity; backward says 3
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return 3 * g

    torch._dynamo.reset()
    x = torch.randn(5, requires_grad=True)
    torch.compile(Tripled.apply, fullgraph=True, backend="aot_eager")(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), 3.0))


def test_checker_fails_an_op_that_breaks_under_vmap():
    """The func column can fail: an old-style Function (no setup_context) is refused by torch.func."""
    from customops.testing.registry import OpSpec

    class OldStyle(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    def make(dtype, device, gen):
        return [((torch.randn(3, generator=gen, dtype=dtype).requires_grad_(),), {})]

    spec = OpSpec("old_style", OldStyle.apply, lambda x: 2 * x, make)
    row = check.check_op(spec, CPU)
    assert row["func"] == "FAIL" and row["verdict"] == "FAIL", row


def test_check_command_prints_the_compatibility_table(capsys):
    assert check.main(["--ops", "relu", "softmax_loss"]) == 0
    out = capsys.readouterr().out
    for column in ("gradcheck", "gradgrad", "batched", "func", "autocast", "compile"):
        assert column in out
    assert "2 passed, 0 failed" in out


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


# ---- edge cases: a correct result or an error naming the op -----------------------------------


def test_temporal_softmax_loss_ignores_non_finite_scores_at_masked_steps():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 4), generator=gen)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    clean = scores.clone().requires_grad_()
    want = co.temporal_softmax_loss(clean, y, mask)
    want.backward()
    dirty = scores.clone()
    dirty[0, 2, 1], dirty[0, 3] = float("nan"), float("inf")
    dirty[1, 1, :] = float("-inf")
    dirty.requires_grad_()
    loss = co.temporal_softmax_loss(dirty, y, mask)
    loss.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.all(dirty.grad[~mask] == 0)


@pytest.mark.parametrize("op", ["affine", "max_pool2d", "conv2d", "relu"])
def test_empty_batch_gives_empty_results_and_gradients(op):
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    if op == "affine":
        w = torch.randn(72, 3, requires_grad=True)
        out = co.affine(x, w, torch.zeros(3, requires_grad=True))
        shape = (0, 3)
    elif op == "conv2d":
        w = torch.randn(3, 2, 3, 3, requires_grad=True)
        out = co.conv2d(x, w)
        shape = (0, 3, 4, 4)
    elif op == "max_pool2d":
        out, shape = co.max_pool2d(x), (0, 2, 3, 3)
    else:
        out, shape = co.relu(x), (0, 2, 6, 6)
    assert out.shape == shape
    out.sum().backward()
    assert x.grad.shape == x.shape
    if op in ("affine", "conv2d"):
        assert torch.all(w.grad == 0)


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 0, 0)),
            r"conv2d: the kernel must be at least 1x1",
        ),
        (
            lambda: co.conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 0)),
            r"conv2d: the kernel must be at least 1x1",
        ),
        (
            lambda: co.rnn(
                torch.randn(2, 0, 3), torch.randn(2, 4), torch.randn(3, 4), torch.randn(4, 4), torch.randn(4)
            ),
            r"rnn: x has no time steps",
        ),
        (
            lambda: co.lstm(
                torch.randn(2, 0, 3), torch.randn(2, 4), torch.randn(3, 16), torch.randn(4, 16), torch.randn(16)
            ),
            r"lstm: x has no time steps",
        ),
        (
            lambda: co.softmax_loss(torch.randn(3, 0), torch.zeros(3, dtype=torch.long)),
            r"softmax_loss: scores has 0 classes",
        ),
        (
            lambda: co.temporal_softmax_loss(
                torch.randn(2, 3, 0), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
            ),
            r"temporal_softmax_loss: .*V = 0",
        ),
    ],
    ids=["conv2d-0x0", "conv2d-3x0", "rnn-T0", "lstm-T0", "softmax_loss-C0", "temporal_softmax_loss-V0"],
)
def test_degenerate_shapes_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_value_checks_stay_in_eager_mode():
    """An out-of-range word id is named in eager mode; the same check does not break a compiled graph."""
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"word_embedding: x must hold word ids in \[0, 5\)"):
        co.word_embedding(torch.tensor([[0, 7]]), W)
    torch._dynamo.reset()
    compiled = torch.compile(co.word_embedding, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(torch.tensor([[0, 4]]), W), W[[0, 4]][None])


def test_modules_take_device_and_dtype():
    layers = [
        co.Linear(3, 2, device="cpu", dtype=torch.float64),
        co.Conv2d(1, 2, 3, device="cpu", dtype=torch.float64),
        co.WordEmbedding(5, 3, device="cpu", dtype=torch.float64),
        co.RNN(3, 4, device="cpu", dtype=torch.float64),
        co.LSTM(3, 4, device="cpu", dtype=torch.float64),
        co.TemporalAffine(3, 4, device="cpu", dtype=torch.float64),
    ]
    for layer in layers:
        assert all(p.dtype == torch.float64 for p in layer.parameters()), layer


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
