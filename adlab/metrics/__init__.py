"""Exact anomaly-detection metrics: AUROC, AP, F1-max (image and pixel) and AUPRO.

All functions take numpy arrays or torch tensors; AnomalyEvaluator accumulates per batch.
"""

from adlab.metrics.evaluator import AnomalyEvaluator
from adlab.metrics.functional import (
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
)
from adlab.metrics.pro import aupro, label_regions, pro_curve

__all__ = [
    "AnomalyEvaluator",
    "aupro",
    "image_ap",
    "image_auroc",
    "image_f1_max",
    "label_regions",
    "pixel_ap",
    "pixel_auroc",
    "pixel_f1_max",
    "pro_curve",
]
