"""tasks.benchmark_training: its options checked up front."""

from __future__ import annotations

import pytest

from lightning_modules.tasks import benchmark_training as TASK

BAD_OPTIONS = [
    (["--trainer.limit_train_batches", "0"], '"trainer.limit_train_batches"', "must be a fraction in (0, 1]"),
    (["--trainer.limit_train_batches", "2.5"], '"trainer.limit_train_batches"', "a number of batches must be whole"),
    (["--resume"], "--resume", "nothing to resume"),
]


@pytest.mark.parametrize("argv,key,message", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, key, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.PROGRAM.parse(["fit", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: " in error and key in error, error  # the option named
    assert message in error, error


def test_limit_train_batches_takes_a_count_or_a_fraction():
    _, recipe = TASK.PROGRAM.parse(["fit", "--trainer.limit_train_batches", "20"])
    assert recipe.trainer.limit_train_batches == 20 and isinstance(recipe.trainer.limit_train_batches, int)
    _, recipe = TASK.PROGRAM.parse(["fit", "--trainer.limit_train_batches", "0.5"])
    assert recipe.trainer.limit_train_batches == 0.5
