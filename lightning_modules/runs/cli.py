"""The command-line support every training program shares, on jsonargparse (LightningCLI's parser).

A program is two subcommands: ``fit`` (train, from a typed recipe) and ``predict`` (use a trained
checkpoint on one's own files). A task's recipe is one dataclass holding every option's default and
help text once (the help comes from the docstring under each field), so::

    customops-digits fit --model cnn --trainer.precision bf16-mixed
    customops-digits fit --config run.yaml --seed 1       # a config file; later options win
    customops-digits fit --model cnn --print_config       # the resolved recipe, as YAML
    customops-digits predict --ckpt best.ckpt my_digit.png

Lightning's Trainer options are ``--trainer.<name>`` under Lightning's own names (``TrainerOptions``),
the data's ``--data.<name>`` (``DataOptions``). Every run saves its resolved recipe as
``config.yaml`` in its folder before it trains (``save_run_config``; ``load_run_config`` reads it
back); ``--resume`` reads it, so a rerun needs no flags but ``--out`` and ``--resume``, and refuses
an option that would change what the interrupted run trains (``check_resume``).
Presets (``--quick``, ``--overfit``) are partial configs applied first, so options given
explicitly always win.

Every option is checked before any data is read: its type, how the options go together (a
recipe's ``__post_init__``), ``--out`` (a run's folder or absent), ``--resume``, and the Trainer
options by Lightning itself (``check_trainer``: precision, strategy, accelerator, devices, machines).
A bad one ends in one line, ``<program>: error: ...``, status 2. ``main`` ends a run in one line on
an error the user fixes (status 1) and on SIGTERM / SIGINT (``runs.signals``; status 128 + signal).
"""

# No ``from __future__ import annotations`` here: the recipes' fields keep real types, which the tasks'
# recipes inherit and tools read (jsonargparse, the API reference).
import errno
import json
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, set_parsing_settings
from jsonargparse.typing import register_type

from lightning_modules.runs import signals
from lightning_modules.runs.errors import OptionError, RunError, Stopped
from lightning_modules.runs.ranks import is_global_zero
from lightning_modules.runs.storage import CONFIG_NAME, RunFolder, check_out, write_text

# Each field's help is the docstring written under it.
set_parsing_settings(docstring_parse_attribute_docstrings=True)


# --------------------------------------------------------------------------- option types
# Each checks its value before any data is read: a bad one is an error naming the option, status 2.


