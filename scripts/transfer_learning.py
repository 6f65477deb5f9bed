"""`python scripts/transfer_learning.py --help`: the program is lightning_modules/tasks/transfer_learning.py
(the console command `customops-transfer`)."""

from lightning_modules.tasks.transfer_learning import cli, main

__all__ = ["cli", "main"]  # main(argv): for callers in Python

if __name__ == "__main__":
    cli()
