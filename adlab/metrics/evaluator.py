"""Streaming evaluation: methods call update() per test batch and compute() once at the end.

Per batch, maps are brought to the evaluation resolution, each mask's 8-connected regions are
labelled, and only flat arrays are kept: float32 scores of normal pixels, float32 scores of
anomalous pixels and their int32 global region ids. No full-resolution mask is stored, so memory is
about 4 bytes per pixel (plus 4 per anomalous pixel). compute() sorts the normal scores once and
derives every pixel metric and the PRO curve from that one sort (see ranking.py, pro.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from adlab.metrics.curve_io import save_curve
from adlab.metrics.functional import ranked_scores
from adlab.metrics.inputs import ArrayLike, as_binary, as_scores, scores_and_labels
from adlab.metrics.pro import area, check_fpr_limit, curve_from, label_regions, region_weights
from adlab.metrics.ranking import ap_from, auroc_from, f1_max_from, rank, sort_chunks

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
        self._neg: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._n_regions = 0
        self._n_sorted = 0  # len(self._neg) right after the last sort: nothing new to sort
        self._has_masks: bool | None = None
        self._curve: tuple[np.ndarray, np.ndarray] | None = None
        self._aupro = math.nan

    @property
    def num_images(self) -> int:
        return sum(s.size for s in self._scores)

    def update(
        self, maps: ArrayLike, scores: ArrayLike, labels: ArrayLike, masks: ArrayLike = None
    ) -> None:
        """Add one batch: maps (B, h, w), scores (B,), labels (B,) 0/1, masks None or per image."""
        s, y = scores_and_labels(scores, labels)
        batch = s.size
        has_masks = masks is not None
        if self._has_masks is not None and has_masks != self._has_masks:
            raise ValueError(
                "masks was given for some batches and None for others; a test set must have "
                "masks for every image (use all-zero masks for normal images) or for none."
            )
        if has_masks and self.pixel_metrics:
            self._add_pixels(maps, _mask_list(masks, batch))
        self._has_masks = has_masks
        self._scores.append(s)
        self._labels.append(y)
        self._curve = None

    def _add_pixels(self, maps: ArrayLike, masks: list[np.ndarray]) -> None:
        m = torch.from_numpy(as_scores(maps, "maps"))
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        if m.ndim != 3 or m.shape[0] != len(masks):
            raise ValueError(
                f"maps must be (B, h, w) with B = {len(masks)} images; got {tuple(m.shape)}."
            )
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
        for pm, gm in groups:
            regions, n = label_regions(gm)
            self._neg.append(pm[~gm])
            self._pos.append(pm[gm])
            ids = regions[gm].astype(np.int64)
            ids += self._n_regions
            self._ids.append(ids.astype(np.int32 if self._n_regions + n < 2**31 else np.int64))
            self._n_regions += int(n)

    def compute(self) -> dict[str, float]:
        """image_auroc, image_ap, image_f1_max; plus pixel_* and aupro when masks were given."""
        if not self._scores:
            raise RuntimeError("AnomalyEvaluator.compute() called before any update().")
        s, y = np.concatenate(self._scores), np.concatenate(self._labels)
        r = ranked_scores(s, y)
        results = {
            "image_auroc": auroc_from(r, "image_auroc"),
            "image_ap": ap_from(r, "image_ap"),
            "image_f1_max": f1_max_from(r, "image_f1_max"),
        }
        if not (self.pixel_metrics and self._has_masks):
            return results
        if len(self._neg) != self._n_sorted or self._n_sorted == 0:
            self._neg = sort_chunks(self._neg)  # consolidated and sorted; kept for later computes
            self._n_sorted = len(self._neg)
        pos = np.concatenate(self._pos) if self._pos else np.zeros(0, np.float32)
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)
        self._pos, self._ids = [pos], [ids]
        rp = rank(self._neg, pos, region_weights(ids, self._n_regions))
        self._curve = curve_from(rp, self._n_regions, self.fpr_limit)
        self._aupro = area(*self._curve, self.fpr_limit)
        results.update(
            pixel_auroc=auroc_from(rp, "pixel_auroc"),
            pixel_ap=ap_from(rp, "pixel_ap"),
            pixel_f1_max=f1_max_from(rp, "pixel_f1_max"),
            aupro=self._aupro,
        )
        return results

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
