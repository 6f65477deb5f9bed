"""The errors a user fixes: each message names the file, option or step and says what to do.

The programs print them in one line, without a traceback (``runs.cli.main``): status 2 for an
option (``OptionError``), status 1 for the rest. ``Stopped`` is not an error but a signal asking
the run to stop (SIGTERM, SIGINT): status 128 + the signal's number. This module imports nothing
else of the project, so the data modules and networks raise these without depending on the
command-line layer.
"""

from __future__ import annotations

import signal


class RunError(RuntimeError):
    """A problem with a run's inputs or its course that the user fixes (missing or corrupt data, an
    unsafe file, a diverged training)."""


class OptionError(RunError, ValueError):
    """An option that cannot work (with the data, this machine, or the run it resumes): status 2."""


class DataError(RunError, ValueError):
    """A data file is unreadable, truncated or corrupt, or a data set cannot be had."""


class UnsafeFileError(RunError):
    """A file refused because loading it would unpickle arbitrary objects (which can run code)."""


class NonFiniteError(RunError, ValueError):
    """A value that is NaN or infinite where a finite one is needed (a loss, a number bound for JSON)."""


class NonFiniteLossError(NonFiniteError):
    """The training or validation loss became NaN or infinite."""


class PretrainedWeightsError(RunError):
    """The pretrained weights are missing or do not fit the architecture."""


class RunInUseError(RunError):
    """Another run is writing the same output folder."""


class Stopped(BaseException):
    """The run was asked to stop by a signal (SIGTERM, SIGINT) and did so cleanly.

    A BaseException, like ``KeyboardInterrupt``: no ``except Exception`` on the way up may swallow
    it. ``where`` says where the run stopped ("at epoch 2, step 150", "before training"); the run
    folder sets ``resumable`` (whether ``--resume`` continues the work kept on disk).
    """

    def __init__(self, signum: int, where: str, agreed: bool = False) -> None:
        super().__init__(signum, where)
        self.signum = signum
        self.where = where
        self.agreed = agreed  # every rank stopped at the same step (a collective decision)
        self.resumable = True

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended (SIGTERM: 143)."""
        return 128 + self.signum

    def __str__(self) -> str:
        advice = "resume with --resume" if self.resumable else "run it again"
        return f"stopped by {self.name} {self.where}; nothing was published; {advice}"


class TimeLimitError(RunError):
    """A training reached its time limit (a guard option) before the recipe's last epoch."""
