"""`python scripts/image_captioning.py --help`: the program is lightning_modules/tasks/image_captioning.py
(the console command `customops-captioning`)."""

from lightning_modules.tasks.image_captioning import cli, main

__all__ = ["cli", "main"]  # main(argv): for callers in Python

if __name__ == "__main__":
    cli()
