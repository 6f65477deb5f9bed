"""`python scripts/digit_classification.py --help`: the program is lightning_modules/tasks/digit_classification.py."""

from lightning_modules.tasks.digit_classification import cli, main  # noqa: F401  (main: for callers with argv)

if __name__ == "__main__":
    cli()
