"""customops/testing/checks.py: check_function on a correct user Function (every check passes) and on
a zoo of broken ones, each caught by the check it breaks with a message naming the cause."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

import customops
from customops.testing import CHECKS, SampleInput, check_function


def _x(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()


# ---- a correct user Function -----------------------------------------------------------------


class Sigmoid(customops.Function):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y)."""

    @staticmethod
    def forward(x):
        return 1 / (1 + torch.exp(-x))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return grad_y * y * (1 - y)


def test_a_correct_function_passes_every_check():
    results = check_function(Sigmoid.apply, (_x(4, 3),), twin=torch.sigmoid)
    assert list(results) == list(CHECKS)
    skipped = {name: r for name, r in results.items() if r.startswith("SKIPPED")}
    assert set(skipped) <= {"parity_cuda"}, results  # parity_cuda needs a GPU beside the CPU samples
    assert all(r == "SUCCESS" for name, r in results.items() if name not in skipped), results


def test_without_a_twin_parity_is_skipped_and_the_rest_runs():
    results = check_function(Sigmoid.apply, (_x(4, 3),), checks=["gradcheck", "parity", "torch_func"])
    assert results["gradcheck"] == results["torch_func"] == "SUCCESS"
    assert results["parity_float64"] == results["parity_float16"] == "SKIPPED: no twin"


def test_a_list_of_sample_calls_and_keyword_arguments():
    def scaled(x, *, scale):
        return Sigmoid.apply(x) * scale

    samples = [SampleInput((_x(3),), {"scale": 2.0}), SampleInput((_x(2, 5, seed=1),), {"scale": 0.5})]
    results = check_function(scaled, samples, twin=lambda x, *, scale: torch.sigmoid(x) * scale, checks=["parity"])
    assert results["parity_float64"] == "SUCCESS", results


def test_unknown_checks_and_empty_calls_are_refused():
    with pytest.raises(ValueError, match="unknown check 'gradchek'"):
        check_function(Sigmoid.apply, (_x(3),), checks=["gradchek"])
    with pytest.raises(ValueError, match="at least one tensor"):
        check_function(Sigmoid.apply, (1.0,))


# ---- the zoo: one mistake each -------------------------------------------------------------------


class ConstantFactor(Sigmoid):  # sigmoid whose gradient is doubled
    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return 2 * grad_y * y * (1 - y)


class WrongInput(customops.Function):  # x * w, elementwise, returning w's gradient for x and x's for w
    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * x, grad * w


class Stash(customops.Function):  # keeps x as ctx.x instead of saving it
    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        (ctx.x,) = inputs

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.x.cos()


class GradOutputInPlace(customops.Function):  # right values, but written into grad_output
    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.mul_(x.cos())


class InputInPlace(customops.Function):  # forward doubles its input in place
    @staticmethod
    def forward(x):
        return x.mul_(2).sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * x.cos()


class TooFew(customops.Function):  # x @ w, backward forgets w's gradient
    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t()


class TooMany(TooFew):  # ... and one that returns a gradient too many
    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t(), x.t() @ grad, grad.sum(0)


class IgnoresNeedsInputGrad(customops.Function):  # x @ w + b, b's gradient even when b is None
    @staticmethod
    def forward(x, w, b):
        return x @ w if b is None else x @ w + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _ = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t(), x.t() @ grad, grad.sum(0)


class NoVmapRule(Sigmoid):  # the modern form, without a vmap rule
    generate_vmap_rule = False


class OldStyle(torch.autograd.Function):  # forward(ctx, x): fine for autograd, refused by torch.func
    @staticmethod
    def forward(ctx, x):
        y = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return grad_y * y * (1 - y)


class Branchy(customops.Function):  # a Python branch on a value: no single graph
    @staticmethod
    def forward(x):
        if x.sum() > 0:
            return x * 2
        return x * 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.factor = 2.0 if bool(x.sum() > 0) else 3.0

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor


