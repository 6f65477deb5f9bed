"""tasks.transfer_learning: both scenarios end to end on a tiny ImageFolder (freeze first, fine-tuning from
its best head), the report and figures, the options checked up front, and DDP against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_modules.classifier import ClassifierModule
from lightning_modules.tasks import transfer_learning as TASK
from lightning_modules.tasks import transfer_learning as tl
from tests.helpers import assert_histories_agree, assert_same_parameters, assert_written_once

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_script_runs_both_scenarios_and_writes_report(tiny_folder, tmp_path):
    out = tmp_path / "out"
    summary = tl.main(
        [
            "--weights",
            "none",
            "--data-root",
            str(tiny_folder),
            "--max-epochs",
            "1",
            "--no-progress",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--image-size",
            "32",
            "--out",
            str(out),
        ]
    )
    tmp_path = out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    for mode in ("finetune", "freeze"):
        result = saved["scenarios"][mode]
        assert 0.0 <= result["best_val_acc"] <= 1.0 and result["best_epoch"] == 1
        assert result["wall_time_s"] > 0 and len(result["history"]) == 1
        assert (tmp_path / f"visualize_{mode}.png").stat().st_size > 0
    # The freeze head alone: 1280 * 2 weights + 2 biases.
    assert saved["scenarios"]["freeze"]["trainable_parameters"] == 1280 * 2 + 2
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| freeze |" in (tmp_path / "results.md").read_text()


def test_visualize_model_writes_png(tiny_folder, tmp_path):
    dm = tl.HymenopteraDataModule(tiny_folder, batch_size=4, num_workers=0, image_size=32)
    dm.setup("fit")
    model = ClassifierModule(
        {"name": "transfer_mobilenet_v2", "weights": "none", "num_classes": 2, "mode": "freeze"},
        lr=0.05,
        optimizer="sgd",
        nesterov=False,
        scheduler="step",
    )
    path = tl.visualize_model(model, dm, tmp_path / "grid.png", num_images=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


def test_finetune_starts_from_the_freeze_scenarios_best_head(tmp_path, monkeypatch, hymenoptera):
    root = hymenoptera(tmp_path / "hymenoptera_data")
    seen = {}
    real = tl.train_model

    def spy(model, datamodule, args, folder, **kw):
        seen[Path(folder).name] = {k: v.clone() for k, v in model.net.head.state_dict().items()}
        trained, history, info = real(model, datamodule, args, folder, **kw)
        seen[Path(folder).name + "_best"] = {k: v.clone() for k, v in trained.net.head.state_dict().items()}
        return trained, history, info

    monkeypatch.setattr(tl, "train_model", spy)
    summary = tl.main(
        [
            "--backbone",
            "small_cnn",
            "--weights",
            "none",
            "--data-root",
            str(root),
            "--max-epochs",
            "1",
            "--no-progress",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--image-size",
            "32",
            "--scenarios",
            "finetune",
            "freeze",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert list(summary["scenarios"]) == ["freeze", "finetune"]  # freeze runs first
    for k, v in seen["freeze_best"].items():
        assert torch.equal(seen["finetune"][k], v)
    assert summary["scenarios"]["finetune"]["head_init"] == "freeze scenario's best"
    with pytest.raises(SystemExit):
        tl.parse_args(["--scenarios", "finetune"])  # nothing to start from
    assert tl.parse_args(["--scenarios", "finetune", "--finetune-init", "pretrained"]).scenarios == ["finetune"]


BAD_OPTIONS = [
    (["--momentum", "1.5"], "--momentum: must be in [0, 1), got 1.5"),
    (["--head-lr", "inf"], "--head-lr: 'inf' is not a finite number"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument " in error or "error: " in error
    assert message in error, error


@pytest.mark.ddp
def test_transfer_learning_ddp_matches_one_process(tmp_path, hymenoptera, run_script):
    data = hymenoptera(tmp_path / "hymenoptera_data")
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
