"""Where the project reads and writes by default, defined once.

- ``MIRROR_ENV``: the environment variable naming a local mirror of the data sets
  (``$CUSTOMOPS_MIRROR/<data set>``), for machines without internet;
- ``default_cache_dir()``: what the project derives from the data (downloads, decompressed files,
  image features): ``$CUSTOMOPS_CACHE``, else the user's cache folder
  (``platformdirs.user_cache_dir("customops")``, e.g. ``~/.cache/customops``);
- ``runs_dir()``: where the training programs write their runs unless ``--out`` says otherwise:
  ``./runs/`` in the working folder, as Lightning writes ``./lightning_logs/``.

Nothing is computed relative to the installed package, so an installed package never writes into
its own install folder.
"""

from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "CUSTOMOPS_MIRROR"
CACHE_ENV = "CUSTOMOPS_CACHE"


def default_cache_dir() -> Path:
    """$CUSTOMOPS_CACHE, else the user's cache folder for customops."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("customops"))
    except ImportError:  # platformdirs comes with the [train] extra; without it, the XDG default
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "customops"


def runs_dir() -> Path:
    """./runs in the working folder (absolute, so a later change of folder does not move it)."""
    return Path.cwd() / "runs"


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
    """The default output folder of a run: ``./runs/<task>/...``."""
    return runs_dir().joinpath(*parts)
