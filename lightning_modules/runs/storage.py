"""Files a run writes and reads: atomic writes, strict JSON, safe loading of torch files, and the
run folder published all at once, one run at a time.

- ``atomic_path`` (a unique temporary file beside the target, renamed into place on success; with
  ``durable``, flushed to disk first), ``write_bytes``, ``write_text``, ``write_json`` (strict JSON:
  a NaN is refused, naming its key);
- ``load_checkpoint``: ``torch.load(..., weights_only=True)`` with errors that name the file;
- ``RunLock``: one run per output folder at a time;
- ``RunFolder`` builds a run's outputs in ``.<name>.partial/`` beside the target and moves the
  finished folder into place, so a killed run never leaves old and new files mixed; ``--resume``
  continues from the partial folder. ``check_out``: the target is a run's folder or absent.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import pickle
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import torch

from lightning_modules.runs import signals
from lightning_modules.runs.errors import (
    DataError,
    NonFiniteError,
    OptionError,
    RunInUseError,
    Stopped,
    UnsafeFileError,
)
from lightning_modules.runs.ranks import echo, is_global_zero

CONFIG_NAME = "config.yaml"  # a run's resolved recipe, the first file in its folder (runs.cli)

# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a unique temporary path beside `path`; rename it onto `path` when the block succeeds.

    The name is unique per process, so ranks or runs writing the same file never share a
    temporary file; whoever renames last wins, and readers only ever see a whole file. The
    temporary file is in the target's own folder, so the rename never crosses file systems (a
    rename within one is atomic; a move across two is a copy, which a kill can cut). With `durable`
    the file is flushed to disk before the rename and the folder after it, so that even a crash of
    the machine leaves the old file or the new one whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            with contextlib.suppress(OSError):  # some file systems cannot sync a folder; the rename is done
                _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview, durable: bool = False) -> Path:
    """`data` written atomically (``atomic_path``). A failed write (a full disk) leaves the previous file
    whole and raises an OSError naming `path`."""
    path = Path(path)
    try:
        with atomic_path(path, durable) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err  # the target, not the temporary file
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _non_finite(obj: Any, key: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite number in `obj` (nested dicts and lists) and its key path, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return key, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, value in items:
        found = _non_finite(value, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON, written atomically: a NaN or infinity is never written (JSON has none; Python's
    reader would take it, others would not) but refused with ``NonFiniteError`` naming its key."""
    found = _non_finite(obj)
    if found is not None:
        raise NonFiniteError(f"{path}: {found[0]} is {found[1]}, not a finite number; nothing was written")
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


class RunLock:
    """One run per output folder at a time: an exclusive lock on ``.<name>.lock`` beside the folder,
    which holds the running run's PID, host, start time and command.

    The lock is the kernel's (``filelock``: ``flock``), so it ends with its process however the
    process ends (even SIGKILL): a killed run never blocks the next one. A record found in a free
    lock is a run that ended without releasing it (killed); the lock is taken over with a notice.
    Released, the lock file is removed (while still held, so a run that opened it meanwhile sees it
    gone and does not take a stale lock).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self._lock: filelock.BaseFileLock | None = None

    def holder(self) -> str | None:
        """Who holds (or last held) the lock, in words; None when the lock file records no run."""
        record = read_json(self.path)
        if not isinstance(record, dict):
            return None
        return (
            f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}: {record.get('command')}"
        )

    def acquire(self) -> None:
        """Take the lock at once or raise ``RunInUseError`` naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RunInUseError(
                f"{self.out} is in use by another run ({self.holder() or 'one that is just starting or ending'}); "
                "wait for it to end, or choose another --out"
            ) from None
        self._lock = lock
        previous = self.holder()
        if previous is not None:
            echo(f"note: {self.out}: taking over the lock of a run that ended without releasing it ({previous})")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        # Written in place: the lock is on this file (a rename would put a new, unlocked one there).
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(record, f)

    def release(self) -> None:
        if self._lock is None:
            return
        self.path.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None


def check_out(out: str | os.PathLike) -> None:
    """A run publishes into `out` by replacing it: `out` must be absent, empty or a run's folder.
    ``OptionError`` otherwise (nothing is touched)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file, not a run folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).is_file() for name in RunFolder.RESULT_FILES):
        # Publishing replaces the whole folder: never a folder that is not a run's (--out reports/).
        raise OptionError(
            f"--out {out} is not a run folder (it has no {' or '.join(RunFolder.RESULT_FILES)}); "
            "refusing to replace it: choose another --out"
        )


class RunFolder:
    """A run's output folder, published all at once, by one run at a time.

    Everything is written into ``work`` (``<out>/../.<name>.partial``). ``publish()`` (called on
    leaving the ``with`` block without an error) moves a previous ``out`` aside, renames ``work``
    to ``out`` and deletes the old one, so ``out`` holds either the previous run or the new one,
    never a mixture (a publish cut between its two renames is finished by the next run). A failed,
    stopped or killed run leaves ``work`` for ``--resume``. The folder is locked (``RunLock``) from
    entering to leaving, so a second run on the same ``out`` refuses at once. Only global rank
    zero locks, creates, clears or publishes; the other ranks only learn the paths.

    `resumable`: whether the program can continue the work with ``--resume`` (what a stopped run's
    message advises).
    """

    def __init__(self, out: str | os.PathLike, resume: bool = False, resumable: bool = True) -> None:
        self.out = Path(out).resolve()
        self.work = self.out.parent / f".{self.out.name}.partial"
        self.resume = resume
        self.resumable = resumable
        self.lock = RunLock(self.out)

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

    def _has_training(self) -> bool:
        """Whether the work folder holds work beyond the saved recipe (empty folders, such as the log
        folder a Trainer makes before it reads the data, are none)."""
        work = self.work
        return work.is_dir() and any(p.is_file() and p != work / CONFIG_NAME for p in work.rglob("*"))

    def __enter__(self) -> RunFolder:
        if not is_global_zero():
            return self
        try:
            self.lock.acquire()
        except OSError as err:
            raise OptionError(f"--out {self.out}: cannot write there ({err.strerror}): choose another --out") from err
        try:
            if self.old.exists():
                self._finish_cut_publish()
            check_out(self.out)
            if self.work.exists() and not self.resume:
                if self._has_training():
                    echo(f"note: starting afresh: the interrupted run in {self.work} is discarded (--resume keeps it)")
                shutil.rmtree(self.work)  # a stale, abandoned attempt
            for stray in self.work.rglob(".*.tmp*"):
                stray.unlink()  # a file a killed attempt was writing (atomic_path's temporaries)
            self.work.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not is_global_zero():
            return
        try:
            if exc_type is None:
                with signals.deferred():  # a signal now waits: the publish is two renames, never cut by us
                    self.publish()
            elif self.work.is_dir() and not self._has_training():
                shutil.rmtree(self.work)  # failed before training: nothing to resume
            if isinstance(exc, Stopped):
                exc.resumable = self.resumable and self.work.is_dir()
        finally:
            self.lock.release()

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
