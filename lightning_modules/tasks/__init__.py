"""The training programs behind ``scripts/*.py`` and the console commands (``pip install -e .``).

Each module has ``main(argv=None)`` and ``cli()`` (the console command); the standard run flags
(devices, strategy, precision, seed, data root, cache, output, resume) come from
``lightning_modules.runs.cli``.
"""
