"""`python scripts/benchmark_training.py --help`: the program lives in lightning_modules/tasks/benchmark_training.py."""
from lightning_modules.tasks.benchmark_training import main

if __name__ == "__main__":
    main()