def _finite(value: Any, kind: type) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {'an integer' if kind is int else 'a number'}")
    try:
        number = kind(value) if kind is float else int(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _number_type(name: str, kind: type, accept: Callable[[Any], bool], wanted: str) -> type:
    """A registered option type: a finite `kind` for which `accept` holds, else "must be <wanted>, got <v>"."""

    def parse(value: Any) -> int | float:
        number = _finite(value, kind)
        if not accept(number):
            raise ValueError(f"must be {wanted}, got {value}")
        return number

    cls = type(name, (kind,), {"__doc__": wanted, "__module__": __name__})
    register_type(cls, serializer=kind, deserializer=parse)
    return cls


PositiveInt = _number_type("PositiveInt", int, lambda v: v >= 1, "a positive integer")
NonNegativeInt = _number_type("NonNegativeInt", int, lambda v: v >= 0, "an integer >= 0")
# Learning rates, factors, time limits.
PositiveFloat = _number_type("PositiveFloat", float, lambda v: v > 0, "a finite number > 0")
NonNegativeFloat = _number_type("NonNegativeFloat", float, lambda v: v >= 0, "a finite number >= 0")
# Dropout, momentum.
Probability = _number_type("Probability", float, lambda v: 0 <= v < 1, "in [0, 1)")


def _batch_limit(value: Any) -> int | float:
    """Lightning's limit_*_batches: a fraction in (0, 1] of the batches (1 or 1.0: all) or a count > 1."""
    number = _finite(value, float)
    if number <= 0:
        raise ValueError(f"must be a fraction in (0, 1] or a number of batches >= 1, got {value}")
    if number <= 1:
        return number
    if number != int(number):
        raise ValueError(f"a number of batches must be whole, got {value}")
    return int(number)


class BatchLimit(float):
    """A fraction in (0, 1] of the batches, or a whole number of batches > 1."""


register_type(BatchLimit, serializer=lambda v: v, deserializer=_batch_limit)


# --------------------------------------------------------------------------- what every recipe holds


@dataclass
class TrainerOptions:
    """Lightning Trainer options, under Lightning's own names (--trainer.<name>)."""

    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, auto, ..."""
    devices: PositiveInt | str = 1
    """devices per machine: a number, 'auto', or a list such as '0,1'"""
    # ddp_spawn / ddp_fork would train in processes whose results never reach the program.
    strategy: Literal["auto", "ddp"] = "auto"
    """Lightning strategy: auto (one device) or ddp (one process per device, see the README)"""
    num_nodes: PositiveInt = 1
    """machines (with torchrun or SLURM, see the README)"""
    precision: Literal["32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"] = "32-true"
    """Lightning precision (16-true and bf16-true hold the weights in 16 bits too)"""
    accumulate_grad_batches: PositiveInt = 1
    """batches whose gradients are summed before each optimizer step"""
    gradient_clip_val: NonNegativeFloat | None = None
    """clip the gradients to this norm (or value, see gradient_clip_algorithm); null: no clipping"""
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    """what gradient_clip_val bounds: the gradients' norm or each value"""
    limit_train_batches: BatchLimit = 1.0
    """training batches per epoch: a fraction in (0, 1] or a number > 1 (1.0: all)"""
    limit_val_batches: BatchLimit = 1.0
    """validation batches per epoch: a fraction in (0, 1] or a number > 1 (1.0: all)"""
    log_every_n_steps: PositiveInt = 10
    """log the training loss and learning rate every n steps"""
    profiler: Literal["simple", "advanced", "pytorch"] | None = None
    """Lightning profiler, its report at the end of each fit; null: none"""
    enable_progress_bar: bool = True
    """progress bars (false for logs)"""


@dataclass
class DataOptions:
    """The data (--data.<name>)."""

    root: Path | None = None
    """where the data set is; null: $CUSTOMOPS_MIRROR/<data set>, else a download"""
    cache_dir: Path | None = None
    """what the project derives from the data (downloads, features); null: $CUSTOMOPS_CACHE, else the
    user's cache folder (~/.cache/customops)"""
    batch_size: PositiveInt = 128
    """training batch size per device"""


@dataclass(kw_only=True)
class RunOptions:
    """What every run takes: seed, output folder, resume, checkpoints."""

    seed: int = 0
    """seed of initialisation, batch order and augmentation"""
    out: Path | None = None
    """the run's folder; null: ./runs/<task>/... in the working folder"""
    resume: bool = False
    """continue the interrupted run in --out from its last checkpoint, with its saved config.yaml"""
    ckpt_every_n_steps: NonNegativeInt = 50
    """also save the last checkpoint every n training steps (mid-epoch resume); 0: at epoch ends only"""
    trainer: TrainerOptions = field(default_factory=TrainerOptions)


def flat(recipe: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The recipe as one flat dict of plain values (nested options merged in, those named in `skip`
    left out; paths as strings)."""
    out: dict[str, Any] = {}
    for f in fields(recipe):
        if f.name in skip:
            continue
        value = getattr(recipe, f.name)
        if hasattr(value, "__dataclass_fields__"):
            out.update(flat(value))
        else:
            out[f.name] = str(value) if isinstance(value, Path) else value
    return out


# --------------------------------------------------------------------------- the program


@dataclass
class Program:
    """A console command: ``fit`` trains from `recipe`, ``predict`` applies a checkpoint."""

    prog: str
    description: str
    recipe: type
    fit: Callable[[Any], Any]
    predict_options: type | None = None
    predict: Callable[[Any], Any] | None = None
    default_out: Callable[[Any], Path] | None = None  # a recipe's folder when --out is not given
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # --<name>: a partial config

    def parser(self) -> ArgumentParser:
        # exit_on_error=False: a bad option raises, and parse() prints it in one line.
        parser = ArgumentParser(prog=self.prog, description=self.description, exit_on_error=False)
        commands = parser.add_subcommands(dest="command")
        fit = ArgumentParser(description=self.recipe.__doc__, exit_on_error=False)
        fit.add_argument("--config", action=ActionConfigFile, help="a config file (YAML); later options win")
        fit.add_class_arguments(self.recipe)
        commands.add_subcommand("fit", fit, help="train (the recipe below; --print_config shows it resolved)")
        if self.predict_options is not None:
            predict = ArgumentParser(description=self.predict_options.__doc__, exit_on_error=False)
            predict.add_class_arguments(self.predict_options)
            predict.add_argument("images", nargs="+", type=Path, help="image files, one result line each")
            commands.add_subcommand("predict", predict, help="apply a trained checkpoint to image files")
        return parser

    def error(self, message: str) -> NoReturn:
        """A bad option: one line on stderr, ``<prog>: error: ...``, and status 2."""
        print(f"{self.prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
        sys.exit(2)

    def _flags(self) -> tuple[str, ...]:
        return ("resume", *self.presets)

    def expand(self, argv: Sequence[str]) -> list[str]:
        """Bare boolean flags (--resume, --quick) as --flag=true; each preset's config inserted first."""
        argv = [f"{a}=true" if a in {f"--{f}" for f in self._flags()} else a for a in argv]
        if not argv or argv[0] != "fit":
            return argv
        inserted = []
        for name, preset in self.presets.items():
            if f"--{name}=true" in argv:
                inserted += ["--config", json.dumps(preset)]
        return [argv[0], *inserted, *argv[1:]]

    def parse(self, argv: Sequence[str] | None = None) -> tuple[str, Any]:
        """("fit", recipe) or ("predict", (options, images)); with --resume, the run's saved config.yaml
        is read first, so options given explicitly in this command still win (where they change
        nothing the run trained: ``check_resume``). Every option is checked here, before any data is
        read; a bad one exits with one line and status 2."""
        argv = self.expand(sys.argv[1:] if argv is None else list(argv))
        try:
            return self._parse(argv)
        except (ArgumentError, OptionError) as err:
            self.error(str(err))

    def _parse(self, argv: list[str]) -> tuple[str, Any]:
        parser = self.parser()
        saved = None
        if argv and argv[0] == "fit" and "--resume=true" in argv:
            saved = self.saved_config(argv)
            argv = [argv[0], "--config", str(saved), *argv[1:]]
        cfg = parser.instantiate(parser.parse_args(argv))
        section = cfg[cfg.command]
        if cfg.command == "predict":
            names = [f.name for f in fields(self.predict_options)]
            return "predict", (self.predict_options(**{k: section[k] for k in names}), section["images"])
        try:  # a recipe checks how its options go together in __post_init__
            recipe = self.recipe(**{f.name: section[f.name] for f in fields(self.recipe)})
        except ValueError as err:
            raise OptionError(f"fit: {err}") from None
        if recipe.out is None and self.default_out is not None:
            recipe.out = self.default_out(recipe)
        recipe.out = Path(recipe.out).resolve()
        check_out(recipe.out)
        if recipe.resume:
            check_resume(recipe, saved or self.saved_config(["fit", f"--out={recipe.out}"]))
        check_trainer(recipe.trainer)
        return "fit", recipe

    def saved_config(self, argv: list[str]) -> Path:
        """The config.yaml that the interrupted run in --out saved; ``OptionError`` saying why there is
        nothing to resume where there is none. --out is read from the command (the rest of the recipe
        may be in the file only), else from its default."""
        out = next((a.split("=", 1)[1] for a in argv if a.startswith("--out=")), None)
        if out is None and "--out" in argv[:-1]:
            out = argv[argv.index("--out") + 1]
        if out is None:
            _, recipe = self._parse([a for a in argv if a != "--resume=true"])
            out = recipe.out
        folder = RunFolder(out, resume=True)
        saved = folder.work / CONFIG_NAME
        if saved.is_file():
            return saved
        finished = [name for name in RunFolder.RESULT_FILES if (folder.out / name).is_file()]
        if finished:
            raise OptionError(
                f"--resume: nothing to resume: {folder.out} holds a finished run ({finished[0]}) and no interrupted "
                "one; to train it again, run without --resume (the finished run is replaced when the new one ends)"
            )
        raise OptionError(
            f"--resume: nothing to resume: no run was interrupted in {folder.out} (there is no {saved}); "
            "run without --resume to start one"
        )

    def run(self, argv: Sequence[str] | None = None) -> Any:
        command, value = self.parse(argv)
        if command == "fit":
            try:
                return self.fit(value)
            except OSError as err:
                line = os_error_line(err, value)
                if line is None:
                    raise
                raise RunError(line) from err
        options, images = value
        return self.predict(options, images)


# --------------------------------------------------------------------------- checks before any data is read

# Options a resumed run may change: they change nothing it computes (output, speed, logs, checkpoints'
# frequency). Any other difference from the saved recipe is refused.
RESUME_FREE = frozenset(
    {
        "resume",
        "out",
        "ckpt_every_n_steps",
        "max_minutes",  # a guard, not part of what is trained: a resume may raise or drop it
        "trainer.enable_progress_bar",
        "trainer.profiler",
        "trainer.log_every_n_steps",
        "data.num_workers",
    }
)


def _dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_dotted(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_resume(recipe: Any, saved: Path) -> None:
    """``OptionError`` listing every option of `recipe` (the resumed command's) that differs from the
    interrupted run's saved recipe, but those in ``RESUME_FREE``: the rest of the run must be trained
    as it began, or it would mix two runs."""
    before, now = _dotted(load_run_config(saved)), _dotted(_plain(recipe))
    changed = [
        f"--{key} {json.dumps(before[key])} (now {json.dumps(now[key])})"
        for key in before
        if key in now and key not in RESUME_FREE and before[key] != now[key]
    ]
    if changed:
        raise OptionError(
            f"--resume: the interrupted run in {recipe.out} was started with other options: {', '.join(changed)}; "
            f"to continue it, drop them (its recipe is {saved}); to start afresh, run without --resume "
            "(the interrupted run is then discarded)"
        )


def _launched_on_every_machine() -> bool:
    """Whether a launcher started this process as one of several machines' (torchrun, SLURM, LSF, or
    the environment Lightning reads on each machine: MASTER_ADDR and NODE_RANK)."""
    from lightning_fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or LSFEnvironment.detect():
        return True
    return "MASTER_ADDR" in os.environ and "NODE_RANK" in os.environ


def check_trainer(options: TrainerOptions) -> None:
    """The Trainer options as Lightning checks them, now rather than after the data is read: a Trainer
    is built (nothing runs) and its refusal (a precision, strategy, accelerator or devices that do not
    exist or do not fit this machine) becomes an ``OptionError``. Several machines need a launcher on
    each (torchrun, SLURM): without one, the first would wait for the others for ever."""
    import pytorch_lightning as pl

    chosen = {k: getattr(options, k) for k in ("accelerator", "devices", "strategy", "num_nodes", "precision")}
    described = ", ".join(f"--trainer.{k} {v}" for k, v in chosen.items())
    quiet = [logging.getLogger(name) for name in ("lightning_fabric", "pytorch_lightning")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet_run = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
            pl.Trainer(**chosen, logger=False, **quiet_run)
    except Exception as err:  # Lightning's refusals: ValueError, TypeError, MisconfigurationException, ...
        reason = " ".join(str(err).split()) or type(err).__name__
        raise OptionError(f"the Trainer options do not work here ({described}): {reason}") from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    if options.num_nodes > 1 and not _launched_on_every_machine():
        raise OptionError(
            f"--trainer.num_nodes {options.num_nodes}: start the run on every machine with torchrun or SLURM "
            "(see the README), which tell each process its place; started alone, it would wait for the others"
        )


def os_error_line(err: OSError, recipe: Any) -> str | None:
    """A failed file operation in one line, naming the file, the option that chose its folder and what
    to do; None for an error without a file (not one the user fixes by a path)."""
    if err.filename is None or err.errno is None:
        return None
    path = Path(os.fsdecode(err.filename)).absolute()
    folders = [("--out", recipe.out.parent)]
    folders += [(f"--data.{k}", getattr(recipe.data, k)) for k in ("cache_dir", "root") if getattr(recipe.data, k)]
    # The deepest folder that holds the file: a cache folder inside --out's folder is named as the cache.
    holding = [(flag, Path(folder).absolute()) for flag, folder in folders]
    holding = [(flag, folder) for flag, folder in holding if path.is_relative_to(folder)]
    option = max(holding, key=lambda held: len(held[1].parts))[0] if holding else None
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free some space (or choose another folder) and run again with --resume"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "make it writable, or choose another folder"
    else:
        advice = "check the path"
    where = f" (in {option})" if option else ""
    return f"{path}{where}: {err.strerror}; {advice}"


def save_run_config(recipe: Any, folder: str | os.PathLike) -> Path:
    """The resolved recipe as YAML in ``<folder>/config.yaml``, written before the run trains."""
    return write_text(Path(folder) / CONFIG_NAME, yaml.safe_dump(_plain(recipe), sort_keys=False))


def load_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A run's saved recipe (``<folder>/config.yaml``) as a nested dict of plain values."""
    path = Path(folder) / CONFIG_NAME if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run saved no configuration")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RunError(f"{path}: not a YAML file ({str(err).splitlines()[0]})") from err
    if not isinstance(loaded, dict):
        raise RunError(f"{path}: expected a mapping of options, got {type(loaded).__name__}")
    return loaded


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _started_by_lightning() -> bool:
    """A process Lightning's own launcher started for another device (LOCAL_RANK >= 1 and no external
    launcher): its parent is rank zero's process, which Lightning ends (SIGKILL) when a child exits
    with a non-zero status."""
    launched = ("RANK", "SLURM_PROCID", "TORCHELASTIC_RUN_ID", "JSM_NAMESPACE_RANK")
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0") and not any(k in os.environ for k in launched)


def main(program: Callable[[], Any], prog: str) -> None:
    """Run a program's ``main`` with this process's SIGTERM / SIGINT handling (``runs.signals``).

    An error the user fixes ends it with one line on stderr, ``<prog>: error: ...``: status 2 for an
    option that does not fit, 1 for the rest. A stop asked by SIGTERM or SIGINT ends it with one
    line, ``<prog>: stopped by SIGTERM at epoch E, step S; ... resume with --resume``, and status
    128 + the signal (143, 130).
    """
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    status: int | str = 0
    with signals.installed():
        try:
            program()
        except SIGTERMException:  # Lightning's own stop (a SystemExit of status 0): a stop all the same
            status = _report_stop(Stopped(signal.SIGTERM, "during a training"), prog)
        except Stopped as stopped:
            status = _report_stop(stopped, prog)
        except OptionError as err:
            print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
            status = 2
        except (RunError, FileNotFoundError) as err:
            status = f"{prog}: error: {err}"
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Stop the process group's threads first: left running at exit, they abort the process.
                torch.distributed.destroy_process_group()
    if status:
        sys.exit(status)


def _report_stop(stopped: Stopped, prog: str) -> int:
    """The one line of a stopped run (rank zero's) and its exit status."""
    if is_global_zero():
        print(f"{prog}: {stopped}", file=sys.stderr, flush=True)
    elif stopped.agreed and _started_by_lightning():
        return 0  # every rank stopped alike; rank zero's status (143) is the command's
    return stopped.exit_status
