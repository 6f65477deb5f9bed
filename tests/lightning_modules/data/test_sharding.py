"""data.sharding: every rank's part of each global batch, reshuffling per epoch, resuming mid-epoch."""

from __future__ import annotations

import pytest

from lightning_modules.data.sharding import ShardedBatchSampler


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
