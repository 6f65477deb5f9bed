"""`python scripts/benchmark_training.py --help`: the program is lightning_modules/tasks/benchmark_training.py
(the console command `customops-benchmark-training`)."""

from lightning_modules.tasks.benchmark_training import cli, main

__all__ = ["cli", "main"]  # main(argv): for callers in Python

if __name__ == "__main__":
    cli()
