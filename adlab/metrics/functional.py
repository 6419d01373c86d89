"""Exact image- and pixel-level AUROC, AP and F1-max on numpy arrays or torch tensors.

Definitions match scikit-learn (roc_auc_score, average_precision_score, max F1 over
precision_recall_curve); a set without positives or without negatives gives NaN and a warning.
"""

from __future__ import annotations

import numpy as np

from adlab.metrics.inputs import ArrayLike, maps_and_masks, scores_and_labels
from adlab.metrics.ranking import Ranked, ap_from, auroc_from, f1_max_from, rank, sort_chunks


def _ranked_pixels(maps: ArrayLike, masks: ArrayLike) -> Ranked:
    m, g = maps_and_masks(maps, masks)
    return rank(sort_chunks([m[~g]]), m[g])


def _ranked_images(scores: ArrayLike, labels: ArrayLike) -> Ranked:
    s, y = scores_and_labels(scores, labels)
    return ranked_scores(s, y)


def ranked_scores(scores: np.ndarray, labels: np.ndarray) -> Ranked:
    """Ranked statistics of checked flat float32 scores and bool labels."""
    return rank(sort_chunks([scores[~labels]]), scores[labels])


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """AUROC over all pixels of (N, H, W) maps against (N, H, W) bool/0-1 masks."""
    return auroc_from(_ranked_pixels(maps, masks), "pixel_auroc")


def pixel_ap(maps: ArrayLike, masks: ArrayLike) -> float:
    """Average precision over all pixels."""
    return ap_from(_ranked_pixels(maps, masks), "pixel_ap")


def pixel_f1_max(maps: ArrayLike, masks: ArrayLike) -> float:
    """Best F1 over all thresholds, over all pixels."""
    return f1_max_from(_ranked_pixels(maps, masks), "pixel_f1_max")


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """AUROC of (N,) image scores against (N,) labels, 0 normal / 1 anomalous."""
    return auroc_from(_ranked_images(scores, labels), "image_auroc")


def image_ap(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision of image scores."""
    return ap_from(_ranked_images(scores, labels), "image_ap")


def image_f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Best F1 over all thresholds of image scores."""
    return f1_max_from(_ranked_images(scores, labels), "image_f1_max")
