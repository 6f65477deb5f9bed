"""The errors a user fixes: each message names the file, option or step and says what to do.

The programs print them in one line, without a traceback (``runs.cli.main``). This module imports
nothing else of the project, so the data modules and networks raise these without depending on the
command-line layer.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A problem with a run's inputs or its course that the user fixes (missing or corrupt data, an
    unsafe file, a diverged training)."""


class DataError(RunError, ValueError):
    """A data file is unreadable, truncated or corrupt, or a data set cannot be had."""


class UnsafeFileError(RunError):
    """A file refused because loading it would unpickle arbitrary objects (which can run code)."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or infinite."""


class PretrainedWeightsError(RunError):
    """The pretrained weights are missing or do not fit the architecture."""


class TimeLimitError(RunError):
    """A training reached its time limit (a guard option) before the recipe's last epoch."""
