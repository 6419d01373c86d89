"""Streaming evaluation: methods call update() per test batch and compute() once at the end.

Per batch, maps are brought to the evaluation resolution, each mask's 8-connected regions are
labelled, and only flat arrays are kept: float32 scores of normal pixels, float32 scores of
anomalous pixels and their int32 region ids. No full-resolution mask is stored, so memory is
about 4 bytes per pixel (plus 4 per anomalous pixel). compute() sorts the normal scores once and
derives every pixel metric and the PRO curve from that one sort (see ranking.py, pro.py).

Multi-class test sets (Uni-Medical, MVTec with category=all) pass each image's category: pixels are
kept per category, so compute_by_category() gives each class's metrics from the same sorted
arrays that the pooled compute() ranks together, with no second copy and no second sort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from adlab.metrics.curve_io import save_curve
from adlab.metrics.functional import ranked_scores
from adlab.metrics.inputs import ArrayLike, as_binary, as_scores, scores_and_labels
from adlab.metrics.pro import area, check_fpr_limit, curve_from, label_regions, region_weights
from adlab.metrics.ranking import (
    ap_from,
    auroc_from,
    f1_max_from,
    f1_max_threshold,
    rank,
    sort_chunks,
)

RESOLUTIONS = ("gt", "model")


def _mask_list(masks: ArrayLike, batch: int) -> list[np.ndarray]:
    """Per-image (H_i, W_i) bool masks from a (B,1,H,W)/(B,H,W) batch or a list of B masks."""
    if isinstance(masks, list | tuple):
        items = [as_binary(m, f"masks[{i}]") for i, m in enumerate(masks)]
    else:
        arr = as_binary(masks, "masks")
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3:
            raise ValueError(f"masks must be (B, H, W) or (B, 1, H, W); got {tuple(arr.shape)}.")
        items = list(arr)
    if len(items) != batch:
        raise ValueError(f"masks holds {len(items)} masks for a batch of {batch} images.")
    out = []
    for i, m in enumerate(items):
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"masks[{i}] must be (H, W) or (1, H, W); got {tuple(m.shape)}.")
        out.append(m)
    return out


def _resize_map(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one (h, w) map or (B, h, w) maps (pixel-centre aligned)."""
    if tuple(m.shape[-2:]) != tuple(size):
        batch = m.reshape(-1, 1, *m.shape[-2:])
        out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        m = out.reshape(*m.shape[:-2], *size)
    return m.numpy()


