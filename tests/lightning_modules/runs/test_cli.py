"""runs.cli: the flags every program shares, and errors the user fixes ending in one line with status 1."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import last_line


@pytest.mark.parametrize(
    "module", ["digit_classification", "transfer_learning", "image_captioning", "benchmark_training"]
)
def test_every_script_has_the_standard_flags(module, capsys):
    task = importlib.import_module(f"lightning_modules.tasks.{module}")
    with pytest.raises(SystemExit):
        task.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--accelerator",
        "--devices",
        "--strategy",
        "--num-nodes",
        "--precision",
        "--seed",
        "--batch-size",
        "--num-workers",
        "--data-root",
        "--cache-dir",
        "--out",
        "--resume",
    ):
        assert flag in text, f"{module}: {flag}"


def test_data_errors_end_in_one_line_and_status_1(tmp_path, hymenoptera, run_cli):
    root = hymenoptera(tmp_path / "hymenoptera_data")
    (root / "train" / "ants" / "ants_0.png").write_bytes(b"")
    proc = run_cli(
        "transfer_learning",
        "--backbone",
        "small_cnn",
        "--weights",
        "none",
        "--data-root",
        str(root),
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"transfer_learning: error: hymenoptera_data: 1 unreadable image: {root}")
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.glob(".out.*")) and not (tmp_path / "out").exists(), "nothing is left behind"
