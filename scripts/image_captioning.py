"""`python scripts/image_captioning.py --help`: the program lives in lightning_modules/tasks/image_captioning.py."""

from lightning_modules.tasks.image_captioning import cli, main  # noqa: F401  (main: for callers with argv)

if __name__ == "__main__":
    cli()