class Noisy(customops.Function):  # draws noise on every call
    @staticmethod
    def forward(x):
        return x + 1e-3 * torch.rand_like(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class OnceDifferentiable(Sigmoid):  # a first-order backward, declared as such
    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return grad_y * y * (1 - y)


def _xw():
    return _x(3, 4), _x(3, 4, seed=1)


ZOO = [
    # (Function, args, twin, the check that catches it, what its message must say)
    (ConstantFactor, (_x(4, 3),), torch.sigmoid, "gradcheck", "2 times the numerical gradient everywhere"),
    (WrongInput, _xw(), torch.mul, "gradcheck", "equals the numerical gradient of input 1 (w)"),
    (Stash, (_x(5),), torch.sin, "saved_tensors", "Stash keeps tensors on ctx (ctx.x)"),
    (GradOutputInPlace, (_x(5),), torch.sin, "no_input_mutation", "changed its grad_output in place"),
    (InputInPlace, (_x(5),), None, "no_input_mutation", "forward changed input 0 (x) in place"),
    (TooFew, (_x(3, 4), _x(4, 2, seed=1)), torch.matmul, "gradcheck", "returns 1 gradient but forward takes 2"),
    (TooMany, (_x(3, 4), _x(4, 2, seed=1)), torch.matmul, "gradcheck", "returns 3 gradients but forward takes 2"),
    (NoVmapRule, (_x(4, 3),), torch.sigmoid, "torch_func", "has no vmap rule: set generate_vmap_rule = True"),
    (OldStyle, (_x(4, 3),), torch.sigmoid, "torch_func", "forward takes ctx"),
    (Branchy, (_x(5),), None, "compile", "a Python branch on a tensor's value"),
    (Noisy, (_x(5),), None, "determinism", "two calls with the same inputs differ"),
]


@pytest.mark.parametrize("fn,args,twin,check,cause", ZOO, ids=[z[0].__name__ for z in ZOO])
def test_the_zoo_is_caught_with_its_cause(fn, args, twin, check, cause):
    results = check_function(fn.apply, args, twin=twin, raise_exception=False)
    assert results[check].startswith(f"{check}: "), results[check]
    assert cause in results[check], results[check]
    with pytest.raises(AssertionError) as first:  # the first failure, in CHECKS order
        check_function(fn.apply, args, twin=twin)
    assert first.value.args[0] == next(
        r for r in results.values() if r not in ("SUCCESS",) and not r.startswith("SKIPPED")
    )


def test_needs_input_grad_ignored_where_an_input_is_none():
    samples = [(_x(3, 4), _x(4, 2, seed=1), _x(2, seed=2)), (_x(3, 4), _x(4, 2, seed=1), None)]
    results = check_function(
        IgnoresNeedsInputGrad.apply, samples, twin=lambda x, w, b: F.linear(x, w.t(), b), raise_exception=False
    )
    assert "ignores ctx.needs_input_grad" in results["gradcheck"], results["gradcheck"]
    assert "input 2 (b)" in results["gradcheck"] and "sample 1" in results["gradcheck"]


def test_the_failure_names_the_input_and_the_worst_element():
    results = check_function(
        WrongInput.apply, _xw(), twin=torch.mul, checks=["gradcheck", "parity_float64"], raise_exception=False
    )
    assert "the gradient of input 0 (x) is wrong: element (" in results["gradcheck"]
    assert "analytic" in results["gradcheck"] and "numerical" in results["gradcheck"]
    assert "custom" in results["parity_float64"] and "vs twin" in results["parity_float64"]


def test_a_once_differentiable_backward_skips_gradgradcheck_only():
    results = check_function(
        OnceDifferentiable.apply, (_x(4, 3),), twin=torch.sigmoid, checks=["gradcheck", "gradgradcheck"]
    )
    assert results == {
        "gradcheck": "SUCCESS",
        "gradgradcheck": "SKIPPED: OnceDifferentiable.backward is @once_differentiable",
    }


class NaiveLayerNorm(customops.Function):  # statistics in the input's dtype: float16 overflows
    @staticmethod
    def forward(x):
        centred = x - x.mean(-1, keepdim=True)
        var = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square() / x.shape[-1]
        return centred * (var + 1e-5).rsqrt()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError  # only the forward matters here


def test_low_precision_parity_catches_statistics_that_overflow_float16():
    x = (_x(4, 256) * 20).detach().requires_grad_(False)  # a row's sum of squares passes 65504
    twin = partial(F.layer_norm, normalized_shape=(256,))
    results = check_function(NaiveLayerNorm.apply, (x,), twin=twin, checks=["parity"], raise_exception=False)
    assert results["parity_float64"] == results["parity_float32"] == "SUCCESS", results
    assert results["parity_float16"].startswith("parity_float16: NaiveLayerNorm: output 0 differs from the twin's")
    assert "In float32 the same sample agrees with the twin" in results["parity_float16"]


class Identity(customops.Function):
    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_low_precision_parity_passes_an_op_closer_to_float64_than_its_twin():
    """The twin rounds too: (x + 1000) - 1000 in float16 is off by up to 0.25, the op is exact."""
    x = _x(6, 5)

    def sloppy_twin(x):
        return (x + 1000) - 1000

    results = check_function(Identity.apply, (x,), twin=sloppy_twin, checks=["parity"], raise_exception=False)
    assert results["parity_float16"] == "SUCCESS", results
    exact = check_function(sloppy_twin, (x,), twin=Identity.apply, checks=["parity_float16"], raise_exception=False)
    assert exact["parity_float16"].startswith("parity_float16: sloppy_twin: output 0 differs")  # the other way round


def test_check_spec_runs_a_specs_checks():
    from customops.testing import OpSpec, check_spec, tensor_maker

    def samples(device, dtype, requires_grad):
        yield SampleInput((tensor_maker(device, dtype, requires_grad)(3, 4, noncontiguous=True),))

    spec = OpSpec("sigmoid", Sigmoid.apply, sample_inputs=samples, twin=torch.sigmoid, autocast="same")
    assert check_spec(spec, checks=["gradcheck", "autocast", "error_inputs"]) == {
        "gradcheck": "SUCCESS",
        "autocast": "SUCCESS",
        "error_inputs": "SKIPPED: no error inputs",
    }
    wrong = OpSpec("sigmoid", ConstantFactor.apply, sample_inputs=samples, twin=torch.sigmoid)
    with pytest.raises(AssertionError, match=r"gradcheck: sigmoid: the gradient of input 0 \(x\) is wrong"):
        check_spec(wrong, checks=["gradcheck"])


def test_outputs_marked_non_differentiable_are_left_out_of_the_gradients():
    """LayerNormFunction returns (y, mean, rstd), the statistics marked non-differentiable."""
    x, w = _x(3, 5), _x(5, seed=1)
    results = check_function(customops.LayerNormFunction.apply, (x, w, None, 1e-5), checks=["torch_func", "export"])
    assert results == {"torch_func": "SUCCESS", "export": "SUCCESS"}
