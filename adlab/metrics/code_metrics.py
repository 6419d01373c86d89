"""The official codes' own metric variants, computed beside adlab's exact metrics.

Published numbers come from each paper's evaluation code, which differs from the exact
definitions (shared/METHODS.md, "Metrics"). These plain functions reproduce that code on numpy
arrays or torch tensors, so a run can show how much of a gap to a paper is protocol, not model:

- RD4AD (hq-deng/RD4AD, test.py): pixel AUROC on masks resized to the map's size (PIL bilinear on
  the 0/255 mask, then > 0.5) and PRO per anomalous image (200 thresholds over that image's score
  range, FPR from that image alone, curve cut at FPR < 0.3 and renormalised by its largest FPR),
  averaged over images.
- PDD (OxygenLu/PDD, utils/evaluation.py, single class): each test batch of 10, in loader order,
  contributes one point, the first image's score labelled with the batch's maximum label; AUROC,
  AP and F1-max over those points.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from adlab.metrics.functional import image_ap, image_auroc, image_f1_max, ranked_scores
from adlab.metrics.inputs import (
    ArrayLike,
    as_binary,
    as_labels,
    as_scores,
    scores_and_labels,
    to_numpy,
)
from adlab.metrics.pro import label_regions
from adlab.metrics.ranking import ap_from, auroc_from, f1_max_from, rank, sort_chunks

CODE_METRICS = ("rd4ad", "pdd")
PDD_TEST_BATCH = 10  # the official --val_batch_size
RD4AD_THRESHOLDS = 200  # compute_pro(num_th=200)
RD4AD_FPR_LIMIT = 0.3


def check_code_metrics(names) -> tuple[str, ...]:
    """The requested variants, in order; an unknown name is an error naming the key."""
    chosen = tuple(str(n) for n in (names or ()))
    unknown = [n for n in chosen if n not in CODE_METRICS]
    if unknown:
        raise ValueError(
            f"eval.code_metrics={list(chosen)}: unknown {unknown}; use any of "
            f"{list(CODE_METRICS)} (e.g. eval.code_metrics=[rd4ad,pdd]) or [] for none."
        )
    return tuple(dict.fromkeys(chosen))


def _mask_2d(mask: ArrayLike, name: str = "mask") -> np.ndarray:
    m = as_binary(mask, name)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"{name} must be (H, W) or (1, H, W); got {tuple(m.shape)}.")
    return m


def rd4ad_mask(mask: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """RD4AD's ground truth at (h, w): torchvision's Resize on the PIL mask (bilinear, with PIL's
    antialiasing, on 0/255 values rounded to 8 bits), ToTensor's /255, then > 0.5."""
    m = _mask_2d(mask)
    h, w = int(size[0]), int(size[1])
    image = Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / np.float32(255) > 0.5


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """sklearn.metrics.auc on a monotonic curve: the trapezoid area, whatever the direction."""
    return abs(float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0)))


def rd4ad_image_pro(amap: ArrayLike, mask: ArrayLike, num_th: int = RD4AD_THRESHOLDS) -> float:
    """RD4AD's compute_pro on one image: thresholds np.arange(min, max, (max - min) / num_th),
    binary map = score > threshold, PRO = mean over the image's 8-connected regions, FPR over the
    image's own normal pixels; points with FPR < 0.3 kept, FPR divided by its largest value,
    trapezoid area. NaN where the official code stops or divides by zero (no region, no normal
    pixel, a constant map, fewer than two points or a largest FPR of 0)."""
    a = as_scores(amap, "amap").astype(np.float64)
    m = _mask_2d(mask)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.shape != m.shape:
        raise ValueError(f"amap {a.shape} and mask {m.shape} must have the same shape.")
    regions, n_regions = label_regions(m)
    normal = np.sort(a[~m])
    low, high = float(a.min()), float(a.max())
    if n_regions == 0 or normal.size == 0 or high <= low:
        return math.nan
    thresholds = np.arange(low, high, (high - low) / num_th)
    fpr = (normal.size - np.searchsorted(normal, thresholds, side="right")) / normal.size
    pro = np.zeros(thresholds.size)
    for region in range(1, n_regions + 1):
        values = np.sort(a[regions == region])
        pro += (values.size - np.searchsorted(values, thresholds, side="right")) / values.size
    pro /= n_regions
    keep = fpr < RD4AD_FPR_LIMIT
    x, y = fpr[keep], pro[keep]
    if x.size < 2 or x.max() == 0:
        return math.nan
    return _area(x / x.max(), y)


