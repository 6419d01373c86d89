"""Image/pixel AUROC, AP and F1-max against scikit-learn on random, tied and quantised inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adlab.metrics import (
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
)
from adlab.metrics.ranking import sort_chunks, usable_cpus


def sklearn_f1_max(y: np.ndarray, s: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def random_scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[0], y[1] = True, False
    s = rng.normal(size=n) + rng.uniform(0, 2) * y
    if seed % 3 == 0:  # heavy ties, also across classes
        s = np.round(s * 2) / 2
    if seed % 3 == 1:  # very few distinct values
        s = np.round(s).clip(-1, 1)
    return s.astype(np.float32), y


@pytest.mark.parametrize("seed", range(30))
def test_image_metrics_match_sklearn(seed: int) -> None:
    s, y = random_scores(seed, int(np.random.default_rng(seed).integers(5, 400)))
    s64 = s.astype(np.float64)
    assert image_auroc(s, y) == pytest.approx(roc_auc_score(y, s64), abs=1e-9)
    assert image_ap(s, y) == pytest.approx(average_precision_score(y, s64), abs=1e-9)
    assert image_f1_max(s, y) == pytest.approx(sklearn_f1_max(y, s64), abs=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_pixel_metrics_match_sklearn(seed: int) -> None:
    s, y = random_scores(100 + seed, 3 * 24 * 20)
    maps, masks = s.reshape(3, 24, 20), y.reshape(3, 24, 20)
    s64 = s.astype(np.float64)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(y, s64), abs=1e-9)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(y, s64), abs=1e-9)
    assert pixel_f1_max(maps, masks) == pytest.approx(sklearn_f1_max(y, s64), abs=1e-9)


def test_pixel_auroc_large_set_uses_parallel_chunks_exactly() -> None:
    # > 1e6 normal pixels: the negatives are sorted as several chunks and counts are summed
    rng = np.random.default_rng(0)
    maps = np.round(rng.random((40, 160, 160)) * 1000).astype(np.float32)
    masks = rng.random((40, 160, 160)) < 0.02
    maps[masks] += 100
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(y, s), abs=1e-9)


def test_sort_chunks_splits_and_sorts() -> None:
    rng = np.random.default_rng(1)
    chunks = [rng.random(n).astype(np.float32) for n in (700_000, 900_000, 5)]
    expected = np.sort(np.concatenate(chunks))
    parts = sort_chunks([c.copy() for c in chunks], n_parts=2)
    assert len(parts) == 2
    for p in parts:
        assert np.all(np.diff(p) >= 0)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), expected)


def test_sort_chunks_uses_the_jobs_thread_share() -> None:
    # resources.threads sets torch's threads to the job's share: the sort runs as many parts
    chunks = [np.arange(3_000_000, 0, -1, dtype=np.float32)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert len(sort_chunks([chunks[0].copy()])) == 1
        torch.set_num_threads(3)
        parts = sort_chunks([chunks[0].copy()])
    finally:
        torch.set_num_threads(before)
    assert len(parts) == min(3, usable_cpus())
    assert all(np.all(np.diff(p) >= 0) for p in parts)


def test_torch_inputs_and_int_labels() -> None:
    s, y = random_scores(5, 200)
    got = image_auroc(torch.from_numpy(s), torch.from_numpy(y.astype(np.int64)))
    assert got == pytest.approx(roc_auc_score(y, s.astype(np.float64)), abs=1e-9)


def test_single_class_gives_nan_and_warning_naming_the_metric() -> None:
    s = np.arange(6, dtype=np.float32)
    for fn, name in (
        (image_auroc, "image_auroc"),
        (image_ap, "image_ap"),
        (image_f1_max, "image_f1_max"),
    ):
        with pytest.warns(RuntimeWarning, match=name):
            assert np.isnan(fn(s, np.zeros(6, dtype=int)))
        with pytest.warns(RuntimeWarning, match=name):
            assert np.isnan(fn(s, np.ones(6, dtype=int)))
    maps = s.reshape(1, 2, 3)
    with pytest.warns(RuntimeWarning, match="pixel_auroc"):
        assert np.isnan(pixel_auroc(maps, np.zeros((1, 2, 3), dtype=bool)))


def test_bad_inputs_raise_value_error_naming_the_argument() -> None:
    s = np.arange(4, dtype=np.float32)
    with pytest.raises(ValueError, match="labels must be 0"):
        image_auroc(s, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="same length"):
        image_auroc(s, [0, 1, 1])
    with pytest.raises(ValueError, match="scores contains NaN"):
        image_auroc(np.array([0.1, np.nan, 0.3, 0.2]), [0, 1, 1, 0])
    with pytest.raises(ValueError, match="maps contains NaN"):
        pixel_auroc(np.full((1, 2, 2), np.nan), np.eye(2)[None])
    with pytest.raises(ValueError, match="maps contains inf"):
        pixel_auroc(np.full((1, 2, 2), np.inf), np.eye(2)[None])
    with pytest.raises(ValueError, match="maps and masks"):
        pixel_ap(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
