"""customops/dropout.py: the rate, the expectation, the exact gradient and seeding."""

from __future__ import annotations

import torch

import customops as co


def test_dropout_rate_expectation_and_scale():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(200_000)
    out = co.dropout(x, 0.3, generator=gen)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.3) < 0.005, dropped  # binomial std is about 0.001
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.7)))
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_identity_cases():
    x = torch.randn(4, 5, requires_grad=True)
    assert co.dropout(x, 0.0) is x
    assert co.dropout(x, 0.9, training=False) is x
    assert co.Dropout(0.5).eval()(x) is x
    out = co.dropout(x, 1.0)
    out.sum().backward()
    assert torch.all(out == 0) and torch.all(x.grad == 0)


def test_dropout_gradient_is_the_mask_over_keep_exactly():
    x = (torch.rand(64, 33, dtype=torch.float64) + 0.5).requires_grad_()
    out = co.dropout(x, 0.25, generator=torch.Generator().manual_seed(3))
    out.backward(torch.ones_like(out))
    mask = (out != 0).double()
    assert torch.equal(x.grad, mask / 0.75)
    assert torch.equal(out.detach(), x.detach() * (mask / 0.75))


def test_dropout_seed_reproduces_and_differs_per_sample_under_vmap():
    x = torch.randn(3, 1000)
    a = co.dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    b = co.dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    ones = torch.ones(3, 1000)
    per_sample = torch.func.vmap(lambda r: co.dropout(r, 0.5), randomness="different")(ones)
    assert not torch.equal(per_sample[0], per_sample[1])