def rd4ad_aupro(maps: ArrayLike, masks: ArrayLike, labels: ArrayLike) -> float:
    """RD4AD's PRO score: rd4ad_image_pro of every anomalous image (label 1), masks resized to
    the maps' size, averaged over the images where it is defined (the official code would stop
    on the others)."""
    m = _maps(maps)
    y = as_labels(labels)
    if y.size != m.shape[0]:
        raise ValueError(f"labels holds {y.size} labels for {m.shape[0]} maps.")
    gts = _masks(masks, m.shape[0])
    values = [rd4ad_image_pro(mi, rd4ad_mask(g, mi.shape)) for mi, g, yi in zip(m, gts, y) if yi]
    return mean_defined(values)


def rd4ad_pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """RD4AD's pixel AUROC: every pixel of every test image against its mask resized to the
    map's size (rd4ad_mask); roc_auc_score's definition, ties counted half."""
    m = _maps(maps)
    gts = np.stack([rd4ad_mask(g, m.shape[1:]) for g in _masks(masks, m.shape[0])])
    return auroc_from(rank(sort_chunks([m[~gts]]), m[gts]), "code_rd4ad/pixel_auroc")


def pdd_batch_points(
    scores: ArrayLike, labels: ArrayLike, batch_size: int = PDD_TEST_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """PDD's single-class evaluation points: per consecutive batch of `batch_size` test images (the
    last one may be shorter, as the DataLoader's), the first image's score and the batch's maximum
    label. The order must be the test loader's."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
    s, y = scores_and_labels(scores, labels)
    starts = np.arange(0, s.size, int(batch_size))
    if not starts.size:
        return s, y
    return s[starts], np.maximum.reduceat(y, starts)


def pdd_batch_auroc(scores: ArrayLike, labels: ArrayLike, batch_size: int = PDD_TEST_BATCH):
    """PDD's published single-class AUROC (over about N / batch_size batch-level points)."""
    return image_auroc(*pdd_batch_points(scores, labels, batch_size))


def pdd_batch_ap(scores: ArrayLike, labels: ArrayLike, batch_size: int = PDD_TEST_BATCH):
    """PDD's single-class AP (average_precision_score over the batch-level points)."""
    return image_ap(*pdd_batch_points(scores, labels, batch_size))


def pdd_batch_f1_max(scores: ArrayLike, labels: ArrayLike, batch_size: int = PDD_TEST_BATCH):
    """PDD's single-class F1-max over the batch-level points."""
    return image_f1_max(*pdd_batch_points(scores, labels, batch_size))


def pdd_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All three PDD code metrics from ordered scores and labels, under their report names."""
    s, y = pdd_batch_points(scores, labels)
    r = ranked_scores(s, y)
    return {
        "code_pdd/image_auroc": auroc_from(r, "code_pdd/image_auroc"),
        "code_pdd/image_ap": ap_from(r, "code_pdd/image_ap"),
        "code_pdd/image_f1_max": f1_max_from(r, "code_pdd/image_f1_max"),
    }


def _maps(maps: ArrayLike) -> np.ndarray:
    m = as_scores(maps, "maps")
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"maps must be (N, H, W); got {tuple(m.shape)}.")
    return m


def _masks(masks: ArrayLike, n: int) -> list:
    items = list(masks) if isinstance(masks, list | tuple) else list(to_numpy(masks, "masks"))
    if len(items) != n:
        raise ValueError(f"masks holds {len(items)} masks for {n} maps.")
    return items


def mean_defined(values: list[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
