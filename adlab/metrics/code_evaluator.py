"""Streaming accumulation of the official codes' metric variants (eval.code_metrics).

Fed the same maps, scores, labels and masks as AnomalyEvaluator, batch by batch in test-loader
order. RD4AD's PRO is computed per anomalous image as it arrives and its pixel AUROC keeps flat
float32 arrays (4 bytes per pixel at the map's resolution); PDD's batch-level metrics keep the
ordered scores and labels. Results are named code_<code>/<metric>, beside the exact metrics.
"""

from __future__ import annotations

import numpy as np

from adlab.metrics.code_metrics import (
    check_code_metrics,
    mean_defined,
    pdd_metrics,
    rd4ad_image_pro,
    rd4ad_mask,
)
from adlab.metrics.functional import ranked_scores
from adlab.metrics.inputs import ArrayLike, as_scores, scores_and_labels
from adlab.metrics.ranking import auroc_from, rank, sort_chunks


class CodeMetrics:
    """The requested variants ("rd4ad", "pdd"); RD4AD's need masks and are absent without them.

    Multi-class test sets get the pooled variants only (the official single-class scripts)."""

    def __init__(self, names) -> None:
        self.names = check_code_metrics(names)
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._pro: list[float] = []
        self._mask_labels: list[bool] = []
        self._map_max: list[float] = []
        self._has_masks = False

    def update(
        self, maps: ArrayLike, scores: ArrayLike, labels: ArrayLike, masks: ArrayLike = None
    ) -> None:
        """One test batch: maps (B, h, w) at the model's resolution, scores (B,), labels (B,),
        masks None or per image at any resolution."""
        s, y = scores_and_labels(scores, labels)
        self._scores.append(s)
        self._labels.append(y)
        if "rd4ad" not in self.names or masks is None:
            return
        self._has_masks = True
        m = as_scores(maps, "maps")
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        for i in range(s.size):
            gt = rd4ad_mask(masks[i], m.shape[1:])
            self._neg.append(m[i][~gt])
            self._pos.append(m[i][gt])
            self._mask_labels.append(bool(gt.any()))
            self._map_max.append(float(m[i].max()))
            if y[i]:
                self._pro.append(rd4ad_image_pro(m[i], gt))

    def compute(self) -> dict[str, float]:
        """{code_rd4ad/pixel_auroc, code_rd4ad/aupro, code_rd4ad/image_auroc, code_pdd/...}."""
        if not self._scores:
            raise RuntimeError("CodeMetrics.compute() called before any update().")
        out: dict[str, float] = {}
        scores = np.concatenate(self._scores)
        if "rd4ad" in self.names and self._has_masks:
            self._neg = sort_chunks(self._neg)  # joined and sorted, kept for a later compute
            ranked = rank(self._neg, np.concatenate(self._pos))
            out["code_rd4ad/pixel_auroc"] = auroc_from(ranked, "code_rd4ad/pixel_auroc")
            out["code_rd4ad/aupro"] = mean_defined(self._pro)
            # the code's image label is the resized mask's maximum, its score the map's maximum
            image = ranked_scores(
                np.asarray(self._map_max, dtype=np.float32),
                np.asarray(self._mask_labels, dtype=bool),
            )
            out["code_rd4ad/image_auroc"] = auroc_from(image, "code_rd4ad/image_auroc")
        if "pdd" in self.names:
            out.update(pdd_metrics(scores, np.concatenate(self._labels)))
        return out
