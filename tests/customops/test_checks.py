"""customops/_checks.py: the Function convention under torch.compile, and value checks that run
only in eager mode."""

from __future__ import annotations

import pytest
import torch

import customops as co


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


def test_value_checks_stay_in_eager_mode():
    """An out-of-range word id is named in eager mode; the same check does not break a compiled graph."""
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"word_embedding: x must hold word ids in \[0, 5\)"):
        co.word_embedding(torch.tensor([[0, 7]]), W)
    torch._dynamo.reset()
    compiled = torch.compile(co.word_embedding, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(torch.tensor([[0, 4]]), W), W[[0, 4]][None])


def test_function_base_sets_a_vmap_rule():
    class Square(co.Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    assert Square.generate_vmap_rule
    x = torch.randn(3, 4)
    per_row = torch.func.vmap(torch.func.grad(lambda r: Square.apply(r).sum()))(x)
    torch.testing.assert_close(per_row, 2 * x)


def test_function_base_refuses_the_older_form_at_definition():
    with pytest.raises(TypeError, match="OldForm: customops.Function takes forward"):

        class OldForm(co.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return grad * 2
