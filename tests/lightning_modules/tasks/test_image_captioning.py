"""tasks.image_captioning: the captioning program on tiny COCO-format sets written here: the overfit check,
the full run (every decoding on dev, the chosen one on test, BLEU, figures, report) for the RNN and the
attention captioner, the options checked up front, and DDP against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_modules.captioning import CaptioningModule, TransformerCaptioner
from lightning_modules.runs.errors import RunError
from lightning_modules.tasks import image_captioning as TASK
from tests.helpers import assert_same_parameters, assert_written_once

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_overfit_path_reaches_low_loss(tmp_path, cell, make_coco):
    root = make_coco(tmp_path / "coco", counts=(10, 2, 2), captions_per_image=1)
    result = TASK.main(
        [
            "fit",
            "--data.format",
            "coco",
            "--data.root",
            str(root),
            "--data.weights",
            "none",
            "--data.image_size",
            "32",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--overfit",
            "--overfit_captions",
            "10",
            "--recurrent.hidden_dim",
            "64",
            "--recurrent.wordvec_dim",
            "16",
            "--data.min_count",
            "1",
            "--cell",
            cell,
            "--recurrent.lr",
            "2e-2",
            "--trainer.enable_progress_bar",
            "false",
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
            "fit",
            "--data.format",
            "coco",
            "--data.root",
            str(root),
            "--data.weights",
            "none",
            "--data.image_size",
            "32",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--max_epochs",
            "2",
            "--recurrent.hidden_dim",
            "16",
            "--recurrent.wordvec_dim",
            "8",
            "--data.min_count",
            "1",
            "--data.batch_size",
            "4",
            "--samples",
            "2",
            "--trainer.enable_progress_bar",
            "false",
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
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (out / name).is_file(), name
    # The checkpoint holds plain hyper-parameters and loads the standard way.
    saved = torch.load(out / "checkpoints/best.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["cell"] == "rnn"
    # The checkpoint carries the vocabulary (as vocab.json has it) and the image encoder.
    assert saved["hyper_parameters"]["vocabulary"] == json.loads((out / "vocab.json").read_text())["words"]
    assert saved["hyper_parameters"]["image_encoder"]["pooling"] == "mean" and saved["image_encoder_state_dict"]
    # Features and encoder on the customops trunk, and said so.
    assert saved["hyper_parameters"]["image_encoder"]["trunk"] == "customops"
    assert {split["trunk"] for split in results["feature_extraction"].values()} == {"customops"}
    assert "weights, on customops layers), global-average pooled" in (out / "README.md").read_text()
    assert CaptioningModule.load_from_checkpoint(out / "checkpoints/best.ckpt").model.config.hidden_dim == 16
    assert "generated:" in (out / "samples_rnn.md").read_text()
    # predict from the checkpoint alone (the encoder is in it); an RNN has no attention to draw.
    (record,) = TASK.main(
        ["predict", "--ckpt", str(out / "checkpoints/best.ckpt"), str(root / "test" / "test_000.jpg")]
    )
    assert isinstance(record["caption"], str) and len(record["caption"].split()) <= 20
    with pytest.raises(RunError, match="attention_map: .* is a rnn captioner"):
        TASK.main(["predict", "--ckpt", str(out / "checkpoints/best.ckpt"), "--attention_map", "a.png", "x.jpg"])


def test_select_by_dev_bleu_keeps_the_epoch_of_the_best_greedy_captions(tmp_path, make_coco, capsys):
    """--select_by val_bleu4: greedy dev BLEU-4 is logged after every epoch and the kept checkpoint is
    the epoch with the highest (the first of equals); the logged value is that checkpoint's own score."""
    import shutil

    from lightning_modules.caption_evaluation import corpus_bleu, generate

    root = make_coco(tmp_path / "coco", counts=(6, 1, 1), captions_per_image=1)
    # Dev is a copy of train, so that a few epochs learn captions that score on dev.
    shutil.rmtree(root / "val")
    shutil.copytree(root / "train", root / "val")
    shutil.copy(root / "captions_train.json", root / "captions_val.json")
    out = tmp_path / "out"
    common = ["--data.format", "coco", "--data.root", str(root), "--data.weights", "none"]
    common += ["--data.image_size", "32", "--data.cache_dir", str(tmp_path / "cache"), "--data.min_count", "1"]
    TASK.main(
        ["fit", *common, "--out", str(out), "--max_epochs", "6", "--recurrent.hidden_dim", "32"]
        + ["--recurrent.wordvec_dim", "16", "--recurrent.lr", "3e-2", "--recurrent.dropout", "0"]
        + ["--lr_gamma", "1", "--data.batch_size", "2", "--samples", "1"]
        + ["--select_by", "val_bleu4", "--decodings", "[greedy]", "--trainer.enable_progress_bar", "false"]
    )
    results = json.loads((out / "results.json").read_text())["rnn"]
    bleus = results["curves"]["val_bleu4"]
    assert results["selected_by"] == "val_bleu4" and len(bleus) == 6 and max(bleus) > 0
    assert results["best_checkpoint_epoch"] == bleus.index(max(bleus))
    assert results["best_val_bleu4"] == pytest.approx(max(bleus))
    kept = f"kept epoch {bleus.index(max(bleus)) + 1} of 6 by val_bleu4 {max(bleus):.3f} (val_loss "
    assert kept in capsys.readouterr().out  # the last line says how the epoch was chosen
    # The kept checkpoint's greedy dev captions score what was logged for its epoch.
    _, recipe = TASK.PROGRAM.parse(["fit", *common, "--out", str(tmp_path / "unused")])
    dm = TASK.make_datamodule(recipe)
    model = CaptioningModule.load_from_checkpoint(out / "checkpoints/best.ckpt").model
    hypotheses = generate(model, dm.features["dev"], dm.vocab, 20, 1, 0.0)
    assert corpus_bleu(hypotheses, dm.splits["dev"])["bleu4"] == pytest.approx(max(bleus), abs=1e-6)


