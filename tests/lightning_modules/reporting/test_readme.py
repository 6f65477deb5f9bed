"""reporting.readme: the README's results section is exactly what the published results give."""

from __future__ import annotations

from lightning_modules.reporting import readme, reports
from lightning_modules.runs import storage
from tests.helpers import ROOT


def test_the_readme_results_section_is_regenerated_from_reports_byte_for_byte():
    """Nothing in the section is typed by hand: written again from reports/, it comes out the same."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0]
    body = section.split("-->\n\n", 1)[1]  # after the "written by" comment
    assert body == readme.results_section(ROOT / "reports") + "\n"


def test_missing_results_leave_their_sections_out(tmp_path):
    assert readme.results_section(tmp_path) == ""


def _digits(tta: dict | None) -> dict:
    cfg = {"scheduler": "onecycle", "lr": 0.002, "weight_decay": 0.05, "batch_size": 128, "max_shift": 2}
    nets = {
        "softmax": ({"hidden": 2048}, 0.9916, {"mode": "off", "val_acc_plain": 0.99, "chosen": "plain"}),
        "cnn": ({"filters": 32, "kernel_size": 7, "hidden": 512}, 0.9951, tta),
    }
    out = {}
    for model, (spec, acc, block) in nets.items():
        out[model] = {"chosen": {"spec": spec}, "final": {"epochs": 30}, "test_acc": acc, "config": cfg}
        if tta is not None:
            out[model]["tta"] = block
    return out


def test_the_digits_table_says_how_the_test_digits_were_scored_when_the_results_record_it():
    tta = {"mode": "auto", "val_acc_plain": 0.9952, "val_acc_tta": 0.9960, "chosen": "tta"}
    lines = readme.digits_section(_digits(tta), None)
    header = next(line for line in lines if line.startswith("| network"))
    assert "test scored (chosen on val)" in header
    cnn = next(line for line in lines if line.startswith("| CNN"))
    assert "| TTA (val 99.52% plain, 99.60% TTA) |" in cnn and "99.51%" in cnn
    assert "| plain (TTA off) |" in next(line for line in lines if line.startswith("| two-layer"))
    assert any(line.startswith("Test-time augmentation: ") for line in lines)
    # Results from before test-time augmentation existed: no such column, nothing about it.
    old = readme.digits_section(_digits(None), None)
    assert not any("TTA" in line or "test scored" in line for line in old)


def _step_block(custom: float, torch_s: float) -> dict:
    return {
        "warmup_s": {"custom": 1.0, "torch": 1.0},
        "step_s": {"custom": [custom], "torch": [torch_s]},
        "median_custom_s": custom,
        "median_torch_s": torch_s,
        "ratio": custom / torch_s,
        "min_custom_s": custom,
        "min_torch_s": torch_s,
        "ratio_min": custom / torch_s,
    }


def test_the_training_speed_shows_the_captioners_rows_beside_the_mnist_ones_when_the_benchmark_has_them():
    committed = storage.read_json(ROOT / "reports" / "digit_classification" / "benchmark" / "benchmark.json")
    # The committed benchmark cut to its MNIST rows (as benchmarks from before the step rows were): that sentence alone.
    old = {**committed, "results": [r for r in committed["results"] if r["model"] in ("softmax", "cnn")]}
    before = readme.speed_lines(old)
    assert len(before) == 1 and before[0].startswith("One training epoch of each customops network")
    assert not any("captioner" in line for line in before)
    spec = {"name": "lstm_captioner", "vocab_size": 2539, "wordvec_dim": 256, "hidden_dim": 512, "dropout": 0.3}
    rows = [
        {"model": "lstm", "spec": spec, "batch_size": 128, "words": 16, "steps": 4, "warmup_steps": 2},
        {"model": "transformer", "spec": {**spec, "name": "transformer_captioner"}, "batch_size": 128},
        {"model": "mobilenet_v2", "spec": {"image_size": 224, "weights": "imagenet"}, "batch_size": 32},
    ]
    for row in rows:
        row["precision"] = "32-true" if row["model"] == "mobilenet_v2" else "bf16-mixed"
    rows[1]["spec"] |= {"model_dim": 256, "num_heads": 4, "num_layers": 2, "ffn_dim": 1024}
    rows[0] |= {"eager": _step_block(0.11, 0.10), "compiled": _step_block(0.09, 0.10)}
    rows[1] |= {"eager": _step_block(0.30, 0.20)}  # its compiled run missing
    rows[2] |= {"eager": _step_block(1.2, 1.0), "compiled": _step_block(1.0, 1.0)}
    new = {**old, "results": [*old["results"], *rows]}
    new["steps"] = {"device": "cpu", "precision": "bf16-mixed", "compile": True}
    new["config"] = {"optimizer": "adamw", "max_shift": 2}  # as the benchmark writes it now
    after = readme.speed_lines(new)
    assert after[0] == before[0]  # the MNIST sentence unchanged, the captioners' table after it
    table_rows = [line for line in after if line.startswith("| ")]
    assert table_rows[0] == "| network | torch.nn twin | eager | compiled (both) |"
    lstm = "| LSTM, wordvec 256, hidden 512, batch 128, bf16-mixed "
    lstm += "| `nn.LSTM + nn.Embedding + nn.Linear + F.cross_entropy`"
    assert table_rows[1] == lstm + " | 1.10x | 0.90x |"
    assert table_rows[2].startswith("| attention (Transformer decoder), width 256, 4 heads, 2 layers, ffn 1024, batch")
    assert "`nn.TransformerDecoder (post-norm)" in table_rows[2] and table_rows[2].endswith("| 1.50x | not run |")
    assert table_rows[3].startswith("| MobileNetV2 fine-tuning, 224x224, BatchNorm statistics frozen, imagenet weights")
    assert "torchvision's MobileNetV2 features" in table_rows[3] and table_rows[3].endswith("| 1.20x | 1.00x |")
    assert any("median of 2 interleaved repeats, warm-up and compilation excluded" in line for line in after)
    # benchmark.md renders both kinds of rows too.
    md = reports.training_benchmark(new)
    assert "## One training epoch of each MNIST net" in md and "## Training steps" in md
    assert "| 110.0, 110.0 | 100.0, 100.0 | 1.100 | 1.100 |" in md


def _check(rows):
    return {"device": "cpu", "autocast": ["bfloat16"], "compile_backend": "aot_eager", "rows": rows}


def _row(**errors):
    passes = dict.fromkeys(["gradcheck", "gradgrad", "batched", "func", "autocast", "compile"], "pass")
    return {"op": "relu", **passes, "err64": 0.0, "err32": 1e-7, **errors}


def test_the_check_table_shows_the_low_precision_column_when_the_check_wrote_it():
    new = "\n".join(readme.check_section(_check([_row(err16=2e-3, errbf16=None)])))
    assert "| f16 / bf16 |" in new
    assert "| 2e-03 / n/a |" in new
    old = "\n".join(readme.check_section(_check([_row()])))  # a table written before the column existed
    assert "f16" not in old
    assert "| `relu` | pass | pass | pass | 0e+00 / 1e-07 | pass | pass | pass |" in old


def test_the_transfer_section_names_the_trunk_a_run_recorded():
    run = {"backbone": "mobilenet_v2", "train_images": 244, "val_images": 153}
    run["scenarios"] = {"freeze": {"best_val_acc": 0.98, "best_val_correct": "150/153", "best_epoch": 3}}
    assert (
        "mobilenet_v2 (its layers converted to customops) with"
        in readme.transfer_section(run | {"trunk": "customops"})[2]
    )
    assert "mobilenet_v2 (torch.nn's own layers) with" in readme.transfer_section(run | {"trunk": "native"})[2]
    assert "mobilenet_v2 with" in readme.transfer_section(run)[2]  # a run from before the trunk was recorded
