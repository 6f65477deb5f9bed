"""Run support shared by every training program, written once, one job per module.

- ``errors``: the errors a user fixes (``RunError`` and its kinds); importable on their own,
  without the command-line layer or Lightning;
- ``ranks``: this process's global rank, rank-zero output, seeding;
- ``storage``: atomic writes, strict JSON, safe (``weights_only``) loading of torch files, and
  ``RunFolder``, which publishes a run's folder all at once;
- ``training``: the Trainer factory and its callbacks (random state in checkpoints, the
  non-finite-loss stop), checkpoints, loggers, ``fit`` with resume, ``fit_best`` (train one model
  and keep its best epoch), metrics read back from the logs;
- ``cli``: the command-line support (option types, the standard flags, one-line errors);
- ``record``: the run record written into every ``results.json``.
"""
