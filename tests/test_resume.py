"""Resume: a training killed with SIGKILL in the middle of an epoch, continued with --resume,
ends with the same metrics and weights as an uninterrupted run with the same seed.

The MNIST script on tiny generated digits, with random shifts on (so the restored random
state matters): the uninterrupted run, then a run killed as soon as its first mid-epoch
checkpoint exists, then ``--resume`` in the same output folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.test_distributed import ROOT, run_script, state, write_mnist_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
STEPS_PER_EPOCH = 119  # 950 training digits in batches of 8


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    cache = write_mnist_cache(tmp_path / "cache", n_train=1000, n_test=100)
    args = [
        "--model",
        "softmax",
        "--hidden",
        "16",
        "--sweep-epochs",
        "1",
        "--final-epochs",
        "3",
        "--max-shift",
        "1",
        "--val-size",
        "50",
        "--batch-size",
        "8",
        "--ckpt-every-n-steps",
        "20",
        "--cache-dir",
        str(cache),
    ]
    run_script("digit_classification", *args, "--out", str(tmp_path / "whole"), cwd=tmp_path)

    out = tmp_path / "killed"
    last = tmp_path / ".killed.partial" / "checkpoints" / "last.ckpt"  # the final training's, not the sweep's
    env = {k: v for k, v in os.environ.items() if k != "CUSTOMOPS_MIRROR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "digit_classification.py"),
            *args,
            "--out",
            str(out),
            "--accelerator",
            "cpu",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not last.is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not publish anything"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"the checkpoint at step {step} is not mid-epoch"
    print(f"killed; resuming from the checkpoint of step {step} (epoch {step // STEPS_PER_EPOCH + 1})")

    run_script("digit_classification", *args, "--out", str(out), "--resume", cwd=tmp_path)
    whole, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "killed"))
    assert [r["epoch"] for r in resumed["final"]["history"]] == [1, 2, 3]
    assert resumed["final"]["history"] == whole["final"]["history"]
    assert resumed["test_acc"] == whole["test_acc"]
    for key, value in state(tmp_path / "whole" / "checkpoints" / "last.ckpt").items():
        assert torch.equal(value, state(out / "checkpoints" / "last.ckpt")[key]), key
    assert not (tmp_path / ".killed.partial").exists()
