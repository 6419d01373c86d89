"""Exact PRO curve and AUPRO (Bergmann et al., IJCV 2021; shared/METHODS.md "Metrics").

Regions are 8-connected components of each ground-truth mask. At every distinct threshold t,
FPR(t) = normal pixels >= t / all normal pixels of the test set and PRO(t) = mean over all
regions of the region's fraction >= t. Between two distinct anomalous scores only FPR moves, so the
curve is the polyline through, per distinct anomalous score v (descending), the two points
(FPR(> v), PRO before v) and (FPR(>= v), PRO at v); the thresholds at purely normal scores lie on
the horizontal runs between them. That polyline is exactly the all-thresholds curve, with (0, 0)
prepended, cut at the FPR limit by linear interpolation; AUPRO is its trapezoid area / limit.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from adlab.metrics.inputs import ArrayLike, maps_and_masks
from adlab.metrics.ranking import Ranked, degenerate, rank, sort_chunks

# 8-connectivity within each image and no connection across the batch axis.
_STRUCTURE_8_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8_PER_IMAGE[1] = True


def check_fpr_limit(fpr_limit: float) -> float:
    limit = float(fpr_limit)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit}. The usual value is 0.3.")
    return limit


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of (N, H, W) or (H, W) bool masks; ids 1..n, unique across images."""
    if masks.ndim == 2:
        return ndimage.label(masks, structure=np.ones((3, 3), dtype=bool))
    return ndimage.label(masks, structure=_STRUCTURE_8_PER_IMAGE)


def region_weights(region_ids: np.ndarray, n_regions: int) -> np.ndarray:
    """Per anomalous pixel, 1 / size of its region (ids 1..n_regions); PRO = cumsum / n_regions."""
    sizes = np.bincount(region_ids, minlength=n_regions + 1)
    inv = np.zeros(sizes.size, dtype=np.float64)
    inv[1:] = 1.0 / np.maximum(sizes[1:], 1)
    return inv[region_ids]


def curve_from(r: Ranked, n_regions: int, fpr_limit: float) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) float64 polyline from (0, 0) to the FPR limit; empty when undefined."""
    limit = check_fpr_limit(fpr_limit)
    if degenerate(r, "aupro") or r.weight is None or n_regions == 0:
        return np.zeros(0), np.zeros(0)
    pro = np.cumsum(r.weight) / n_regions
    pro_before = np.r_[0.0, pro[:-1]]
    fpr = np.empty(2 * r.values.size + 2)
    ys = np.empty_like(fpr)
    fpr[0], ys[0] = 0.0, 0.0
    fpr[1:-1:2], ys[1:-1:2] = r.neg_gt / r.n_neg, pro_before
    fpr[2:-1:2], ys[2:-1:2] = r.neg_ge / r.n_neg, pro
    fpr[-1], ys[-1] = 1.0, pro[-1]  # the lowest thresholds add only normal pixels
    keep = np.r_[True, (np.diff(fpr) != 0) | (np.diff(ys) != 0)]
    fpr, ys = fpr[keep], ys[keep]
    k = int(np.searchsorted(fpr, limit, side="right"))  # fpr[:k] <= limit
    if k < fpr.size and fpr[k - 1] < limit:
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], ys[k - 1], ys[k]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        return np.r_[fpr[:k], limit], np.r_[ys[:k], y_lim]
    return fpr[:k], ys[:k]


def area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under the cut curve divided by the limit (NaN for an empty curve)."""
    if fpr.size == 0:
        return float("nan")
    return float(np.trapezoid(pro, fpr) / check_fpr_limit(fpr_limit))


def split_pixels(
    maps: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Normal-pixel scores, anomalous-pixel scores, their region ids (1..n) and n."""
    labels, n = label_regions(masks)
    return maps[~masks], maps[masks], labels[masks], int(n)


def ranked_pixels(maps: np.ndarray, masks: np.ndarray) -> tuple[Ranked, int]:
    """Ranked statistics of all pixels with PRO weights, and the number of regions."""
    neg, pos, ids, n = split_pixels(maps, masks)
    return rank(sort_chunks([neg]), pos, region_weights(ids, n)), n


def pro_curve(
    maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve (fpr, pro), float64, from (0, 0) to fpr_limit.

    maps: (N, H, W) float anomaly maps; masks: (N, H, W) bool/0-1 ground truth of the same shape.
    """
    check_fpr_limit(fpr_limit)
    r, n = ranked_pixels(*maps_and_masks(maps, masks))
    return curve_from(r, n, fpr_limit)


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to fpr_limit, divided by fpr_limit (in [0, 1]).

    NaN with a warning when the masks have no anomalous or no normal pixel.
    """
    fpr, pro = pro_curve(maps, masks, fpr_limit)
    return area(fpr, pro, fpr_limit)
