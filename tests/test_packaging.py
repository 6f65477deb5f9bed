"""The package as a user installs it: a wheel (not editable) that declares only torch and numpy, with
the training programs' dependencies in the [train] extra, typed (py.typed), licensed, versioned; and a
quick job of the installed programs, run from another folder, writing nothing into the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import customops
from tests.helpers import ROOT

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "customops", "lightning_modules")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build writes its work files beside them)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(
            ROOT / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("customops-*.whl")
    return found


def test_the_wheel_is_typed_licensed_and_needs_only_torch_and_numpy(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(archive.read(metadata).decode())
    assert "customops/py.typed" in names and "lightning_modules/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["Version"] == customops.__version__ and meta["License-Expression"] == "MIT"
    requires = meta.get_all("Requires-Dist")
    core = sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert core == ["numpy", "torch"]
    train = " ".join(r for r in requires if 'extra == "train"' in r)
    for package in ("pytorch-lightning", "torchmetrics", "matplotlib", "jsonargparse", "platformdirs", "torchvision"):
        assert package in train, package
    assert not any(n.startswith(("tests/", "scripts/", "reports/")) for n in names)


def test_an_installed_wheel_runs_from_another_folder_and_writes_nothing_into_its_install(wheel, tmp_path, mnist_cache):
    site = tmp_path / "site-packages"  # a fresh install, first on the path (the dependencies: this venv's)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = sorted(p.relative_to(site) for p in site.rglob("*") if "__pycache__" not in p.parts)
    work, cache = tmp_path / "work", mnist_cache(tmp_path / "cache", n_train=120, n_test=20)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CUSTOMOPS_MIRROR", "LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(site), CUSTOMOPS_CACHE=str(cache), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import customops, lightning_modules; print(customops.__file__, lightning_modules.__file__)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert all(Path(f).is_relative_to(site) for f in where.stdout.split()), where.stdout  # the installed copy
    job = subprocess.run(
        [sys.executable, "-m", "lightning_modules.tasks.digit_classification", "fit", "--model", "softmax"]
        + ["--softmax.hidden", "[8]", "--softmax.final_epochs", "1", "--data.val_size", "20"]
        + ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert (work / "runs" / "digit_classification" / "softmax" / "results.json").is_file()  # ./runs of the folder
    after = sorted(p.relative_to(site) for p in site.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "the run wrote into the installed package"
    assert not list(site.rglob("*.ckpt")) and not (site / "runs").exists() and not (site / "data").exists()
