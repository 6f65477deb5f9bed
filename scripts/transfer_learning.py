"""`python scripts/transfer_learning.py --help`: the program lives in lightning_modules/tasks/transfer_learning.py."""

from lightning_modules.tasks.transfer_learning import cli, main  # noqa: F401  (main: for callers with argv)

if __name__ == "__main__":
    cli()
