"""`python scripts/transfer_learning.py --help`: the program lives in lightning_modules/tasks/transfer_learning.py."""
from lightning_modules.tasks.transfer_learning import main

if __name__ == "__main__":
    main()
