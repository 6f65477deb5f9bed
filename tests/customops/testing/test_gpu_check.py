"""customops/testing/gpu_check.py (make gpu-check): one line and status 2 without a GPU; on the CPU
a dry run of the same steps writes the summary. (On a GPU machine, `make gpu-check` itself.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from customops.testing import check, gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_cuda_it_stops_at_once_with_one_line(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert (
        out == "gpu-check: no CUDA device here (torch.cuda.is_available() is False): run it on a machine with a GPU\n"
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # the check command's CUDA path refuses the same way
        check.main(["--device", "cuda"])


def test_a_dry_run_on_the_cpu_writes_the_summary(tmp_path):
    out = tmp_path / "gpu_check"
    argv = ["--device", "cpu", "--quick", "--ops", "relu", "--bench-only", "relu", "--out", str(out)]
    cuda_test = Path(__file__).resolve().parents[1] / "test_embedding.py"  # one cuda-marked test
    assert gpu_check.main([*argv, "--tests", str(cuda_test)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["check", "cuda tests", "compiled ConvNet training step", "bench"]
    assert all(s["ok"] for s in steps.values()), steps
    assert steps["check"]["result"] == "1 passed, 0 failed"
    assert steps["cuda tests"]["result"]["skipped"] == 1  # test_embedding's cuda test, without a GPU
    assert steps["compiled ConvNet training step"]["result"]["grad_error"] < 1e-3
    assert (out / "check.json").exists() and (out / "bench.json").exists()
    assert "| compiled ConvNet training step | ok |" in (out / "summary.md").read_text()


def test_the_compiled_training_step_reports_its_errors():
    result = gpu_check.compiled_training_step(torch.device("cpu"), backend="aot_eager")
    assert result["ok"] and result["loss_eager"] == pytest.approx(result["loss_compiled"], rel=1e-5)
