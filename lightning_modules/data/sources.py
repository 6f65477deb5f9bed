"""Where a data set comes from (an explicit folder, else the local mirror, else a download) and the
check that its image files decode."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lightning_modules.paths import MIRROR_ENV, mirror_root
from lightning_modules.runs.errors import DataError


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


def check_images(paths: Iterable[Path], name: str) -> None:
    """Decode every image once, before training: DataError naming the unreadable ones.

    ``verify()`` catches a file that is not an image; a full ``load()`` catches a truncated one
    (verify does not decode). Nothing is cached, so a file corrupted later is caught next time.
    """
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                image.load()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            reason = (str(err).splitlines()[0] if str(err) else type(err).__name__).replace(f" '{path}'", "")
            bad.append(f"{path} ({reason})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(
            f"{name}: {len(bad)} unreadable image{'s' if len(bad) > 1 else ''}: {'; '.join(bad[:3])}{more}: "
            "replace or delete the file" + ("s" if len(bad) > 1 else "")
        )
