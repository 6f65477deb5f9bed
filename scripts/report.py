"""`python scripts/report.py --help`: the program lives in lightning_modules/tasks/report.py."""

from lightning_modules.tasks.report import cli, main  # noqa: F401  (main: for callers with argv)

if __name__ == "__main__":
    cli()
