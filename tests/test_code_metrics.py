"""The official codes' metric variants (eval.code_metrics) against straightforward transcriptions
of the official formulas: RD4AD's test.py (evaluation, compute_pro) and PDD's evaluation.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)
from torch.utils.data import DataLoader
from torchvision import transforms

from adlab.metrics import image_auroc
from adlab.metrics.code_evaluator import CodeMetrics
from adlab.metrics.code_metrics import (
    check_code_metrics,
    pdd_batch_ap,
    pdd_batch_auroc,
    pdd_batch_f1_max,
    pdd_batch_points,
    rd4ad_aupro,
    rd4ad_image_pro,
    rd4ad_mask,
    rd4ad_pixel_auroc,
)


# --- the references: the official code, transcribed with loops ---------------------------------
def ref_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """RD4AD's gt_transforms (Resize((size, size)), ToTensor) on the PIL mask, then > 0.5."""
    gt_transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    gt = gt_transform(Image.fromarray(mask.astype(np.uint8) * 255))
    return (gt[0] > 0.5).numpy()


def ref_label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components (skimage.measure.label's default in 2-D) by flood fill."""
    labels = np.zeros(mask.shape, dtype=int)
    n = 0
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j] and not labels[i, j]:
                n += 1
                stack = [(i, j)]
                labels[i, j] = n
                while stack:
                    y, x = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            v, u = y + dy, x + dx
                            inside = 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1]
                            if inside and mask[v, u] and not labels[v, u]:
                                labels[v, u] = n
                                stack.append((v, u))
    return labels, n


def ref_pro(mask: np.ndarray, amap: np.ndarray, num_th: int = 200) -> float:
    """compute_pro(masks[None], amaps[None]) of RD4AD's test.py, without pandas."""
    amap = amap.astype(np.float64)
    regions, n = ref_label(mask)
    min_th, max_th = amap.min(), amap.max()
    delta = (max_th - min_th) / num_th
    rows = []
    for th in np.arange(min_th, max_th, delta):
        binary = amap > th
        pros = [binary[regions == r].sum() / (regions == r).sum() for r in range(1, n + 1)]
        inverse = 1 - mask.astype(int)
        fpr = np.logical_and(inverse, binary).sum() / inverse.sum()
        rows.append((sum(pros) / len(pros), fpr))
    kept = [(p, f) for p, f in rows if f < 0.3]
    fprs = np.array([f for _, f in kept])
    return auc(fprs / fprs.max(), np.array([p for p, _ in kept]))


def ref_pdd(scores, labels, batch_size=10):
    """PDD's evaluation(): per loader batch, label max and the first image's score."""
    gt_list_sp, pr_list_sp = [], []
    for start in range(0, len(scores), batch_size):
        gt_list_sp.append(int(np.max(labels[start : start + batch_size])))
        pr_list_sp.append(scores[start])
    precision, recall, _ = precision_recall_curve(gt_list_sp, pr_list_sp)
    f1 = 2 * precision * recall / (precision + recall + 1e-8)
    return (
        roc_auc_score(gt_list_sp, pr_list_sp),
        average_precision_score(gt_list_sp, pr_list_sp),
        np.max(f1),
    )