def _resize_mask(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one (H, W) bool mask."""
    if m.shape == size:
        return m
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.uint8))[None, None]
    return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy().astype(bool)


@dataclass
class _Pixels:
    """The flat pixel arrays of one category; region ids are 1..n_regions within the category."""

    neg: list[np.ndarray] = field(default_factory=list)
    pos: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    n_regions: int = 0
    n_sorted: int = 0  # len(neg) right after the last sort: nothing new to sort

    def add(self, maps: np.ndarray, masks: np.ndarray) -> None:
        regions, n = label_regions(masks)
        self.neg.append(maps[~masks])
        self.pos.append(maps[masks])
        ids = regions[masks].astype(np.int64)
        ids += self.n_regions
        self.ids.append(ids.astype(np.int32 if self.n_regions + n < 2**31 else np.int64))
        self.n_regions += int(n)

    def consolidate(self) -> None:
        """Sort the negatives (once per new data) and join positives and ids into one array."""
        if len(self.neg) != self.n_sorted or self.n_sorted == 0:
            self.neg = sort_chunks(self.neg)  # consolidated and sorted; kept for later computes
            self.n_sorted = len(self.neg)
        self.pos = [np.concatenate(self.pos) if self.pos else np.zeros(0, np.float32)]
        self.ids = [np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)]


def _image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    r = ranked_scores(scores, labels)
    return {
        "image_auroc": auroc_from(r, "image_auroc"),
        "image_ap": ap_from(r, "image_ap"),
        "image_f1_max": f1_max_from(r, "image_f1_max"),
    }


def _pixel_metrics(
    neg: list[np.ndarray], pos: np.ndarray, ids: np.ndarray, n_regions: int, fpr_limit: float
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Pixel AUROC / AP / F1-max and AUPRO from sorted negatives; also the PRO curve."""
    rp = rank(neg, pos, region_weights(ids, n_regions))
    curve = curve_from(rp, n_regions, fpr_limit)
    metrics = {
        "pixel_auroc": auroc_from(rp, "pixel_auroc"),
        "pixel_ap": ap_from(rp, "pixel_ap"),
        "pixel_f1_max": f1_max_from(rp, "pixel_f1_max"),
        "aupro": area(*curve, fpr_limit),
    }
    return metrics, curve


class AnomalyEvaluator:
    """Accumulates image scores/labels and pixel maps/masks; computes all metrics exactly.

    eval_resolution: "gt" resizes each map (bilinear) to its mask's size (the published protocol);
    "model" resizes each mask (nearest) to the map's size. fpr_limit: AUPRO integration limit.
    pixel_metrics: False skips all pixel work (image-level metrics only).
    """

    def __init__(
        self,
        eval_resolution: Literal["gt", "model"] = "gt",
        fpr_limit: float = 0.3,
        pixel_metrics: bool = True,
    ) -> None:
        if eval_resolution not in RESOLUTIONS:
            raise ValueError(
                f"eval_resolution must be one of {RESOLUTIONS}; got {eval_resolution!r}."
            )
        self.eval_resolution = eval_resolution
        self.fpr_limit = check_fpr_limit(fpr_limit)
        self.pixel_metrics = bool(pixel_metrics)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (call between test sets)."""
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._categories: list[str] = []
        self._pixels: dict[str, _Pixels] = {}
        self._has_masks: bool | None = None
        self._curve: tuple[np.ndarray, np.ndarray] | None = None
        self._aupro = math.nan

    @property
    def num_images(self) -> int:
        return sum(s.size for s in self._scores)

    @property
    def categories(self) -> list[str]:
        """The categories seen so far, in order of first appearance."""
        return list(dict.fromkeys(self._categories))

    def update(
        self,
        maps: ArrayLike,
        scores: ArrayLike,
        labels: ArrayLike,
        masks: ArrayLike = None,
        categories: Sequence[str] | None = None,
    ) -> None:
        """Add one batch: maps (B, h, w), scores (B,), labels (B,) 0/1, masks None or per image,
        categories None (one class) or one name per image (for compute_by_category)."""
        s, y = scores_and_labels(scores, labels)
        batch = s.size
        cats = [""] * batch if categories is None else [str(c) for c in categories]
        if len(cats) != batch:
            raise ValueError(f"categories holds {len(cats)} names for a batch of {batch} images.")
        has_masks = masks is not None
        if self._has_masks is not None and has_masks != self._has_masks:
            raise ValueError(
                "masks was given for some batches and None for others; a test set must have "
                "masks for every image (use all-zero masks for normal images) or for none."
            )
        if has_masks and self.pixel_metrics:
            m = torch.from_numpy(as_scores(maps, "maps"))
            if m.ndim == 4 and m.shape[1] == 1:
                m = m[:, 0]
            if m.ndim != 3 or m.shape[0] != batch:
                raise ValueError(
                    f"maps must be (B, h, w) with B = {batch} images; got {tuple(m.shape)}."
                )
            mask_list = _mask_list(masks, batch)
            for cat in dict.fromkeys(cats):
                idx = [i for i, c in enumerate(cats) if c == cat]
                part = m if len(idx) == batch else m[idx]
                store = self._pixels.setdefault(cat, _Pixels())
                for pm, gm in self._resized(part, [mask_list[i] for i in idx]):
                    store.add(pm, gm)
        self._has_masks = has_masks
        self._scores.append(s)
        self._labels.append(y)
        self._categories.extend(cats)
        self._curve = None

    def _resized(
        self, m: torch.Tensor, masks: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(maps, masks) groups at the evaluation resolution, same-size images stacked."""
        sizes = {g.shape for g in masks}
        if self.eval_resolution == "gt" and len(sizes) == 1:  # one resize and labelling call
            groups = [(_resize_map(m, masks[0].shape), np.stack(masks))]
        else:
            if self.eval_resolution == "gt":
                pairs = [(_resize_map(mi, gi.shape), gi) for mi, gi in zip(m, masks)]
            else:
                pairs = [
                    (mi.numpy(), _resize_mask(gi, tuple(mi.shape))) for mi, gi in zip(m, masks)
                ]
            if len({g.shape for _, g in pairs}) == 1:
                groups = [(np.stack([p for p, _ in pairs]), np.stack([g for _, g in pairs]))]
            else:
                groups = [(p[None], g[None]) for p, g in pairs]
        return groups

    def compute(self) -> dict[str, float]:
        """image_auroc, image_ap, image_f1_max; plus pixel_* and aupro when masks were given.

        Over the whole test set (all categories pooled), as a single-class set is evaluated."""
        if not self._scores:
            raise RuntimeError("AnomalyEvaluator.compute() called before any update().")
        results = _image_metrics(np.concatenate(self._scores), np.concatenate(self._labels))
        if not (self.pixel_metrics and self._has_masks):
            return results
        stores = list(self._pixels.values())
        for store in stores:
            store.consolidate()
        offsets = np.cumsum([0] + [p.n_regions for p in stores[:-1]])
        pixel, self._curve = _pixel_metrics(
            [part for p in stores for part in p.neg],  # ranked together, never merged
            np.concatenate([p.pos[0] for p in stores]),
            np.concatenate([p.ids[0].astype(np.int64) + o for p, o in zip(stores, offsets)]),
            sum(p.n_regions for p in stores),
            self.fpr_limit,
        )
        self._aupro = pixel["aupro"]
        results.update(pixel)
        return results

    def compute_by_category(self) -> dict[str, dict[str, float]]:
        """The metrics of compute() for each category alone, {category: metrics}.

        Multi-class benchmarks (Uni-Medical, UniAD's MVTec) report these and their mean."""
        if not self._scores:
            raise RuntimeError("AnomalyEvaluator.compute_by_category() called before any update().")
        scores, labels = np.concatenate(self._scores), np.concatenate(self._labels)
        cats = np.asarray(self._categories)
        out = {}
        for cat in self.categories:
            keep = cats == cat
            out[cat] = _image_metrics(scores[keep], labels[keep])
            store = self._pixels.get(cat)
            if self.pixel_metrics and self._has_masks and store is not None:
                store.consolidate()
                pixel, _ = _pixel_metrics(
                    store.neg, store.pos[0], store.ids[0], store.n_regions, self.fpr_limit
                )
                out[cat].update(pixel)
        return out

    def image_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of every image so far: the histogram and worst-case figures use them."""
        if not self._scores:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return np.concatenate(self._scores), np.concatenate(self._labels)

    def image_threshold(self) -> float:
        """The image-score threshold of image_f1_max (score >= it is anomalous); NaN if one class
        is missing."""
        scores, labels = self.image_scores()
        return f1_max_threshold(ranked_scores(scores, labels))

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, pro) of the last compute(), float64, from (0, 0) to fpr_limit."""
        if self._curve is None:
            raise RuntimeError(
                "No PRO curve: call compute() after the last update(), with masks given."
            )
        return self._curve

    def save_pro_curve(
        self, run_dir: str | Path, max_points: int | None = 100_000
    ) -> tuple[Path, Path]:
        """Write pro_curve.csv (thinned to max_points if longer) and pro_curve.png in run_dir."""
        fpr, pro = self.pro_curve()
        return save_curve(run_dir, fpr, pro, self.fpr_limit, self._aupro, max_points)
