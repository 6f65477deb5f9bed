"""tasks.benchmark_training: its options checked up front."""

from __future__ import annotations

import pytest

from lightning_modules.tasks import benchmark_training as TASK

BAD_OPTIONS = [
    (["--limit-train-batches", "0"], "--limit-train-batches: must be a fraction in (0, 1]"),
    (["--limit-train-batches", "2.5"], "--limit-train-batches: a number of batches must be whole"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument " in error or "error: " in error
    assert message in error, error


def test_limit_train_batches_takes_a_count_or_a_fraction():
    assert TASK.parse_args(["--limit-train-batches", "20"]).limit_train_batches == 20
    assert TASK.parse_args(["--limit-train-batches", "0.5"]).limit_train_batches == 0.5
