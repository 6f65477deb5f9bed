"""The shared run support: run folders, atomic writes, sharded batches, logged metrics, the scripts' defaults."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lightning_modules import runs
from lightning_modules.data.common import ShardedBatchSampler
from lightning_modules.data.flickr8k import LengthBucketBatchSampler

# --------------------------------------------------------------------------- run folders and atomic writes


def test_run_folder_publishes_all_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"old": true}')
    (out / "stale.png").write_text("from the previous run")
    with runs.RunFolder(out) as run:
        runs.write_json(run.work / "results.json", {"new": True})
        # While the run is going, the previous results stay whole and untouched.
        assert json.loads((out / "results.json").read_text()) == {"old": True}
    assert json.loads((out / "results.json").read_text()) == {"new": True}
    assert not (out / "stale.png").exists(), "old and new files mixed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_run_leaves_previous_results_and_its_partial_folder(tmp_path):
    out = tmp_path / "run"
    with runs.RunFolder(out) as run:
        runs.write_text(run.work / "results.json", "first")
    with pytest.raises(RuntimeError):
        with runs.RunFolder(out) as run:
            runs.write_text(run.work / "results.json", "second, half done")
            raise RuntimeError("killed")
    assert (out / "results.json").read_text() == "first"
    assert (run.work / "results.json").read_text() == "second, half done"
    # --resume keeps the partial folder (with its checkpoints); a fresh run clears it.
    with runs.RunFolder(out, resume=True) as again:
        assert (again.work / "results.json").exists()
    with runs.RunFolder(out) as fresh:
        assert not (fresh.work / "results.json").exists()
    assert not (out / "results.json").exists()


def test_run_folder_refuses_to_replace_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "reports" / "other_task").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a run folder"):
        with runs.RunFolder(tmp_path / "reports"):
            pass
    assert (tmp_path / "reports" / "other_task").is_dir()


def test_write_json_is_strict_and_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ValueError):
        runs.write_json(tmp_path / "bad.json", {"loss": math.nan})
    assert list(tmp_path.iterdir()) == []
    runs.write_json(tmp_path / "ok.json", {"loss": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["ok.json"]


def test_only_global_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not runs.is_global_zero()
    with runs.RunFolder(tmp_path / "run") as run:
        pass
    assert not run.work.exists() and not (tmp_path / "run").exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # rank zero of the second machine is not global rank zero
    assert not runs.is_global_zero()
    monkeypatch.setenv("RANK", "0")
    assert runs.is_global_zero()


# --------------------------------------------------------------------------- sharded batches


@pytest.mark.parametrize("size,batch,world", [(50, 4, 2), (103, 8, 3), (10, 2, 4)])
def test_ranks_split_each_global_batch(size, batch, world):
    ranks = [ShardedBatchSampler(size, batch, shuffle=True, seed=3, num_replicas=world, rank=r) for r in range(world)]
    single = ShardedBatchSampler(size, batch * world, shuffle=True, seed=3)
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0])  # equal counts
    for step, joint in enumerate(single):
        if len(joint) < world:
            continue  # too small to share: dropped
        parts = [per_rank[r][step] for r in range(world)]
        assert sum(parts, []) == joint, "the ranks' batches together are the one-process batch"
        assert all(parts)
    seen = [i for b in per_rank for batch_ in b for i in batch_]
    assert len(seen) == len(set(seen)) >= size - world + 1  # distinct samples, almost all of them


def test_epochs_reshuffle_alike_on_every_rank_and_resume_skips():
    a, b = (
        ShardedBatchSampler(20, 2, seed=1, num_replicas=2, rank=0),
        ShardedBatchSampler(20, 2, seed=1, num_replicas=2, rank=1),
    )
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    second = list(a)
    assert first != second
    assert not {i for x in second for i in x} & {i for x in list(b) for i in x}
    a.skip_batches(1, 3)
    assert list(a) == second[3:]
    assert list(a) == second  # the skip applies once
    unshuffled = ShardedBatchSampler(6, 2, shuffle=False)
    assert list(unshuffled) == [[0, 1], [2, 3], [4, 5]]


def test_length_buckets_are_sharded_too():
    torch.manual_seed(0)
    lengths = torch.randint(3, 20, (103,))
    ranks = [LengthBucketBatchSampler(lengths, 4, shuffle=True, pool=4, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0])
    together = LengthBucketBatchSampler(lengths, 8, shuffle=True, pool=4, seed=0)
    assert [x + y for x, y in zip(*batches)] == [b for b in together if len(b) >= 2]


# --------------------------------------------------------------------------- logs and defaults


def test_read_metrics_merges_the_attempts_of_a_resumed_run(tmp_path):
    for version, rows in ((0, ["0,0.5,9,,", "0,,9,0.7,0.4"]), (1, ["1,0.3,19,,", "1,,19,0.8,0.35"])):
        folder = tmp_path / "logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("epoch,train_loss,step,val_acc,val_loss\n" + "\n".join(rows) + "\n")
    history = runs.read_metrics(tmp_path)
    assert history == [
        {"epoch": 1, "train_loss": 0.5, "val_acc": 0.7, "val_loss": 0.4},
        {"epoch": 2, "train_loss": 0.3, "val_acc": 0.8, "val_loss": 0.35},
    ]


def test_scripts_write_under_runs_by_default_never_reports():
    from lightning_modules.tasks import benchmark_training, digit_classification, image_captioning, transfer_learning

    outs = [
        digit_classification.parse_args(["--model", "cnn"]).out,
        transfer_learning.parse_args([]).out,
        image_captioning.parse_args([]).out,
        image_captioning.parse_args(["--overfit", "--cell", "lstm"]).out,
        benchmark_training.parse_args([]).out,
    ]
    for out in outs:
        assert out.is_relative_to(runs.RUNS_DIR), out
    assert outs[3].name == "overfit_lstm"


@pytest.mark.parametrize(
    "module", ["digit_classification", "transfer_learning", "image_captioning", "benchmark_training"]
)
def test_every_script_has_the_standard_flags(module, capsys):
    import importlib

    task = importlib.import_module(f"lightning_modules.tasks.{module}")
    with pytest.raises(SystemExit):
        task.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--accelerator",
        "--devices",
        "--strategy",
        "--num-nodes",
        "--precision",
        "--seed",
        "--batch-size",
        "--num-workers",
        "--data-root",
        "--cache-dir",
        "--out",
        "--resume",
    ):
        assert flag in text, f"{module}: {flag}"
