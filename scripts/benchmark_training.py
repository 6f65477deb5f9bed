"""`python scripts/benchmark_training.py --help`: the program lives in lightning_modules/tasks/benchmark_training.py."""

from lightning_modules.tasks.benchmark_training import cli, main  # noqa: F401  (main: for callers with argv)

if __name__ == "__main__":
    cli()
