"""customops/testing/check.py, the `python -m customops.check` command: the table, --module, --checks."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F

from customops.testing import check
from customops.testing.registry import OpSpec, SampleInput
from customops.testing.specs import SPECS

COLUMNS = ("gradcheck", "gradgrad", "batched", "err f64", "err f32", "err f16/bf16", "func", "autocast", "compile")


def test_check_command_prints_a_row_per_op_and_passes(capsys, tmp_path):
    # Two ops keep this quick; every op's checks run in test_specs.py.
    assert check.main(["--ops", "relu", "softmax_loss", "--json", str(tmp_path / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "softmax_loss" in out and "affine" not in out
    assert "2 passed, 0 failed" in out
    for column in COLUMNS:
        assert column in out
    record = json.loads((tmp_path / "check.json").read_text())
    rows = {row["op"]: row for row in record["rows"]}
    # the keys the published table is written from, and the new low-precision errors
    for key in (
        "gradcheck",
        "gradgrad",
        "batched",
        "err64",
        "err32",
        "err16",
        "errbf16",
        "func",
        "autocast",
        "compile",
    ):
        assert key in rows["relu"], key
    assert rows["softmax_loss"]["verdict"] == "PASS" and 0 < rows["softmax_loss"]["err16"] < 1e-2
    assert set(rows["relu"]["checks"]) >= {"export", "no_input_mutation", "saved_tensors", "determinism"}


def test_check_command_rejects_an_unknown_op_or_check():
    with pytest.raises(SystemExit):
        check.main(["--ops", "nope"])
    with pytest.raises(SystemExit):
        check.main(["--ops", "relu", "--checks", "nope"])


def test_checker_catches_a_wrong_backward():
    class Doubled(torch.autograd.Function):  # forward is relu, backward is off by a factor 2
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp_min(0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * g * (x > 0)

    relu = SPECS[1]
    bad = OpSpec("bad_relu", Doubled.apply, sample_inputs=relu.sample_inputs, twin=F.relu)
    row = check.check_op(bad, torch.device("cpu"), checks=["gradcheck", "parity_float64"])
    assert row["verdict"] == "FAIL" and row["gradcheck"] == "FAIL"
    assert any("parity" in p for p in row["problems"])


def test_checker_fails_an_op_that_breaks_under_vmap():
    """The func column can fail: an old-style Function (no setup_context) is refused by torch.func."""

    class OldStyle(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    def samples(device, dtype, requires_grad):
        yield SampleInput((torch.randn(3, dtype=dtype, device=device).requires_grad_(requires_grad),))

    spec = OpSpec("old_style", OldStyle.apply, sample_inputs=samples, twin=lambda x: 2 * x)
    row = check.check_op(spec, torch.device("cpu"), checks=["torch_func"])
    assert row["func"] == "FAIL" and row["verdict"] == "FAIL", row


MODULE = """
import torch
import customops.testing as ct


def sample_double(device, dtype, requires_grad):
    yield ct.SampleInput((ct.tensor_maker(device, dtype, requires_grad)(3, 4, noncontiguous=True),))


class Double(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * {factor}


@ct.register(sample_inputs=sample_double, twin=lambda x: x * 2)
def double(x):
    return Double.apply(x)
"""


@pytest.mark.parametrize("factor,status", [(2, 0), (3, 1)], ids=["correct", "wrong-gradient"])
def test_check_command_checks_a_module_of_registered_specs(tmp_path, monkeypatch, capsys, factor, status):
    name = f"my_double_ops_{factor}"  # one module per case (imports are cached)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE).format(factor=factor))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check.main(["--module", name, "--checks", "gradcheck", "parity", "torch_func"]) == status
    out = capsys.readouterr().out
    assert "double" in out and "relu" not in out
    if status:
        assert "1.5 times the numerical gradient" in out  # 3 / 2


def test_check_command_reads_a_modules_specs_list(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_listed_ops.py").write_text(
        "from customops.testing.specs import SPECS as CORE\nSPECS = [s for s in CORE if s.name == 'relu']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check.main(["--module", "my_listed_ops", "--checks", "gradcheck"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_check_command_refuses_a_module_without_specs(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_empty_ops.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit):
        check.main(["--module", "my_empty_ops"])
    assert "no SPECS list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check.main(["--module", "no_such_module_here"])
    assert "cannot import it" in capsys.readouterr().err
