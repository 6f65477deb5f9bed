"""`python scripts/digit_classification.py --help`: the program is lightning_modules/tasks/digit_classification.py
(the console command `customops-digits`)."""

from lightning_modules.tasks.digit_classification import cli, main

__all__ = ["cli", "main"]  # main(argv): for callers in Python

if __name__ == "__main__":
    cli()