def test_the_script_trains_the_attention_captioner_on_grid_features(tmp_path, make_coco, write_image, capsys):
    """--cell transformer end to end on a tiny generated set: grid features, training, decodings, BLEU, report."""
    root = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    TASK.main(
        [
            "fit",
            "--data.format",
            "coco",
            "--data.root",
            str(root),
            "--data.weights",
            "none",
            "--data.image_size",
            "64",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--cell",
            "transformer",
            "--max_epochs",
            "2",
            "--transformer.model_dim",
            "16",
            "--transformer.num_heads",
            "2",
            "--transformer.num_layers",
            "1",
            "--transformer.ffn_dim",
            "32",
            "--data.min_count",
            "1",
            "--data.batch_size",
            "4",
            "--samples",
            "2",
            "--decodings",
            "[greedy,beam2]",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    results = json.loads((out / "results.json").read_text())["transformer"]
    assert set(results["test_bleu"]) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert any("-grid-" in f.name for f in (tmp_path / "cache" / "features").iterdir())
    assert len(results["curves"]["train_loss"]) == 2
    module = CaptioningModule.load_from_checkpoint(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert isinstance(module.model, TransformerCaptioner) and module.model.config.positions == 4  # a 2x2 grid
    assert "## attention (Transformer decoder)" in (out / "README.md").read_text()

    # predict: a photo of the test split and one of another size, with the attention drawn per word.
    photos = [root / "test" / "test_000.jpg", tmp_path / "other.jpg"]
    write_image(photos[1], 5, size=48)
    records = TASK.main(
        ["predict", "--ckpt", str(out / "checkpoints/best.ckpt"), *map(str, photos), "--beam_size", "2"]
        + ["--attention_map", str(tmp_path / "attention.png"), "--json", str(tmp_path / "captions.json")]
    )
    assert [r["image"] for r in records] == [str(p) for p in photos]
    for record, photo in zip(records, photos):
        assert isinstance(record["caption"], str) and record["attention_map"].endswith(f"attention_{photo.stem}.png")
        assert Path(record["attention_map"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "captions.json").read_text()) == records
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert lines == [f"{p}: {r['caption']}" for p, r in zip(photos, records)]
    with pytest.raises(SystemExit):  # the sizes are checked before any data is read
        TASK.main(["fit", "--cell", "transformer", "--transformer.model_dim", "10", "--transformer.num_heads", "4"])


def test_max_minutes_is_a_guard_that_publishes_nothing_and_keeps_the_checkpoint(tmp_path, make_coco):
    """A run that reaches --max_minutes ends in one line (status 1) instead of publishing a shorter
    recipe's result: the previous run's folder stays as it was, and the checkpoint written at the
    stopping step lets --resume finish the recipe."""
    from lightning_modules.runs import cli as command_line

    root = make_coco(tmp_path / "coco", counts=(8, 2, 2), captions_per_image=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"previous": "run"}')
    argv = ["fit", "--data.format", "coco", "--data.root", str(root), "--data.weights", "none"]
    argv += ["--data.image_size", "32", "--data.cache_dir", str(tmp_path / "cache"), "--data.min_count", "1"]
    argv += ["--out", str(out), "--max_epochs", "2", "--recurrent.hidden_dim", "16", "--recurrent.wordvec_dim", "8"]
    argv += ["--data.batch_size", "4", "--samples", "1", "--decodings", "[greedy]"]
    argv += ["--trainer.enable_progress_bar", "false"]
    with pytest.raises(SystemExit) as exit_info:  # a one-minute-in-a-million limit: reached at the first step
        command_line.main(lambda: TASK.main([*argv, "--max_minutes", "1e-6"]), "image_captioning")
    message = str(exit_info.value.code)  # sys.exit(str): printed on stderr, exit status 1
    assert message.startswith(
        "image_captioning: error: stopped by --max_minutes after 0 of 2 epochs; nothing published"
    ), message
    assert "\n" not in message and "--resume" in message
    assert json.loads((out / "results.json").read_text()) == {"previous": "run"}  # untouched
    last = tmp_path / ".out.partial" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 1  # written at the stopping step

    TASK.main([*argv, "--resume", "--max_minutes", "null"])
    results = json.loads((out / "results.json").read_text())["rnn"]
    assert results["epochs_run"] == 2 and len(results["curves"]["train_loss"]) == 2
    assert not (tmp_path / ".out.partial").exists()


def test_no_recipe_sets_a_time_limit():
    """Recipes are fixed in epochs: the time limit is off unless asked for, and no published run asks."""
    from scripts import report

    assert TASK.PROGRAM.parse(["fit"])[1].max_minutes is None
    assert TASK.PROGRAM.parse(["fit", "--max_minutes", "30"])[1].max_minutes == 30.0
    assert not [name for name, command in report.STEPS if any("max_minutes" in part for part in command)]


def test_overfit_and_quick_runs_extract_features_for_the_images_they_use_only():
    assert TASK.PROGRAM.parse(["fit", "--overfit"])[1].images == {"train": 100}
    assert TASK.PROGRAM.parse(["fit", "--quick"])[1].images == TASK.PRESETS["quick"]["data"]["images"]
    assert TASK.PROGRAM.parse(["fit"])[1].images is None  # the full run: every image of every split


BAD_OPTIONS = [
    (["--recurrent.hidden_dim", "0"], '"recurrent.hidden_dim"', "must be a positive integer, got 0"),
    (["--recurrent.hidden_dim", "-5"], '"recurrent.hidden_dim"', "must be a positive integer, got -5"),
    (["--recurrent.wordvec_dim", "0"], '"recurrent.wordvec_dim"', "must be a positive integer, got 0"),
    (["--decodings", "[greedy,beam0]"], "--decodings", "cannot read 'beam0'"),
    (["--decodings", "[beam3-lpnan]"], "--decodings", "cannot read 'beam3-lpnan'"),
    (["--recurrent.dropout", "2", "--overfit"], '"recurrent.dropout"', "must be in [0, 1), got 2"),
    (["--recurrent.lr", "nan"], '"recurrent.lr"', "'nan' is not a finite number"),
    (["--overfit", "--quick"], "--overfit", "--overfit and --quick are two different runs"),
    (["--cell", "transformer", "--transformer.model_dim", "10"], "--transformer.model_dim", "must be divisible"),
]


@pytest.mark.parametrize("argv,key,message", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, key, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.PROGRAM.parse(["fit", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: " in error and key in error, error  # the option named
    assert message in error, error


def test_an_explicit_option_wins_over_quick():
    _, args = TASK.PROGRAM.parse(["fit", "--quick", "--max_epochs", "3", "--samples", "0"])
    assert (args.max_epochs, args.samples, args.decodings) == (3, 0, TASK.PRESETS["quick"]["decodings"])
    _, args = TASK.PROGRAM.parse(["fit", "--overfit", "--cell", "transformer"])
    assert (args.max_epochs, args.net.lr, args.net.dropout) == (2000, 1e-3, 0.0)  # the overfit recipe


@pytest.mark.ddp
def test_image_captioning_ddp_matches_one_process(tmp_path, make_coco, run_script):
    root = make_coco(tmp_path / "coco", counts=(16, 4, 4), captions_per_image=2)  # 32 training pairs
    common = [
        "--data.format",
        "coco",
        "--data.root",
        str(root),
        "--data.weights",
        "none",
        "--data.image_size",
        "32",
        "--data.cache_dir",
        str(tmp_path / "cache"),
        "--max_epochs",
        "2",
        "--recurrent.hidden_dim",
        "16",
        "--recurrent.wordvec_dim",
        "8",
        "--data.min_count",
        "1",
        "--recurrent.dropout",
        "0",
        "--samples",
        "2",
        "--recurrent.lr",
        "1e-2",
    ]
    run_script(
        "image_captioning", *common, "--data.batch_size", "8", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path
    )
    two = run_script(
        "image_captioning",
        *common,
        "--data.batch_size",
        "4",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
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
    assert_written_once(two, "[test] rnn", tmp_path / "two" / "out")
