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
