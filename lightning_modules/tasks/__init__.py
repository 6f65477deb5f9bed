"""The training programs behind ``scripts/*.py`` and the console commands (``pip install -e .``).

Each module has ``main(argv=None)``; the standard run flags (devices, strategy, precision,
seed, data root, cache, output, resume) come from ``lightning_modules.runs.add_run_args``.
"""
