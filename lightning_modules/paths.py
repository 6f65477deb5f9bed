"""Where the project reads and writes by default, defined once.

- ``MIRROR_ENV``: the environment variable naming a local mirror of the data sets
  (``$CUSTOMOPS_MIRROR/<data set>``), for machines without internet;
- ``DEFAULT_CACHE``: what the project derives from the data (downloads, decompressed files,
  image features);
- ``RUNS_DIR``: where the training programs write their runs unless ``--out`` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "CUSTOMOPS_MIRROR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = PROJECT_ROOT / "data"
RUNS_DIR = PROJECT_ROOT / "runs"


def mirror_root() -> Path | None:
    """The local mirror folder named by $CUSTOMOPS_MIRROR, or None when unset."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"${MIRROR_ENV} points at {root}, which is not a folder")
    return root


def default_out(*parts: str) -> Path:
    """The default output folder of a run: ``RUNS_DIR/<task>/...``."""
    return RUNS_DIR.joinpath(*parts)
