"""The pieces behind the published results: batched digit distortions, the successive-halving
sweep, fine-tuning from the linear probe, one feature pass for both poolings, and the report
driver (steps, timings, seed study, the README's generated results)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lightning_modules.data.mnist import MNISTDataModule, distort_batch
from lightning_modules.tasks import report

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- distortions


def test_distort_batch_without_distortion_is_the_identity_and_keeps_the_background():
    x = torch.randn(4, 1, 12, 12)
    assert distort_batch(x, -0.4) is x  # nothing asked: the same tensor
    torch.manual_seed(0)
    blank = torch.full((8, 1, 12, 12), -0.4)
    out = distort_batch(blank, -0.4, max_shift=2, max_rotation=10, max_scale=0.1, elastic_alpha=30, elastic_sigma=4)
    torch.testing.assert_close(out, blank)  # pixels from outside take the fill value


def test_distort_batch_moves_each_image_its_own_way_and_keeps_the_ink():
    torch.manual_seed(0)
    x = torch.full((32, 1, 28, 28), 0.0)
    x[:, 0, 10:18, 12:16] = 1.0  # a bar in the middle, well inside the frame
    out = distort_batch(x, 0.0, max_shift=2, max_rotation=10, max_scale=0.1, elastic_alpha=20, elastic_sigma=5)
    assert out.shape == x.shape and torch.isfinite(out).all()
    ink = out.sum((1, 2, 3))
    # Bilinear resampling of a bar scaled by at most 10%: its ink is kept within the area change.
    assert ((ink / x[0].sum() - 1).abs() < 0.3).all()
    flat = out.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(32) * 1e3).min() > 0.1  # no two images moved alike
    # Rotation alone keeps the bar's centre of mass where it was (the image centre's neighbourhood).
    rot = distort_batch(x, 0.0, max_rotation=10)
    ys = torch.arange(28.0).view(1, 28, 1)
    centre = (rot[:, 0] * ys).sum((1, 2)) / rot[:, 0].sum((1, 2))
    assert (centre - 13.5).abs().max() < 1.0


@pytest.mark.parametrize(
    "bad", [{"max_rotation": -1.0}, {"max_scale": 1.0}, {"elastic_alpha": math.nan}, {"elastic_sigma": 0.0}]
)
def test_datamodule_rejects_bad_distortions(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"MNISTDataModule: {name}"):
        MNISTDataModule(**bad)


# ---------------------------------------------------------------- successive halving


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digits(tmp_path, monkeypatch, n_train: int, n_test: int, *options: str) -> tuple[dict, Path]:
    """digit_classification.main on a tiny mirror written here; its results and --out folder."""
    from tests.test_mnist import write_mirror

    md5s = write_mirror(tmp_path / "mirror", n_train=n_train, n_test=n_test)
    monkeypatch.setattr("lightning_modules.data.mnist.MNIST_MD5", md5s)
    out = tmp_path / "out"
    results = _script("digit_classification").main(
        [
            "--model",
            "softmax",
            "--data-root",
            str(tmp_path / "mirror"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--val-size",
            str(n_test),
            "--no-progress",
            *options,
        ]
    )
    return results, out


def test_sweep_halves_the_candidates_and_chooses_from_the_last_rung(tmp_path, monkeypatch):
    results, out = _digits(
        tmp_path,
        monkeypatch,
        200,
        40,
        "--hidden",
        "8",
        "16",
        "32",
        "64",
        "--sweep-epochs",
        "1",
        "--halving",
        "2",
        "--final-epochs",
        "1",
    )
    rows = results["candidates"]
    # 4 candidates, 1 epoch each; the best 2 (a third, rounded up) again, from scratch, for 2 epochs;
    # a third of 2 is 1: the choice is the better of those two.
    assert sorted(r["rung"] for r in rows) == [0, 0, 1, 1]
    assert all(r["epochs"] == 2 ** r["rung"] for r in rows)
    assert all([h["epoch"] for h in r["history"]] == list(range(1, r["epochs"] + 1)) for r in rows)
    best = max((r for r in rows if r["rung"] == 1), key=lambda r: r["val_acc"])
    assert results["chosen"]["spec"] == best["spec"]
    dropped = [r for r in rows if r["rung"] == 0]
    assert max(r["val_acc"] for r in dropped) <= min(r["val_by_rung"][0] for r in rows if r["rung"] == 1)
    assert "rung" in (out / "sweep.md").read_text()


def test_one_candidate_skips_the_sweep(tmp_path, monkeypatch):
    results, out = _digits(tmp_path, monkeypatch, 100, 20, "--hidden", "16", "--final-epochs", "1", "--seed", "3")
    assert results["candidates"] == [] and results["chosen"]["sweep_val_acc"] is None
    assert results["final"]["epochs"] == 1 and not (out / "sweep").exists() and results["config"]["seed"] == 3


# ---------------------------------------------------------------- linear probe, then fine-tune


def test_finetune_starts_from_the_freeze_scenarios_best_head(tmp_path, monkeypatch):
    from lightning_modules.tasks import transfer_learning as tl
    from tests.test_transfer import write_tiny_folder

    root = write_tiny_folder(tmp_path / "hymenoptera_data")
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


# ---------------------------------------------------------------- one feature pass


def test_one_feature_pass_caches_both_poolings(tmp_path, monkeypatch):
    from lightning_modules.data import flickr8k
    from tests.test_captioning import _write_image

    paths = [tmp_path / f"img{i}.jpg" for i in range(5)]
    for i, p in enumerate(paths):
        _write_image(p, i)
    cache = tmp_path / "cache"
    pooled, meta = flickr8k.extract_features(
        paths, weights=None, cache_dir=cache, image_size=64, progress=False, batch_size=2
    )
    assert not meta["cached"] and meta["images_per_s"] > 0 and pooled.shape == (5, 1280)
    monkeypatch.setattr(flickr8k, "make_backbone", lambda *a, **k: pytest.fail("the grid should come from the cache"))
    grid, meta = flickr8k.extract_features(
        paths, weights=None, cache_dir=cache, image_size=64, progress=False, pooling="grid"
    )
    assert meta["cached"] and grid.dtype == torch.float16 and grid.shape == (5, 4, 1280)  # 2x2 positions
    torch.testing.assert_close(grid.float().mean(1), pooled, atol=2e-3, rtol=2e-3)  # the same pass


# ---------------------------------------------------------------- the report driver


def test_report_lists_every_step_and_each_writes_into_reports():
    names = [n for n, _ in report.STEPS]
    assert len(names) == len(set(names))
    for name, command in report.STEPS:
        out = command[command.index("--out") + 1] if "--out" in command else command[command.index("--json") + 1]
        assert out.startswith("reports/"), name
        target = command[0] if command[0] != "-m" else command[1]
        assert (ROOT / target).is_file() or target.startswith("customops."), name
    # The Makefile's report target is this driver, and seeds its --seeds.
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/report.py\n" in makefile and "scripts/report.py --seeds" in makefile


def test_report_times_each_step_and_stops_at_the_first_failure(tmp_path, capsys):
    timings = tmp_path / "timings.json"
    steps = [("fine", ["-c", "pass"]), ("broken", ["-c", "raise SystemExit(3)"]), ("never", ["-c", "pass"])]
    assert report.run_steps(steps, timings, "test", merge=False) == 3
    saved = json.loads(timings.read_text())
    assert [s["name"] for s in saved["steps"]] == ["fine", "broken"]
    assert saved["steps"][0]["status"] == "ok" and saved["steps"][1]["status"] == "failed (3)"
    assert all(s["seconds"] >= 0 for s in saved["steps"])
    out = capsys.readouterr().out
    assert (
        "[report] 1/3 fine:" in out
        and "FAILED (exit status 3)" in out
        and "never" not in out.split("stopped")[0][-200:]
    )


def _fake_reports(root: Path) -> None:
    def put(rel: str, obj) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))

    cfg = {
        "final_epochs": 30,
        "lr": 0.002,
        "weight_decay": 0.05,
        "optimizer": "adamw",
        "scheduler": "onecycle",
        "max_shift": 2,
        "max_rotation": 10.0,
        "max_scale": 0.1,
        "elastic_alpha": 34.0,
        "elastic_sigma": 6.0,
        "batch_size": 128,
        "val_size": 5000,
        "impl": "custom",
        "seed": 0,
    }
    for model, spec, acc in (
        ("softmax", {"kind": "softmax", "impl": "custom", "hidden": 2048}, 0.992),
        ("cnn", {"kind": "cnn", "impl": "custom", "filters": 32, "kernel_size": 7, "hidden": 512}, 0.995),
    ):
        put(
            f"reports/digit_classification/{model}/results.json",
            {"config": cfg, "chosen": {"spec": spec}, "final": {"spec": spec, "epochs": 30}, "test_acc": acc},
        )
        for seed, delta in ((1, 0.001), (2, -0.001)):
            put(
                f"reports/seed_study/{model}/seed{seed}/results.json",
                {
                    "config": {**cfg, "seed": seed},
                    "chosen": {"spec": spec},
                    "final": {"spec": spec},
                    "test_acc": acc + delta,
                },
            )

    def scen(a, b):
        return {
            "finetune": {"best_val_acc": a, "best_val_correct": "", "best_epoch": 1},
            "freeze": {"best_val_acc": b, "best_val_correct": "", "best_epoch": 1},
        }

    put(
        "reports/transfer_learning/results.json",
        {"seed": 0, "backbone": "mobilenet_v2", "train_images": 244, "val_images": 153, "scenarios": scen(0.96, 0.97)},
    )
    put("reports/seed_study/transfer_learning/seed1/results.json", {"seed": 1, "scenarios": scen(0.95, 0.98)})
    put("reports/seed_study/transfer_learning/seed2/results.json", {"seed": 2, "scenarios": scen(0.97, 0.97)})


def test_seed_study_runs_the_published_recipe_and_writes_mean_and_std(tmp_path, monkeypatch):
    _fake_reports(tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    steps = dict(report.seed_steps([0, 1, 2]))
    assert sorted(steps) == [
        "seed_cnn_1",
        "seed_cnn_2",
        "seed_softmax_1",
        "seed_softmax_2",
        "seed_transfer_1",
        "seed_transfer_2",
    ]  # seed 0 is the publishing run
    cnn = steps["seed_cnn_2"]
    for flag, value in (
        ("--hidden", "512"),
        ("--filter-sizes", "7"),
        ("--filters", "32"),
        ("--seed", "2"),
        ("--final-epochs", "30"),
        ("--elastic-alpha", "34.0"),
        ("--out", "reports/seed_study/cnn/seed2"),
    ):
        assert cnn[cnn.index(flag) + 1] == value, flag
    from lightning_modules.tasks.digit_classification import parse_args

    assert parse_args(cnn[1:]).hidden == [512]  # the script accepts it

    report.seed_study([0, 1, 2])
    softmax = json.loads((tmp_path / "reports/digit_classification/softmax/results.json").read_text())["seed_study"]
    assert softmax["seeds"] == [0, 1, 2] and softmax["test_acc"] == pytest.approx([0.992, 0.993, 0.991])
    assert softmax["mean"] == pytest.approx(0.992) and softmax["std"] == pytest.approx(0.001)
    transfer = json.loads((tmp_path / "reports/transfer_learning/results.json").read_text())["seed_study"]
    assert transfer["finetune"]["val_acc"] == [0.96, 0.95, 0.97]
    assert transfer["freeze"]["mean"] == pytest.approx(0.97 + 0.01 / 3)

    # A seed run of another size than the published choice is refused, not averaged.
    path = tmp_path / "reports/seed_study/cnn/seed1/results.json"
    bad = json.loads(path.read_text())
    bad["final"]["spec"] = {**bad["final"]["spec"], "hidden": 64}
    path.write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="not the published choice"):
        report.seed_study([0, 1, 2])


def test_readme_results_are_written_between_the_markers(tmp_path, monkeypatch):
    _fake_reports(tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    report.seed_study([0, 1, 2])
    (tmp_path / "README.md").write_text(f"# title\n\n{report.BEGIN}\nold numbers 12.34%\n{report.END}\n\n## after\n")
    report.write_readme_results()
    text = (tmp_path / "README.md").read_text()
    assert "old numbers" not in text and text.startswith("# title") and text.endswith("## after\n")
    assert "99.20% ± 0.10" in text and "99.50% ± 0.10" in text  # the seed study's means
    assert "Simard" in text  # the anchors beside them
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="results:begin"):
        report.write_readme_results()


def test_the_readme_has_a_generated_results_section():
    text = (ROOT / "README.md").read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert text.index(report.BEGIN) < text.index(report.END)


def test_report_list_runs_nothing(capsys):
    assert report.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(report.STEPS) and "captioning_transformer: python scripts/image_captioning.py" in out
    with pytest.raises(SystemExit):
        report.main(["--only", "no_such_step"])
    assert sys.executable  # the steps run under this interpreter


def test_elastic_field_blur_is_torchvisions_gaussian_blur():
    from torchvision.transforms.v2.functional import gaussian_blur

    from lightning_modules.data.mnist import _gaussian_blur

    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for sigma in (4.0, 5.5):
        k = 2 * round(2 * sigma) + 1
        torch.testing.assert_close(_gaussian_blur(x, sigma), gaussian_blur(x, [k, k], [sigma, sigma]))
