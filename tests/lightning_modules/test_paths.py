"""paths: where the programs write by default."""

from __future__ import annotations

from lightning_modules.paths import RUNS_DIR


def test_scripts_write_under_runs_by_default_never_reports():
    from lightning_modules.tasks import benchmark_training, digit_classification, image_captioning, transfer_learning

    outs = [
        digit_classification.parse_args(["--model", "cnn"]).out,
        transfer_learning.parse_args([]).out,
        image_captioning.parse_args([]).out,
        image_captioning.parse_args(["--overfit", "--cell", "lstm"]).out,
        benchmark_training.parse_args([]).out,
    ]
    for out in outs:
        assert out.is_relative_to(RUNS_DIR), out
    assert outs[3].name == "overfit_lstm"
