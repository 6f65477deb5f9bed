"""Where data sets come from: an explicit folder, the local mirror, or a download cache."""
from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "CUSTOMOPS_MIRROR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = PROJECT_ROOT / "data"


def mirror_root() -> Path | None:
    """The local mirror folder named by $CUSTOMOPS_MIRROR, or None when unset."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"${MIRROR_ENV} points at {root}, which is not a folder")
    return root


def resolve_dataset_dir(name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """The folder holding data set `name`: the explicit one, else $CUSTOMOPS_MIRROR/name.

    Returns None when neither is given, meaning: download into the cache.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{name}: folder {path} does not exist")
        return path
    mirror = mirror_root()
    if mirror is not None:
        path = mirror / name
        if not path.exists():
            raise FileNotFoundError(f"{name}: ${MIRROR_ENV}={mirror} has no {name}/ folder")
        return path
    return None
