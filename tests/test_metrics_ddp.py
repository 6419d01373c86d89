"""AnomalyEvaluator and CodeMetrics under torch.distributed (2 gloo processes, no Lightning): the
states of both ranks are concatenated, so every rank computes the metrics of the whole set, equal
to one process's (CodeMetrics in test order, by each image's index); and ResumableBatchSampler
shards by rank (training padded, evaluation exact)."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adlab.data.resumable import ResumableBatchSampler
from adlab.metrics import AnomalyEvaluator
from adlab.metrics.code_evaluator import CodeMetrics
from adlab.metrics.code_metrics import pdd_metrics

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


def make_code_set(n: int = 45, size: int = 12):
    """Normals first, then anomalies with a mask (at 16 px, maps at 12 px): PDD's batches of 10
    in this order are 2 normal and 3 anomalous points."""
    g = torch.Generator().manual_seed(9)
    labels = (torch.arange(n) >= 20).long()
    masks = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    for i in range(20, n):
        y, x = torch.randint(0, 11, (2,), generator=g).tolist()
        masks[i, 0, y : y + 5, x : x + 4] = 1
    small = torch.nn.functional.interpolate(masks.float(), size=(size, size))[:, 0]
    maps = torch.rand(n, size, size, generator=g) + 0.3 * small
    maps = maps * (0.7 + 0.6 * torch.rand(n, 1, 1, generator=g))  # image maxima overlap
    scores = 0.5 * maps.flatten(1).amax(1) + 0.5 * torch.rand(n, generator=g)
    return maps, scores, labels, masks


def code_metrics(indices: list[int], with_index: bool = True) -> CodeMetrics:
    """CodeMetrics fed `indices` in batches of 4, with each image's index or without."""
    maps, scores, labels, masks = make_code_set()
    cm = CodeMetrics(["rd4ad", "pdd"])
    for a in range(0, len(indices), 4):
        i = indices[a : a + 4]
        cm.update(maps[i], scores[i], labels[i], masks[i], torch.tensor(i) if with_index else None)
    return cm


def worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        eval_shard = [b for batch in ResumableBatchSampler(range(14), 3, False, even=False)
                      for b in batch]  # fmt: skip
        train_shard = [b for batch in ResumableBatchSampler(range(13), 4, False) for b in batch]
        ev = evaluate(eval_shard)
        pooled = ev.compute()
        by_category = ev.compute_by_category()
        code_shard = [b for batch in ResumableBatchSampler(range(45), 4, False, even=False)
                      for b in batch]  # fmt: skip
        code = code_metrics(code_shard).compute()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            positional = code_metrics(code_shard, with_index=False).compute()
        warned = any("without `index`" in str(w.message) for w in caught)
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump((eval_shard, train_shard, pooled, by_category, ev.categories), f)
            pickle.dump((code_shard, code, positional, warned), f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_compute_the_metrics_of_the_whole_set(tmp_path):
    out = str(tmp_path / "result")
    init = f"file://{tmp_path / 'store'}"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(2, init, out), nprocs=2, join=True)
    got, code = [], []
    for rank in range(2):
        with open(f"{out}.{rank}", "rb") as f:
            got.append(pickle.load(f))
            code.append(pickle.load(f))
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
    # CodeMetrics: the gathered images are put back in test order, so PDD's batch-level points
    # (and everything else) are the single-process ones; without `index` the strided shards of
    # ResumableBatchSampler still interleave back into that order (with a warning)
    expected_code = code_metrics(list(range(45))).compute()
    assert len(expected_code) == 6 and 0.0 < expected_code["code_pdd/image_auroc"] < 1.0
    assert code[0][0] == list(range(0, 45, 2)) and code[1][0] == list(range(1, 45, 2))
    for _, values, positional, warned in code:
        assert values == pytest.approx(expected_code, abs=1e-12)
        assert positional == pytest.approx(expected_code, abs=1e-12) and warned
    # rank order alone (rank 0's images, then rank 1's) would give other PDD points
    maps, scores, labels, _ = make_code_set()
    rank_order = code[0][0] + code[1][0]
    naive = pdd_metrics(scores[rank_order].numpy(), labels[rank_order].numpy().astype(bool))
    assert naive["code_pdd/image_auroc"] != pytest.approx(expected_code["code_pdd/image_auroc"])
