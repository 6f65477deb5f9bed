"""tasks.image_captioning: the captioning program on tiny COCO-format sets written here: the overfit check,
the full run (every decoding on dev, the chosen one on test, BLEU, figures, report) for the RNN and the
attention captioner, the options checked up front, and DDP against one process."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_modules.captioning import CaptioningModule, TransformerCaptioner
from lightning_modules.tasks import image_captioning as TASK
from tests.helpers import assert_same_parameters, assert_written_once

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_overfit_path_reaches_low_loss(tmp_path, cell, make_coco):
    root = make_coco(tmp_path / "coco", counts=(10, 2, 2), captions_per_image=1)
    result = TASK.main(
        [
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
            "--out",
            str(tmp_path / "out"),
            "--overfit",
            "--overfit-captions",
            "10",
            "--hidden-dim",
            "64",
            "--wordvec-dim",
            "16",
            "--min-count",
            "1",
            "--cell",
            cell,
            "--lr",
            "2e-2",
            "--no-progress",
        ]
    )
    assert result["reached_target"] and result["final_loss"] < 0.1
    assert result["exact_reproductions"] >= 9
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved[f"overfit_{cell}"]["final_loss"] == result["final_loss"]


def test_full_run_writes_report(tmp_path, make_coco):
    root = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    TASK.main(
        [
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
            "--out",
            str(out),
            "--max-epochs",
            "2",
            "--hidden-dim",
            "16",
            "--wordvec-dim",
            "8",
            "--min-count",
            "1",
            "--batch-size",
            "4",
            "--samples",
            "2",
            "--no-progress",
        ]
    )
    results = json.loads((out / "results.json").read_text())["rnn"]
    assert set(results["test_bleu"]) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    # Every decoding is scored on dev; test is decoded once, with the choice.
    assert list(results["dev"]) == ["greedy", "beam3", "beam5", "beam5-lp1"]
    assert list(results["test"]) == [results["decoding_chosen_on_dev"]]
    assert results["decoding_chosen_on_dev"] == max(results["dev"], key=lambda k: results["dev"][k]["bleu4"])
    assert len(results["curves"]["train_loss"]) == 2 and len(results["curves"]["val_loss"]) == 2
    for name in (
        "learning_curves_rnn.png",
        "samples_rnn_train.png",
        "samples_rnn_test.png",
        "samples_rnn.md",
        "vocab.json",
        "checkpoints/vocab.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (out / name).is_file(), name
    # The checkpoint holds plain hyper-parameters and loads the standard way.
    assert torch.load(out / "checkpoints/best.ckpt", weights_only=True)["hyper_parameters"]["cell"] == "rnn"
    assert CaptioningModule.load_from_checkpoint(out / "checkpoints/best.ckpt").model.config.hidden_dim == 16
    assert "generated:" in (out / "samples_rnn.md").read_text()


def test_the_script_trains_the_attention_captioner_on_grid_features(tmp_path, make_coco):
    """--cell transformer end to end on a tiny generated set: grid features, training, decodings, BLEU, report."""
    root = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    TASK.main(
        [
            "--format",
            "coco",
            "--data-root",
            str(root),
            "--weights",
            "none",
            "--image-size",
            "64",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--cell",
            "transformer",
            "--max-epochs",
            "2",
            "--model-dim",
            "16",
            "--num-heads",
            "2",
            "--num-layers",
            "1",
            "--ffn-dim",
            "32",
            "--min-count",
            "1",
            "--batch-size",
            "4",
            "--samples",
            "2",
            "--decodings",
            "greedy,beam2",
            "--no-progress",
        ]
    )
    results = json.loads((out / "results.json").read_text())["transformer"]
    assert set(results["test_bleu"]) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert any("-grid-" in f.name for f in (tmp_path / "cache" / "features").iterdir())
    assert len(results["curves"]["train_loss"]) == 2
    module = CaptioningModule.load_from_checkpoint(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert isinstance(module.model, TransformerCaptioner) and module.model.config.positions == 4  # a 2x2 grid
    assert "## attention (Transformer decoder)" in (out / "README.md").read_text()
    with pytest.raises(SystemExit):  # the sizes are checked before any data is read
        TASK.main(["--cell", "transformer", "--model-dim", "10", "--num-heads", "4"])


def test_overfit_and_quick_runs_extract_features_for_the_images_they_use_only():
    assert TASK.parse_args(["--overfit"]).images == {"train": 100}
    assert TASK.parse_args(["--quick"]).images == TASK.QUICK["images"]
    assert TASK.parse_args([]).images is None  # the full run: every image of every split


BAD_OPTIONS = [
    (["--hidden-dim", "0"], "--hidden-dim: must be a positive integer, got 0"),
    (["--hidden-dim", "-5"], "--hidden-dim: must be a positive integer, got -5"),
    (["--wordvec-dim", "0"], "--wordvec-dim: must be a positive integer, got 0"),
    (["--decodings", "greedy,beam0"], "--decodings: cannot read 'beam0'"),
    (["--decodings", "beam3-lpnan"], "--decodings: cannot read 'beam3-lpnan'"),
    (["--dropout", "2", "--overfit"], "--dropout: must be in [0, 1), got 2"),
    (["--lr", "nan"], "--lr: 'nan' is not a finite number"),
    (["--overfit", "--quick"], "--overfit and --quick"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument " in error or "error: " in error
    assert message in error, error


def test_an_explicit_option_wins_over_quick():
    args = TASK.parse_args(["--quick", "--max-epochs", "3", "--samples", "0"])
    assert (args.max_epochs, args.samples, args.decodings) == (3, 0, TASK.QUICK["decodings"])


@pytest.mark.ddp
def test_image_captioning_ddp_matches_one_process(tmp_path, make_coco, run_script):
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
