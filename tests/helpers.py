"""Assertions the tests of several modules share (plain functions; the data builders are fixtures in
conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last line a program wrote to stderr (its one-line error)."""
    return proc.stderr.strip().splitlines()[-1]


def state(path: Path) -> dict[str, torch.Tensor]:
    """The network's tensors (metric states are per rank until synced, so they are left out)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in sd.items() if not k.startswith("metrics.")}


def assert_same_parameters(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        if sa[key].is_floating_point():
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs")


def assert_written_once(stdout: str, line_start: str, out: Path) -> None:
    assert sum(line.startswith(line_start) for line in stdout.splitlines()) == 1, stdout
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")], "a partial or old folder is left"


def assert_histories_agree(a: list[dict], b: list[dict]) -> None:
    assert [row["epoch"] for row in a] == [row["epoch"] for row in b]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (key, ra, rb)


class Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted(path: Path, marker: Path, **plain) -> Path:
    """A torch file shaped like a checkpoint (or a state_dict) with the payload inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**plain, "payload": Payload(marker)}, path)
    return path
