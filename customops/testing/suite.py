"""pytest integration: the specs of your ops as parametrized tests of your own suite.

    # tests/test_my_ops.py
    from customops.testing import parametrize
    from mypkg.myops import SPECS

    @parametrize(SPECS)
    def test_my_ops(op_check):
        op_check()

One test item per (spec, check), with ids such as `my_gelu-gradcheck`; each runs that check of that
op and passes, is skipped with the check's reason (`pytest.skip`), or fails with its message.
`checks=["gradcheck", "parity"]` picks some (CHECKS and "error_inputs"; "parity" for every parity
check); `device="cuda"` runs them there, the items then marked `cuda` and skipped without a CUDA
device. `pytest -k gradcheck` or `-k my_gelu` selects among them as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .checks import SPEC_CHECKS, run_checks, select_checks, spec_target
from .registry import OpSpec


@dataclass(frozen=True)
class OpCheck:
    """One check of one spec's op, run by calling it inside a test."""

    spec: OpSpec
    check: str
    device: str = "cpu"

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.check}"

    def __call__(self) -> None:
        import pytest

        result = run_checks(spec_target(self.spec, self.device), [self.check], SPEC_CHECKS)[self.check]
        if result.status == "SKIPPED":
            pytest.skip(f"{self.id}: {result.message}")
        if result.failed:
            pytest.fail(result.message, pytrace=False)


def parametrize(
    specs: Iterable[OpSpec], checks: Iterable[str] | None = None, *, device: str = "cpu", argname: str = "op_check"
):
    """A pytest.mark.parametrize over every (spec, check): the test receives an OpCheck to call."""
    import pytest

    names = select_checks(checks, SPEC_CHECKS)
    marks = []
    if torch.device(device).type == "cuda":
        marks = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
    params = [
        pytest.param(check, id=check.id, marks=marks)
        for spec in specs
        for check in (OpCheck(spec, name, device) for name in names)
    ]
    return pytest.mark.parametrize(argname, params)
