"""tasks.transfer_learning: both scenarios end to end on a tiny ImageFolder (freeze first, fine-tuning from
its best head), the report and figures, the trunk option, the options checked up front, and DDP against
one process."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
import pytorch_lightning as pl
import torch

import customops as co
from lightning_modules.classifier import ClassifierModule
from lightning_modules.tasks import transfer_learning as TASK
from lightning_modules.tasks import transfer_learning as tl
from tests.helpers import assert_histories_agree, assert_same_parameters, assert_written_once

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_script_runs_both_scenarios_and_writes_report(tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    summary = tl.main(
        [
            "fit",
            "--weights",
            "none",
            "--data.root",
            str(tiny_folder),
            "--max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--data.batch_size",
            "4",
            "--data.num_workers",
            "0",
            "--data.image_size",
            "32",
            "--out",
            str(out),
        ]
    )
    tmp_path = out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["trunk"] == "customops"
    for mode in ("finetune", "freeze"):
        result = saved["scenarios"][mode]
        assert 0.0 <= result["best_val_acc"] <= 1.0 and result["best_epoch"] == 1
        assert result["wall_time_s"] > 0 and len(result["history"]) == 1
        assert (tmp_path / f"visualize_{mode}.png").stat().st_size > 0
    # The freeze head alone: 1280 * 2 weights + 2 biases.
    assert saved["scenarios"]["freeze"]["trainable_parameters"] == 1280 * 2 + 2
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| freeze |" in (tmp_path / "results.md").read_text()
    assert "Backbone `mobilenet_v2` (none weights, on customops layers)" in (tmp_path / "results.md").read_text()

    # predict: one line per photo, any size; the checkpoint alone says how to prepare it.
    photos = [tiny_folder / "val" / "ants" / "ants_0.png", tiny_folder / "val" / "bees" / "bees_1.png"]
    PIL.Image.open(photos[1]).resize((70, 45)).save(out / "wide.png")
    records = TASK.main(
        ["predict", "--ckpt", str(out / "finetune/checkpoints/best.ckpt"), *map(str, photos), str(out / "wide.png")]
    )
    assert [r["label"] in ("ants", "bees") for r in records] == [True, True, True]
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert lines[2].startswith(f"{out / 'wide.png'}: ") and lines[2].endswith("%)")


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
            "fit",
            "--backbone",
            "small_cnn",
            "--weights",
            "none",
            "--data.root",
            str(root),
            "--max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--data.batch_size",
            "4",
            "--data.num_workers",
            "0",
            "--data.image_size",
            "32",
            "--scenarios",
            "[finetune,freeze]",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert list(summary["scenarios"]) == ["freeze", "finetune"]  # freeze runs first
    for k, v in seen["freeze_best"].items():
        assert torch.equal(seen["finetune"][k], v)
    assert summary["scenarios"]["finetune"]["head_init"] == "freeze scenario's best"
    with pytest.raises(SystemExit):
        tl.PROGRAM.parse(["fit", "--scenarios", "[finetune]"])  # nothing to start from
    _, recipe = tl.PROGRAM.parse(["fit", "--scenarios", "[finetune]", "--finetune_init", "pretrained"])
    assert recipe.scenarios == ["finetune"]


BAD_OPTIONS = [
    (["--momentum", "1.5"], '"momentum"', "must be in [0, 1), got 1.5"),
    (["--head_lr", "inf"], '"head_lr"', "'inf' is not a finite number"),
    (["--scenarios", "[freeze,freeze]"], "scenarios", "each scenario once"),
    (["--trunk", "torch"], '"trunk"', "Expected a typing.Literal['customops', 'native']. Got value: torch"),
    (["--backbone", "small_cnn"], "--backbone small_cnn", "has no pretrained weights: pass --weights none"),
]


@pytest.mark.parametrize("trunk", ["customops", "native"])
def test_the_trunk_option_builds_that_kind_of_trunk(tiny_folder, trunk):
    argv = ["fit", "--data.root", str(tiny_folder), "--data.num_workers", "0", "--data.image_size", "32"]
    _, recipe = TASK.PROGRAM.parse([*argv, *(["--trunk", trunk] if trunk == "native" else [])])
    assert recipe.trunk == trunk  # customops by default
    for mode in ("freeze", "finetune"):
        module = tl.scenario_module(mode, recipe, tl.make_datamodule(recipe))
        assert module.hparams["net"]["trunk"] == trunk  # kept in the checkpoint
        conv = co.Conv2d if trunk == "customops" else torch.nn.Conv2d
        assert sum(type(m) is conv for m in module.net.trunk.modules()) == 52


@pytest.mark.parametrize("argv,key,message", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, key, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.PROGRAM.parse(["fit", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: " in error and key in error, error  # the option named
    assert message in error, error


@pytest.mark.ddp
def test_transfer_learning_ddp_matches_one_process(tmp_path, hymenoptera, run_script):
    data = hymenoptera(tmp_path / "hymenoptera_data")
    common = [
        "--backbone",
        "small_cnn",
        "--weights",
        "none",
        "--data.augment",
        "false",
        "--data.root",
        str(data),
        "--max_epochs",
        "2",
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
        "--head_lr",
        "0.05",
        "--lr",
        "0.05",
    ]
    run_script(
        "transfer_learning", *common, "--data.batch_size", "4", "--out", str(tmp_path / "one" / "out"), cwd=tmp_path
    )
    two = run_script(
        "transfer_learning",
        *common,
        "--data.batch_size",
        "2",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
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


@pytest.mark.parametrize("trunk", ["customops", "native"])
def test_a_transfer_checkpoint_loads_without_the_pretrained_weights(tmp_path, monkeypatch, trunk):
    """The checkpoint holds the whole trunk: loading it builds the trunk (of the kind it records) without
    weights, then loads them."""
    import torchvision

    features = torchvision.models.mobilenet_v2(weights=None).features
    torch.save({f"w{i}": v for i, v in enumerate(features.state_dict().values())}, tmp_path / "mobilenet.pt")
    monkeypatch.setenv("CUSTOMOPS_MOBILENET_WEIGHTS", str(tmp_path / "mobilenet.pt"))  # "pretrained" weights
    spec = {"name": "transfer_mobilenet_v2", "weights": "imagenet", "num_classes": 2, "mode": "freeze", "trunk": trunk}
    module = ClassifierModule(spec, preprocessing=tl.photo_eval_spec(64, 73), classes=["ants", "bees"])
    assert module.hparams["net"]["weights"] == "none" and module.hparams["trunk_weights"] == "imagenet"
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    checkpoint["pytorch-lightning_version"] = pl.__version__
    torch.save(checkpoint, tmp_path / "best.ckpt")
    monkeypatch.setenv("CUSTOMOPS_MOBILENET_WEIGHTS", str(tmp_path / "absent.pt"))  # no weights here now
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "best.ckpt", weights_only=True)
    for (key, a), b in zip(module.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
    assert loaded.hparams["classes"] == ["ants", "bees"] and loaded.hparams["preprocessing"]["image_size"] == 64
    assert loaded.hparams["net"]["trunk"] == trunk
    conv = co.Conv2d if trunk == "customops" else torch.nn.Conv2d
    assert sum(type(m) is conv for m in loaded.net.trunk.modules()) == 52
