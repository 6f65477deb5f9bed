"""co.batch_norm and the BatchNorm modules (customops/batchnorm.py, customops/modules.py): the
normalisation itself, the running statistics (momentum, the unbiased variance, momentum=None,
no running statistics, once per forward and never in backward, compiled as in eager), torch.func's
rules, mixed precision, state_dicts both ways and clear errors. The registry checks (gradcheck,
gradgradcheck, parity, torch.func, autocast, compile, error inputs) run for batch_norm (training
and evaluation samples) in tests/customops/testing/test_specs.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import customops as co

f64 = torch.float64


def test_hand_computed_training_step():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], requires_grad=True)  # (N=2, C=2)
    mean, var = torch.zeros(2), torch.ones(2)
    y = co.batch_norm(x, mean, var, torch.tensor([2.0, 1.0]), torch.tensor([0.0, 5.0]), True, 0.5, 0.0)
    # channel 0: mean 2, variance 1; channel 1: mean 4, variance 4 -> xhat = -1, 1 in both
    assert torch.equal(y, torch.tensor([[-2.0, 4.0], [2.0, 6.0]]))
    # running: 0.5 * old + 0.5 * batch, with the unbiased variances 2 and 8
    assert torch.equal(mean, torch.tensor([1.0, 2.0])) and torch.equal(var, torch.tensor([1.5, 4.5]))
    # with two entries per channel the normalised output is constant (+-1): no gradient reaches x
    y.backward(torch.tensor([[1.0, 3.0], [2.0, 5.0]]))
    assert torch.allclose(x.grad, torch.zeros(2, 2), atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (2, 3, 4, 5)], ids=["NC", "NCL", "NCHW"])
def test_running_statistics_follow_torch_over_steps(shape):
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, generator=gen, dtype=f64), torch.rand(3, generator=gen, dtype=f64) + 0.5]
    theirs = [t.clone() for t in ours]
    w, b = torch.randn(3, dtype=f64, generator=gen), torch.randn(3, dtype=f64, generator=gen)
    for step in range(3):
        x = torch.randn(shape, generator=gen, dtype=f64) * (step + 1) + step
        y = co.batch_norm(x, *ours, w, b, True, 0.3, 1e-4)
        torch.testing.assert_close(y, F.batch_norm(x, *theirs, w, b, True, 0.3, 1e-4), rtol=0, atol=1e-12)
        for got, want in zip(ours, theirs):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    x = torch.randn(shape, generator=gen, dtype=f64)  # evaluation normalises with them
    torch.testing.assert_close(co.batch_norm(x, *ours, w, b), F.batch_norm(x, *theirs, w, b), rtol=0, atol=1e-12)


def test_update_happens_once_per_forward_and_never_in_backward():
    x = torch.randn(6, 2, 3, requires_grad=True)
    mean, var = torch.zeros(2), torch.ones(2)
    y = co.batch_norm(x, mean, var, training=True)
    after_forward = mean.clone(), var.clone()
    assert not torch.equal(after_forward[0], torch.zeros(2))
    y.square().sum().backward()
    assert torch.equal(mean, after_forward[0]) and torch.equal(var, after_forward[1])


def _bn_pair(cls_ours, cls_theirs, *args, **kwargs):
    torch.manual_seed(0)
    ours, theirs = cls_ours(*args, **kwargs).double(), cls_theirs(*args, **kwargs).double()
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2), ours.bias.uniform_(-1, 1)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize(
    "options",
    [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}, {"momentum": 0.5, "eps": 1e-3}],
    ids=["default", "cumulative", "no-affine", "no-running-stats", "momentum-eps"],
)
def test_modules_equal_torch_nn_in_train_and_eval(options):
    ours, theirs = _bn_pair(co.BatchNorm2d, nn.BatchNorm2d, 3, **options)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(4, 3, 2, 3, generator=gen, dtype=f64) * 2 + step
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)
    for (name, got), (_, want) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=name)
    if ours.num_batches_tracked is not None:
        assert ours.num_batches_tracked == 3
    ours.eval(), theirs.eval()
    x = torch.randn(4, 3, 2, 3, generator=gen, dtype=f64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)


def test_batchnorm1d_and_state_dicts_load_both_ways():
    ours, theirs = _bn_pair(co.BatchNorm1d, nn.BatchNorm1d, 4)
    x = torch.randn(5, 4, 3, dtype=f64)
    ours(x), theirs(x)
    assert list(ours.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    fresh_native, fresh_ours = nn.BatchNorm1d(4).double(), co.BatchNorm1d(4).double()
    fresh_native.load_state_dict(ours.state_dict())
    fresh_ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 4, dtype=f64)
    torch.testing.assert_close(fresh_ours.eval()(x), fresh_native.eval()(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="BatchNorm1d: expected a 2-D or 3-D input"):
        ours(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="BatchNorm2d: expected a 4-D input"):
        co.BatchNorm2d(4)(torch.randn(2, 4))


def test_batchnorm_layers_are_found_and_frozen_like_torch_ones():
    net = nn.Sequential(co.Conv2d(3, 4, 3), co.BatchNorm2d(4), co.ReLU6())
    found = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert found == [net[1]]
    net.train()
    for m in found:
        m.eval()  # how transfer learning keeps pretrained statistics while the rest trains
    before = net[1].running_mean.clone()
    net(torch.randn(2, 3, 5, 5)).sum().backward()
    assert torch.equal(net[1].running_mean, before) and net[1].weight.grad is not None


def test_compiled_update_equals_eager():
    torch._dynamo.reset()
    eager = co.BatchNorm2d(3).train()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend="aot_eager")
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(4, 3, 2, 2, generator=gen).requires_grad_()
        y_eager, y_compiled = eager(x), compiled(x)
        torch.testing.assert_close(y_compiled, y_eager)
        (g_compiled,) = torch.autograd.grad(y_compiled.square().sum(), x)
        (g_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
        torch.testing.assert_close(g_compiled, g_eager)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(compiled_module, name), getattr(eager, name), msg=name)
    assert eager.num_batches_tracked == 3


def test_vmap_normalises_with_batch_statistics_but_refuses_to_update_unbatched_ones():
    x = torch.randn(3, 4, 2, 5)  # vmapped over the first dimension: samples of (4, 2, 5)
    batched = vmap(lambda t: co.batch_norm(t, None, None, training=True))(x)
    for k in range(3):
        torch.testing.assert_close(batched[k], F.batch_norm(x[k], None, None, training=True))
    mean, var = torch.zeros(2), torch.ones(2)
    with pytest.raises(RuntimeError, match="batch_norm: cannot update unbatched running statistics.*vmap"):
        vmap(lambda t: co.batch_norm(t, mean, var, training=True))(x)
    assert torch.equal(mean, torch.zeros(2))
    # evaluation mode reads the running statistics only: fine under vmap
    vmap(lambda t: co.batch_norm(t, mean, var))(x)
    # torch's own recipe for modules works on these too
    net = co.BatchNorm1d(2)
    torch.func.replace_all_batch_norm_modules_(net)
    vmap(net)(x)


def test_torch_func_grad_updates_the_running_statistics_as_torch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 2, 2, generator=gen, dtype=f64)
    ours, theirs = (
        [torch.zeros(3, dtype=f64), torch.ones(3, dtype=f64)],
        [torch.zeros(3, dtype=f64), torch.ones(3, dtype=f64)],
    )
    got = grad(lambda t: co.batch_norm(t, *ours, training=True).pow(3).sum())(x)
    want = grad(lambda t: F.batch_norm(t, *theirs, training=True).pow(3).sum())(x)
    torch.testing.assert_close(got, want)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # A module's num_batches_tracked counter is a captured buffer there: torch.func refuses both alike.
    for module in _bn_pair(co.BatchNorm2d, nn.BatchNorm2d, 3):
        params = {k: v.detach() for k, v in module.named_parameters()}
        with pytest.raises(RuntimeError, match="mutate a captured Tensor"):
            grad(lambda p, m=module: functional_call(m, p, (x,)).sum())(params)


def test_half_precision_input_with_float32_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=gen).bfloat16().requires_grad_()
    w, b = torch.rand(3, generator=gen) + 0.5, torch.randn(3, generator=gen)
    ours, theirs = [torch.zeros(3), torch.ones(3)], [torch.zeros(3), torch.ones(3)]
    y = co.batch_norm(x, *ours, w, b, True)
    want = F.batch_norm(x, *theirs, w, b, True)
    assert y.dtype == torch.bfloat16 == want.dtype and ours[0].dtype == torch.float32
    torch.testing.assert_close(y.float(), want.float(), rtol=0, atol=2e-2)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=1e-2)
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_chunked_statistics_and_sums_equal_torch(monkeypatch, channels_last):
    """The eager statistics and backward sums run a batch chunk at a time (customops/_reduce.py):
    with chunks of one sample, the results are torch's."""
    from customops import _reduce

    monkeypatch.setattr(_reduce, "_CHUNK_ENTRIES", 1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 2, generator=gen, dtype=f64) * 3 + 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, generator=gen, dtype=f64), torch.randn(3, generator=gen, dtype=f64)
    g = torch.randn(5, 3, 4, 2, generator=gen, dtype=f64)
    for training in (True, False):
        results = []
        for fn in (co.batch_norm, F.batch_norm):
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            stats = [torch.zeros(3, dtype=f64), torch.ones(3, dtype=f64)]
            y = fn(leaves[0], *stats, leaves[1], leaves[2], training)
            results.append([y, *torch.autograd.grad(y, leaves, g), *stats])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
