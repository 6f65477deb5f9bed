"""make docs: the API reference builds from the docstrings, a page per module."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_the_api_reference_builds(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pdoc", "-o", str(tmp_path), "customops", "lightning_modules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warn" not in proc.stderr, proc.stderr[-3000:]
    for page in ("index.html", "customops.html", "lightning_modules/models.html", "lightning_modules/runs/errors.html"):
        assert (tmp_path / page).is_file(), page
    # The pages hold the docstrings: get_model's, for one.
    assert "A fresh network: the builder registered as" in (tmp_path / "lightning_modules/models.html").read_text()
