"""AnomalyEvaluator under torch.distributed (2 gloo processes, no Lightning): the states of both
ranks are concatenated, so every rank computes the metrics of the whole set, equal to one
process's; and ResumableBatchSampler shards by rank (training padded, evaluation exact)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adlab.data.resumable import ResumableBatchSampler
from adlab.metrics import AnomalyEvaluator

pytestmark = pytest.mark.e2e  # starts processes

CATS = ["brain", "liver", "retinal"]


def make_set(n: int = 14, size: int = 16):
    g = torch.Generator().manual_seed(5)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    labels = torch.zeros(n, dtype=torch.long)
    for i in range(1, n, 2):
        y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
        masks[i, 0, y : y + 4, x : x + 3] = True
        labels[i] = 1
    maps = torch.rand(n, size, size, generator=g) + 0.5 * masks[:, 0]
    cats = [CATS[i % 3] for i in range(n)]
    return maps, maps.flatten(1).amax(1), labels, masks, cats


def evaluate(indices: list[int]) -> AnomalyEvaluator:
    maps, scores, labels, masks, cats = make_set()
    ev = AnomalyEvaluator()
    for a in range(0, len(indices), 3):
        i = indices[a : a + 3]
        ev.update(maps[i], scores[i], labels[i], masks[i], [cats[k] for k in i])
    return ev


def worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        eval_shard = [b for batch in ResumableBatchSampler(range(14), 3, False, even=False)
                      for b in batch]  # fmt: skip
        train_shard = [b for batch in ResumableBatchSampler(range(13), 4, False) for b in batch]
        ev = evaluate(eval_shard)
        pooled = ev.compute()
        by_category = ev.compute_by_category()
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump((eval_shard, train_shard, pooled, by_category, ev.categories), f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_compute_the_metrics_of_the_whole_set(tmp_path):
    out = str(tmp_path / "result")
    init = f"file://{tmp_path / 'store'}"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(2, init, out), nprocs=2, join=True)
    got = [pickle.load(open(f"{out}.{rank}", "rb")) for rank in range(2)]
    # evaluation shards: disjoint, uneven, everything exactly once; training shards: padded
    assert got[0][0] == list(range(0, 14, 2)) and got[1][0] == list(range(1, 14, 2))
    assert got[0][1] == [0, 2, 4, 6, 8, 10, 12] and got[1][1] == [1, 3, 5, 7, 9, 11, 0]
    single = evaluate(list(range(14)))
    expected, expected_by_category = single.compute(), single.compute_by_category()
    for _, _, pooled, by_category, categories in got:
        assert pooled == pytest.approx(expected, abs=1e-12)
        assert sorted(categories) == CATS  # in order of first appearance in rank order
        for cat in CATS:
            assert by_category[cat] == pytest.approx(expected_by_category[cat], abs=1e-12)
