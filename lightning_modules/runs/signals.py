"""SIGTERM and SIGINT as a clean stop (what SLURM's preemption, ``timeout``, ``kill`` and Ctrl-C send).

The programs install one handler for both signals (``installed()``, in ``runs.cli.main``):

- while a training runs (inside ``deferred()``: ``training.fit`` around ``trainer.fit``, and the
  ``training.CleanStop`` callback from the training's start to its end), a signal only records the
  request: ``CleanStop`` then stops every rank at the end of the same step, saves the checkpoint
  that ``--resume`` continues from and raises ``Stopped``;
- anywhere else (reading the data, evaluating, writing the outputs, which are written atomically)
  nothing needs saving, and the signal raises ``Stopped`` at once, as Ctrl-C raises
  ``KeyboardInterrupt``;
- a second signal stops at once, wherever the run is.

``Stopped`` reaches ``runs.cli.main``, which prints one line and ends with status 128 + the signal
(SIGTERM: 143, SIGINT: 130). This module holds the process's state only; it imports no Lightning.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from lightning_modules.runs.errors import Stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_requested: int | None = None  # the first stop signal received, if any
_deferring = 0  # how many deferred() blocks are open
_installed = False  # whether this process's handlers are in place (the programs', not a test's)


def requested() -> int | None:
    """The signal that asked this process to stop (SIGTERM, SIGINT), or None."""
    return _requested


def handler(signum: int, frame: Any) -> None:
    """The programs' handler of SIGTERM and SIGINT (see the module's docstring)."""
    global _requested
    first = _requested is None
    if first:
        _requested = signum
    if _deferring and first:
        return  # the training stops at the end of its step
    raise Stopped(signum, "outside a training step" if first else "at once (a second signal)")


def _install() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """This process's handler of SIGTERM and SIGINT for the block (from the main thread, as Python
    requires); the previous handlers, and no recorded request, after it."""
    global _requested, _installed
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _requested, _installed = None, True
    _install()
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _requested, _installed = None, False


def reclaim() -> None:
    """Put the handler back where something else replaced it since (Lightning installs its own SIGTERM
    handler when a training starts); nothing where the program installed none (a library call)."""
    if _installed and threading.current_thread() is threading.main_thread():
        _install()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block in which a (first) stop signal is only recorded, for the code that stops cleanly."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
