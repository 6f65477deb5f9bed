"""The command-line support: option types that check values before any data is read, the flags
every training program shares, and ``main``, which ends a run in one line on an error the user fixes."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_modules.paths import DEFAULT_CACHE
from lightning_modules.runs.errors import RunError


def main(program: Callable[[], Any], prog: str) -> None:
    """Run a program's ``main``; an error the user fixes ends it with one line on stderr and status 1."""
    try:
        program()
    except (RunError, FileNotFoundError) as err:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Stop the process group's threads first: left running at exit, they abort the process.
            torch.distributed.destroy_process_group()
        sys.exit(f"{prog}: error: {err}")


# argparse ``type=`` functions: a bad value is an ``error:`` line naming the option, status 2,
# before any data is read.


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _number_type(kind: type, accept: Callable[[Any], bool], wanted: str, name: str) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` for which `accept` holds, else "must be <wanted>, got <text>"."""

    def parse(text: str):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = name
    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer", "positive_int")
nonnegative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0", "nonnegative_int")
# Learning rates, factors, time limits.
positive_float = _number_type(float, lambda v: v > 0, "a finite number > 0", "positive_float")
nonnegative_float = _number_type(float, lambda v: v >= 0, "a finite number >= 0", "nonnegative_float")
# Dropout, momentum.
probability = _number_type(float, lambda v: 0 <= v < 1, "in [0, 1)", "probability")


def batch_limit(text: str) -> int | float:
    """Lightning's limit_*_batches: a fraction in (0, 1] of the batches (1 or 1.0: all) or a count > 1."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or a number of batches >= 1, got {text}")
    if value <= 1:
        return value
    if value != int(value):
        raise argparse.ArgumentTypeError(f"a number of batches must be whole, got {text}")
    return int(value)


def _devices(value: str) -> int | str:
    if value.isdigit():
        return positive_int(value)
    return value


def add_run_args(
    parser: argparse.ArgumentParser, *, batch_size: int, num_workers: int = 0, out_help: str = "results folder"
) -> None:
    """The flags every training script shares, with Lightning's names and meanings."""
    g = parser.add_argument_group("run (the same on every script)")
    g.add_argument("--accelerator", default="auto", help="Lightning accelerator: cpu, gpu, auto, ...")
    g.add_argument(
        "--devices", type=_devices, default=1, help="devices per machine (an int, 'auto', or a list such as '0,1')"
    )
    g.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ddp_spawn, ...")
    g.add_argument("--num-nodes", type=positive_int, default=1, help="machines (with torchrun or SLURM, see README)")
    g.add_argument("--precision", default="32-true", help="Lightning precision: 32-true, bf16-mixed, 16-mixed, ...")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentation")
    g.add_argument("--batch-size", type=positive_int, default=batch_size, help="training batch size per device")
    g.add_argument(
        "--num-workers", type=nonnegative_int, default=num_workers, help="data-loader worker processes per device"
    )
    g.add_argument(
        "--data-root", default=None, help="where the data set is (default: $CUSTOMOPS_MIRROR/<data set>, else download)"
    )
    g.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the project keeps what it derives from the data (downloads, features)",
    )
    g.add_argument("--out", type=Path, default=None, help=f"{out_help} (default: under runs/, git-ignored)")
    g.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint"
    )
    g.add_argument(
        "--ckpt-every-n-steps",
        type=nonnegative_int,
        default=50,
        help="also save the last checkpoint every n training steps (mid-epoch resume)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
