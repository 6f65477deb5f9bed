"""Every task under CPU DDP (gloo, 2 processes), run as a user runs it: the script with
``--devices 2 --strategy ddp`` in a subprocess, Lightning re-launching it for rank 1.

Each run is compared with one process whose batch is twice the per-rank batch: the data
modules split every global batch between the ranks and the losses are batch means, so the
two runs take the same steps on the same samples and must end with the same parameters
(within float tolerance). Also checked: both ranks end bit-identical (the run record's
per-rank digests), the outputs are written once, by rank zero, and nothing is left beside them.
On tiny generated data, a few seconds per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_captioning import make_coco
from tests.test_mnist import idx_bytes
from tests.test_transfer import write_tiny_folder

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ddp, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def run_script(name: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """Run scripts/<name>.py on the CPU without the data mirror; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUSTOMOPS_MIRROR", "LOCAL_RANK", "RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args, "--accelerator", "cpu", "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def write_mnist_cache(cache: Path, n_train: int, n_test: int) -> Path:
    """Decompressed tiny IDX files where torchvision.datasets.MNIST reads them (no download, no md5)."""
    g = torch.Generator().manual_seed(0)
    raw = cache / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        # A bright square whose place depends on the label: something to learn.
        images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 * label : 2 * label + 8, 4:12] = 255
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return cache


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


def test_digit_classification_ddp_matches_one_process(tmp_path):
    cache = write_mnist_cache(tmp_path / "cache", n_train=300, n_test=60)
    common = [
        "--model",
        "softmax",
        "--hidden",
        "16",
        "32",
        "--sweep-epochs",
        "1",
        "--final-epochs",
        "2",
        "--max-shift",
        "0",
        "--max-rotation",
        "0",
        "--max-scale",
        "0",
        "--elastic-alpha",
        "0",  # no random draws
        "--val-size",
        "50",
        "--cache-dir",
        str(cache),
    ]
    one = run_script(
        "digit_classification", *common, "--batch-size", "16", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path
    )
    two = run_script(
        "digit_classification",
        *common,
        "--batch-size",
        "8",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(tmp_path / "two" / "out"),
        cwd=tmp_path,
    )
    r1, r2 = (json.loads((tmp_path / d / "out" / "results.json").read_text()) for d in ("one", "two"))
    assert r2["run"]["world_size"] == 2 and r2["run"]["accelerator"] == "cpu" and r2["run"]["precision"] == "32-true"
    assert r2["run"]["ranks_in_sync"] and len(r2["run"]["parameter_digest_per_rank"]) == 2
    assert r1["chosen"] == r2["chosen"]
    assert_histories_agree(r1["final"]["history"], r2["final"]["history"])
    assert r1["test_acc"] == r2["test_acc"] and r2["test_size"] == 60  # rank zero tests on all the digits
    assert_same_parameters(tmp_path / "one/out/checkpoints/last.ckpt", tmp_path / "two/out/checkpoints/last.ckpt")
    assert_written_once(two, "[done]", tmp_path / "two" / "out")
    assert_written_once(one, "[done]", tmp_path / "one" / "out")


def test_transfer_learning_ddp_matches_one_process(tmp_path):
    data = write_tiny_folder(tmp_path / "hymenoptera_data")
    common = [
        "--backbone",
        "small_cnn",
        "--weights",
        "none",
        "--no-augment",
        "--data-root",
        str(data),
        "--max-epochs",
        "2",
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--head-lr",
        "0.05",
        "--lr",
        "0.05",
    ]
    run_script("transfer_learning", *common, "--batch-size", "4", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path)
    two = run_script(
        "transfer_learning",
        *common,
        "--batch-size",
        "2",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(tmp_path / "two" / "out"),
        cwd=tmp_path,
    )
    r1, r2 = (json.loads((tmp_path / d / "out" / "results.json").read_text()) for d in ("one", "two"))
    assert r2["run"]["world_size"] == 2
    for mode in ("finetune", "freeze"):
        assert len(set(r2["scenarios"][mode]["parameter_digest_per_rank"])) == 1
        assert_histories_agree(r1["scenarios"][mode]["history"], r2["scenarios"][mode]["history"])
        assert_same_parameters(
            tmp_path / f"one/out/{mode}/checkpoints/last.ckpt", tmp_path / f"two/out/{mode}/checkpoints/last.ckpt"
        )
    assert_written_once(two, "[freeze]", tmp_path / "two" / "out")


def test_image_captioning_ddp_matches_one_process(tmp_path):
    root = make_coco(tmp_path / "coco", counts=(16, 4, 4), captions_per_image=2)  # 32 training pairs
    common = [
        "--format",
        "coco",
        "--data-root",
        str(root),
        "--weights",
        "none",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--max-epochs",
        "2",
        "--hidden-dim",
        "16",
        "--wordvec-dim",
        "8",
        "--min-count",
        "1",
        "--dropout",
        "0",
        "--samples",
        "2",
        "--lr",
        "1e-2",
    ]
    run_script("image_captioning", *common, "--batch-size", "8", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path)
    two = run_script(
        "image_captioning",
        *common,
        "--batch-size",
        "4",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(tmp_path / "two" / "out"),
        cwd=tmp_path,
    )
    r1, r2 = (json.loads((tmp_path / d / "out" / "results.json").read_text())["rnn"] for d in ("one", "two"))
    assert r2["run"]["world_size"] == 2 and r2["run"]["ranks_in_sync"]
    for key in ("train_loss", "val_loss"):
        assert r1["curves"][key] == pytest.approx(r2["curves"][key], rel=1e-5)
    assert_same_parameters(tmp_path / "one/out/checkpoints/last.ckpt", tmp_path / "two/out/checkpoints/last.ckpt")
    assert_written_once(two, "{'test_bleu'", tmp_path / "two" / "out")
