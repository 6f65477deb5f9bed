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
back); ``--resume`` reads it, so a rerun needs no flags but ``--out`` and ``--resume``.
Presets (``--quick``, ``--overfit``) are partial configs applied first, so options given
explicitly always win. ``main`` ends a run in one line on an error the user fixes.
"""

# No ``from __future__ import annotations`` here: the recipes' fields keep real types, which the tasks'
# recipes inherit and tools read (jsonargparse, the API reference).
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings
from jsonargparse.typing import register_type

from lightning_modules.runs.errors import RunError
from lightning_modules.runs.storage import CONFIG_NAME, RunFolder, write_text

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
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn, ..."""
    num_nodes: PositiveInt = 1
    """machines (with torchrun or SLURM, see the README)"""
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed, 16-mixed, ..."""
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
        parser = ArgumentParser(prog=self.prog, description=self.description)
        commands = parser.add_subcommands(dest="command")
        fit = ArgumentParser(description=self.recipe.__doc__)
        fit.add_argument("--config", action=ActionConfigFile, help="a config file (YAML); later options win")
        fit.add_class_arguments(self.recipe)
        commands.add_subcommand("fit", fit, help="train (the recipe below; --print_config shows it resolved)")
        if self.predict_options is not None:
            predict = ArgumentParser(description=self.predict_options.__doc__)
            predict.add_class_arguments(self.predict_options)
            predict.add_argument("images", nargs="+", type=Path, help="image files, one result line each")
            commands.add_subcommand("predict", predict, help="apply a trained checkpoint to image files")
        return parser

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
        is read first, so options given explicitly in this command still win."""
        argv = self.expand(sys.argv[1:] if argv is None else list(argv))
        parser = self.parser()
        if argv and argv[0] == "fit" and "--resume=true" in argv:
            saved = self.saved_config(argv, parser)
            if saved is not None:
                argv = [argv[0], "--config", str(saved), *argv[1:]]
        cfg = parser.instantiate(parser.parse_args(argv))
        section = cfg[cfg.command]
        if cfg.command == "predict":
            names = [f.name for f in fields(self.predict_options)]
            return "predict", (self.predict_options(**{k: section[k] for k in names}), section["images"])
        try:  # a recipe checks how its options go together in __post_init__
            recipe = self.recipe(**{f.name: section[f.name] for f in fields(self.recipe)})
        except ValueError as err:
            parser.error(f"fit: {err}")
        if recipe.out is None and self.default_out is not None:
            recipe.out = self.default_out(recipe)
        recipe.out = Path(recipe.out).resolve()
        return "fit", recipe

    def saved_config(self, argv: list[str], parser: ArgumentParser) -> Path | None:
        """The config.yaml that the interrupted run in --out saved, where there is one. --out is read
        from the command (the rest of the recipe may be in the file only), else from its default."""
        out = next((a.split("=", 1)[1] for a in argv if a.startswith("--out=")), None)
        if out is None and "--out" in argv[:-1]:
            out = argv[argv.index("--out") + 1]
        if out is None:
            _, recipe = self.parse([a for a in argv if a != "--resume=true"])
            out = recipe.out
        saved = RunFolder(out, resume=True).work / CONFIG_NAME
        return saved if saved.is_file() else None

    def run(self, argv: Sequence[str] | None = None) -> Any:
        command, value = self.parse(argv)
        if command == "fit":
            return self.fit(value)
        options, images = value
        return self.predict(options, images)


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


def main(program: Callable[[], Any], prog: str) -> None:
    """Run a program's ``main``; an error the user fixes ends it with one line on stderr and status 1."""
    try:
        program()
    except (RunError, FileNotFoundError) as err:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Stop the process group's threads first: left running at exit, they abort the process.
            torch.distributed.destroy_process_group()
        sys.exit(f"{prog}: error: {err}")
