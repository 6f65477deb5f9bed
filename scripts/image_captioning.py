"""`python scripts/image_captioning.py --help`: the program lives in lightning_modules/tasks/image_captioning.py."""
from lightning_modules.tasks.image_captioning import main

if __name__ == "__main__":
    main()
