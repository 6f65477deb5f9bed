"""Files a run writes and reads: atomic writes, strict JSON, safe loading of torch files, and the
run folder published all at once.

- ``atomic_path`` (a unique temporary file beside the target, renamed into place on success),
  ``write_text``, ``write_json`` (strict JSON: no NaN);
- ``load_checkpoint``: ``torch.load(..., weights_only=True)`` with errors that name the file;
- ``RunFolder`` builds a run's outputs in ``.<name>.partial/`` beside the target and moves the
  finished folder into place, so a killed run never leaves old and new files mixed; ``--resume``
  continues from the partial folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lightning_modules.runs.errors import DataError, UnsafeFileError
from lightning_modules.runs.ranks import is_global_zero

CONFIG_NAME = "config.yaml"  # a run's resolved recipe, the first file in its folder (runs.cli)

# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary path beside `path`; rename it onto `path` when the block succeeds.

    The name is unique per process, so ranks or runs writing the same file never share a
    temporary file; whoever renames last wins, and readers only ever see a whole file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (NaN or infinity is an error, not an unreadable file), written atomically."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path`, or None when the file is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    A file holding pickled objects other than tensors and plain data is refused (loading it could
    run code) with ``UnsafeFileError``; an unreadable or truncated one raises ``DataError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; keep the line that says which object was refused.
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+", str(err))
        reason = f"it wants {found.group(1) or found.group(0)}" if found else "not a weights-only file"
        raise UnsafeFileError(
            f"{path}: refused to load this {what}: it holds pickled objects other than tensors and plain data, "
            f"which could run code ({reason}); delete it and re-create it with this project"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read this {what}, it is truncated or not a torch file "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); delete it"
        ) from err


# --------------------------------------------------------------------------- run folders


class RunFolder:
    """A run's output folder, published all at once.

    Everything is written into ``work`` (``<out>/../.<name>.partial``). ``publish()`` (called on
    leaving the ``with`` block without an error) moves a previous ``out`` aside, renames ``work``
    to ``out`` and deletes the old one, so ``out`` holds either the previous run or the new one,
    never a mixture (a publish cut between its two renames is finished by the next run). A failed
    or killed run leaves ``work`` for ``--resume``. Only global rank
    zero creates, clears or publishes; the other ranks only learn the paths.
    """

    def __init__(self, out: str | os.PathLike, resume: bool = False) -> None:
        self.out = Path(out).resolve()
        self.work = self.out.parent / f".{self.out.name}.partial"
        self.resume = resume

    # Every run writes one of these; a folder without any was not written by a run.
    RESULT_FILES = ("results.json", "benchmark.json")

    @property
    def old(self) -> Path:
        """Where ``publish`` moves the previous run while it renames ``work`` into place."""
        return self.out.parent / f".{self.out.name}.old"

    def _finish_cut_publish(self) -> None:
        """A kill during ``publish`` leaves ``old``: finish that publish (``work`` was a finished run)."""
        if not self.out.exists():
            os.replace(self.work if self.work.is_dir() else self.old, self.out)
        shutil.rmtree(self.old, ignore_errors=True)

    def __enter__(self) -> RunFolder:
        if is_global_zero():
            if self.old.exists():
                self._finish_cut_publish()
            if (
                self.out.is_dir()
                and any(self.out.iterdir())
                and not any((self.out / name).is_file() for name in self.RESULT_FILES)
            ):
                # Publishing replaces the whole folder: never a folder that is not a run's (--out reports/).
                raise FileExistsError(
                    f"{self.out} is not a run folder (it has no {' or '.join(self.RESULT_FILES)}); "
                    "refusing to replace it: choose another --out"
                )
            if self.work.exists() and not self.resume:
                shutil.rmtree(self.work)  # a stale, abandoned attempt
            for stray in self.work.rglob(".*.tmp*"):
                stray.unlink()  # a file a killed attempt was writing (atomic_path's temporaries)
            self.work.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not is_global_zero():
            return
        if exc_type is None:
            self.publish()
        elif self.work.is_dir() and all(p.name == CONFIG_NAME for p in self.work.iterdir()):
            shutil.rmtree(self.work)  # failed before training: nothing to resume

    def publish(self) -> Path:
        if self.old.exists():
            shutil.rmtree(self.old)
        if self.out.exists():
            os.replace(self.out, self.old)
        os.replace(self.work, self.out)
        shutil.rmtree(self.old, ignore_errors=True)
        return self.out


def relative(path: str | os.PathLike, start: str | os.PathLike) -> str:
    """`path` relative to `start` where it lies inside it (results stay machine-independent)."""
    path, start = Path(path).resolve(), Path(start).resolve()
    return str(path.relative_to(start)) if path.is_relative_to(start) else str(path)
