"""reporting.readme: the README's results section is exactly what the published results give."""

from __future__ import annotations

from lightning_modules.reporting import readme
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
