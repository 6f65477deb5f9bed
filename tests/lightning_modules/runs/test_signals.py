"""runs.signals: SIGTERM and SIGINT, real signals sent to this process: a stop at once outside a training,
only a recorded request inside one (the training stops at its step's end: test_training.py), a second
signal at once, and the previous handlers back afterwards."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lightning_modules.runs import signals
from lightning_modules.runs.errors import Stopped


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(2)  # the handler runs at the next bytecode; it raises long before this ends


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_outside_a_training_stops_at_once(signum, status):
    with signals.installed():
        start = time.monotonic()
        with pytest.raises(Stopped) as stopped:
            _signal_self(signum)
        assert time.monotonic() - start < 1
    assert stopped.value.signum == signum and stopped.value.exit_status == status
    assert str(stopped.value) == (
        f"stopped by {signal.Signals(signum).name} outside a training step; nothing was published; resume with --resume"
    )


def test_inside_a_deferred_block_the_first_signal_is_recorded_and_a_second_stops_at_once():
    with signals.installed():
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # delivered, and only recorded
            assert signals.requested() == signal.SIGTERM
            with pytest.raises(Stopped, match="at once"):
                _signal_self(signal.SIGINT)
        assert signals.requested() == signal.SIGTERM  # the first one is what the run stops for
    assert signals.requested() is None


def test_the_previous_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.installed():
        assert signal.getsignal(signal.SIGINT) is signals.handler is signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as Lightning installs its own when a training starts
        signals.reclaim()
        assert signal.getsignal(signal.SIGTERM) is signals.handler
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    signals.reclaim()  # outside the programs' handling (a library call), nothing is installed
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