# --- data ----------------------------------------------------------------------------------------
def blobs(rng: np.random.Generator, shape: tuple[int, int], n: int = 3) -> np.ndarray:
    """A mask of n random rectangles (touching, overlapping or diagonal neighbours happen)."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        h, w = rng.integers(1, shape[0] // 3 + 2), rng.integers(1, shape[1] // 3 + 2)
        y, x = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        mask[y : y + h, x : x + w] = True
    return mask


def anomaly_map(rng: np.random.Generator, mask: np.ndarray, quantise: bool = False) -> np.ndarray:
    amap = rng.random(mask.shape) + 0.7 * mask
    if quantise:  # many ties
        amap = np.round(amap * 8) / 8
    return amap.astype(np.float32)


# --- RD4AD -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "size"), [((37, 53), 16), ((10, 12), 32), ((64, 64), 32)])
def test_rd4ad_mask_is_the_official_transform(shape, size):
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = blobs(rng, shape, 4)
        np.testing.assert_array_equal(rd4ad_mask(mask, (size, size)), ref_mask(mask, size))
    # a 2x2 square downsampled by 2 covers exactly half of its output pixels: PIL's 8-bit
    # rounding decides (128 / 255 > 0.5), as in the official code
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 2:4] = True
    np.testing.assert_array_equal(rd4ad_mask(mask, (4, 4)), ref_mask(mask, 4))


@pytest.mark.parametrize("quantise", [False, True])
def test_rd4ad_image_pro_equals_the_official_compute_pro(quantise):
    rng = np.random.default_rng(2 + quantise)
    values = []
    for _ in range(6):
        mask = blobs(rng, (24, 20), int(rng.integers(1, 5)))
        amap = anomaly_map(rng, mask, quantise)
        want = ref_pro(mask.astype(int), amap)
        got = rd4ad_image_pro(amap, mask)
        assert got == pytest.approx(want, abs=1e-9)
        values.append(got)
    assert len({round(v, 6) for v in values}) == len(values)  # the cases differ


def test_rd4ad_pro_differs_from_the_exact_aupro():
    """Per-image FPR and thresholds make RD4AD's PRO blind to score scales that differ between
    images; the exact AUPRO pools all pixels of the test set and is not."""
    from adlab.metrics import aupro

    rng = np.random.default_rng(4)
    masks = np.stack([blobs(rng, (32, 32), 3) for _ in range(4)])
    maps = np.stack([anomaly_map(rng, m) for m in masks])
    shifted = (
        maps * np.array([1, 3, 0.5, 2])[:, None, None] + np.array([0, -1, 2, 0.3])[:, None, None]
    )
    labels = np.ones(4, int)
    assert rd4ad_aupro(shifted, masks, labels) == pytest.approx(
        rd4ad_aupro(maps, masks, labels), abs=1e-6
    )
    assert rd4ad_aupro(shifted, masks, labels) - aupro(shifted, masks) > 0.2


def test_rd4ad_image_pro_is_nan_where_the_official_code_fails():
    assert math.isnan(rd4ad_image_pro(np.random.rand(8, 8), np.zeros((8, 8), bool)))  # no region
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    assert math.isnan(rd4ad_image_pro(np.ones((8, 8)), mask))  # constant map


def test_rd4ad_aupro_and_pixel_auroc_over_a_test_set():
    """Masks at ground-truth resolution (48 px), maps at the model's (32 px), normal images with
    empty masks; anomalous ones get a PRO each, averaged."""
    rng = np.random.default_rng(5)
    labels = np.array([0, 1, 1, 0, 1, 1, 0])
    masks = [blobs(rng, (48, 48), 3) if y else np.zeros((48, 48), bool) for y in labels]
    small = [ref_mask(m, 32) for m in masks]
    maps = np.stack([anomaly_map(rng, s) for s in small])
    want_pro = np.mean([ref_pro(s.astype(int), m) for s, m, y in zip(small, maps, labels) if y])
    assert rd4ad_aupro(maps, np.stack(masks), labels) == pytest.approx(want_pro, abs=1e-9)
    gt_px = np.concatenate([s.astype(int).ravel() for s in small])
    want_px = roc_auc_score(gt_px, maps.astype(np.float64).ravel())
    assert rd4ad_pixel_auroc(maps, masks) == pytest.approx(want_px, abs=1e-9)
    assert 0.6 < want_px < 0.99  # a case that discriminates


# --- PDD -----------------------------------------------------------------------------------------
def test_pdd_batch_metrics_by_hand():
    """Batch 1: nine normals and one anomaly, first score 0.1; batch 2: ten normals, first score
    0.9. The batch-level AUROC is 0 (one positive point below one negative), the exact one 1."""
    scores = np.r_[0.1, np.full(8, 0.2), 0.95, 0.9, np.full(9, 0.3)].astype(np.float32)
    labels = np.r_[np.zeros(9), 1, np.zeros(10)].astype(int)
    assert image_auroc(scores, labels) == 1.0
    assert pdd_batch_auroc(scores, labels) == 0.0
    assert pdd_batch_ap(scores, labels) == 0.5
    assert pdd_batch_f1_max(scores, labels) == pytest.approx(2 / 3)


@pytest.mark.parametrize("n", [47, 60, 103])
def test_pdd_batch_metrics_equal_the_official_evaluation(n):
    rng = np.random.default_rng(n)
    # normal first and anomalous last, as class folders are read; one anomaly among the
    # normals makes the first batch positive, one normal among the anomalies changes nothing
    labels = (np.arange(n) >= n // 2 + 5).astype(int)
    labels[rng.integers(0, 10)] = 1
    labels[rng.integers(n // 2 + 5, n)] = 0
    scores = (rng.random(n) + 0.3 * labels).astype(np.float32)
    want = ref_pdd(scores, labels)
    assert pdd_batch_auroc(scores, labels) == pytest.approx(want[0], abs=1e-12)
    assert pdd_batch_ap(scores, labels) == pytest.approx(want[1], abs=1e-12)
    assert pdd_batch_f1_max(scores, labels) == pytest.approx(want[2], abs=1e-7)
    assert pdd_batch_auroc(scores, labels, batch_size=1) == image_auroc(scores, labels)


# --- streaming, as a test phase feeds it ---------------------------------------------------------
def test_streaming_equals_the_functions_over_uneven_batches():
    rng = np.random.default_rng(7)
    n = 23
    labels = (np.arange(n) >= 12).astype(int)
    labels[14] = 0
    masks = [blobs(rng, (40, 36), 2) if y else np.zeros((40, 36), bool) for y in labels]
    maps = np.stack([anomaly_map(rng, rd4ad_mask(m, (32, 32))) for m in masks])
    scores = maps.reshape(n, -1).max(axis=1)
    streaming = CodeMetrics(["rd4ad", "pdd"])
    for start in range(0, n, 7):  # adlab's test batches need not be PDD's batches of 10
        part = slice(start, start + 7)
        streaming.update(torch.from_numpy(maps[part]), scores[part], labels[part], masks[part])
    got = streaming.compute()
    assert got["code_rd4ad/pixel_auroc"] == pytest.approx(rd4ad_pixel_auroc(maps, masks), 1e-12)
    assert got["code_rd4ad/aupro"] == pytest.approx(rd4ad_aupro(maps, masks, labels), 1e-12)
    assert got["code_rd4ad/image_auroc"] == pytest.approx(image_auroc(scores, labels), 1e-12)
    assert got["code_pdd/image_auroc"] == pytest.approx(ref_pdd(scores, labels)[0], 1e-12)
    assert set(got) == {
        "code_rd4ad/pixel_auroc",
        "code_rd4ad/aupro",
        "code_rd4ad/image_auroc",
        "code_pdd/image_auroc",
        "code_pdd/image_ap",
        "code_pdd/image_f1_max",
    }
    assert streaming.compute() == got  # a second compute gives the same numbers


def order_test_set():
    """57 images (masks at 45x38, maps at 24x24, half of them quantised) whose PDD batches mix
    classes and whose RD4AD image AUROC is below 1."""
    rng = np.random.default_rng(11)
    n = 57
    labels = (np.arange(n) >= 25).astype(int)
    labels[[3, 31]] = [1, 0]
    masks = [blobs(rng, (45, 38), 2) if y else np.zeros((45, 38), bool) for y in labels]
    maps = np.stack(
        [anomaly_map(rng, rd4ad_mask(m, (24, 24)), i % 2 == 0) for i, m in enumerate(masks)]
    )
    maps = (maps * rng.uniform(0.6, 1.4, n)[:, None, None].astype(np.float32)).astype(np.float32)
    noise = rng.random(n).astype(np.float32) * 0.5
    scores = (maps.reshape(n, -1).max(axis=1) * 0.5 + noise).astype(np.float32)
    return maps, scores, labels, np.stack(masks)[:, None]


# CodeMetrics' results on order_test_set before it became a torchmetrics Metric (the plain class)
BEFORE = {
    "code_rd4ad/pixel_auroc": 0.9196987781460437,
    "code_rd4ad/aupro": 0.8169626300652107,
    "code_rd4ad/image_auroc": 0.9255583126550868,
    "code_pdd/image_auroc": 0.8,
    "code_pdd/image_ap": 0.9666666666666667,
    "code_pdd/image_f1_max": 0.9090909090909091,
}


def test_the_metric_gives_the_numbers_of_the_plain_class_and_restores_the_order():
    """On one process: the same numbers as before, bit for bit, with or without `index`; fed out
    of order with each image's index, the test order is restored (PDD's points are its)."""
    maps, scores, labels, masks = order_test_set()
    cuts = [0, 6, 19, 20, 40, 57]
    plain, indexed = CodeMetrics(["rd4ad", "pdd"]), CodeMetrics(["rd4ad", "pdd"])
    for a, b in zip(cuts[:-1], cuts[1:]):
        plain.update(torch.from_numpy(maps[a:b]), scores[a:b], labels[a:b], masks[a:b])
        indexed.update(maps[a:b], scores[a:b], labels[a:b], masks[a:b], torch.arange(a, b))
    assert plain.compute() == BEFORE and indexed.compute() == BEFORE
    assert plain.compute() == BEFORE  # a second compute (on the sorted pixels) is the same
    shuffled = CodeMetrics(["rd4ad", "pdd"])
    perm = np.random.default_rng(3).permutation(57)
    for part in np.array_split(perm, 4):
        shuffled.update(maps[part], scores[part], labels[part], masks[part], part)
    assert shuffled.compute() == BEFORE
    unsorted_points = pdd_batch_points(scores[perm], labels[perm])[0]
    assert not np.array_equal(unsorted_points, pdd_batch_points(scores, labels)[0])
    shuffled.reset()
    shuffled.update(maps[:20], scores[:20], labels[:20], masks[:20], np.arange(20))
    with pytest.raises(ValueError, match="index was given for some batches"):
        shuffled.update(maps[20:], scores[20:], labels[20:], masks[20:])
    with pytest.raises(ValueError, match="masks was given for some batches"):
        shuffled.update(maps[20:], scores[20:], labels[20:], None, np.arange(20, 57))


def test_rd4ad_variants_need_masks_and_unknown_names_fail():
    only_images = CodeMetrics(["rd4ad", "pdd"])
    only_images.update(np.random.rand(20, 8, 8), np.arange(20.0), np.r_[np.zeros(10), np.ones(10)])
    assert set(only_images.compute()) == {
        "code_pdd/image_auroc",
        "code_pdd/image_ap",
        "code_pdd/image_f1_max",
    }
    assert check_code_metrics(["pdd", "rd4ad", "pdd"]) == ("pdd", "rd4ad")
    with pytest.raises(
        ValueError, match=r"eval.code_metrics=\['rd4ad', 'patchcore'\].*\[rd4ad,pdd\]"
    ):
        check_code_metrics(["rd4ad", "patchcore"])


def test_a_test_phase_writes_code_metrics_beside_the_exact_ones():
    """trainer.test of a tiny RD4AD with eval.code_metrics: test_results and the logged metrics
    carry code_rd4ad/* and code_pdd/* next to the exact metrics (which stay as they are)."""
    import functools

    from adlab.methods.rd4ad import RD4AD
    from adlab.models.fusion.ocbe import OCBE
    from adlab.models.students.rd_decoder import ReverseDecoder
    from adlab.models.teachers.timm_encoder import TimmEncoder

    def method(code):
        torch.manual_seed(0)
        return RD4AD(
            teacher=TimmEncoder("resnet18", pretrained=False),
            fusion=functools.partial(OCBE),
            student=functools.partial(ReverseDecoder),
            optimizer={"lr": 0.005},
            evaluation={"code_metrics": code},
        )

    rng = np.random.default_rng(0)
    labels = [0] * 10 + [1] * 2  # PDD's batches of 10: one normal point, one anomalous
    batches = []
    for start in range(0, 12, 4):
        ys = labels[start : start + 4]
        masks = [blobs(rng, (48, 48), 2) if y else np.zeros((48, 48), bool) for y in ys]
        batches.append(
            {
                "image": torch.rand(4, 3, 64, 64),
                "label": torch.tensor(ys),
                "mask": torch.from_numpy(np.stack(masks)[:, None].astype(np.uint8)),
                "path": [f"{start + i}.png" for i in range(4)],
                "category": ["x"] * 4,
            }
        )
    results = []
    for code in ([], ["rd4ad", "pdd"]):
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        m = method(code)
        logged = trainer.test(m, dataloaders=DataLoader(batches, batch_size=None), verbose=False)[0]
        results.append(m.test_results)
    exact, both = results
    assert {k: both[k] for k in exact} == exact
    assert "test/code_rd4ad/aupro" in logged and "test/code_pdd/image_auroc" in logged
    assert 0.0 <= both["code_rd4ad/aupro"] <= 1.0 and both["code_rd4ad/aupro"] != both["aupro"]
    with pytest.raises(ValueError, match="eval.code_metrics"):
        method(["rd4ad_official"])
