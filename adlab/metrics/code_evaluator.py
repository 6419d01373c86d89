"""Streaming accumulation of the official codes' metric variants (eval.code_metrics).

Fed the same maps, scores, labels and masks as AnomalyEvaluator, batch by batch, and like it a
torchmetrics Metric whose states are lists concatenated across ranks (adlab.metrics.states), so
under DDP compute() sees every rank's images. PDD's batch-level metrics depend on the test order,
so each image carries its position in the test set (the batch's `index`) and compute() puts the
gathered images back in that order: a DDP test gives the single-process numbers. RD4AD's PRO is
computed per anomalous image as it arrives and its pixel AUROC keeps flat float32 arrays (4 bytes
per pixel at the map's resolution). Results are named code_<code>/<metric>.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from adlab.metrics.code_metrics import (
    check_code_metrics,
    mean_defined,
    pdd_metrics,
    rd4ad_image_pro,
    rd4ad_mask,
)
from adlab.metrics.functional import ranked_scores
from adlab.metrics.inputs import ArrayLike, as_scores, scores_and_labels, to_numpy
from adlab.metrics.ranking import auroc_from, rank, sort_chunks
from adlab.metrics.states import (
    add_cat_states,
    check_masks,
    given_every_batch,
    joined,
    state_arrays,
)

# Per image: score, label, position in the test set; RD4AD's PRO (NaN for normal images), label
# from the resized mask and map maximum. Per batch: RD4AD's normal and anomalous pixel scores.
STATES = ("scores", "labels", "index", "pro", "mask_labels", "map_max", "neg", "pos")


def position_order(index: np.ndarray) -> np.ndarray | None:
    """The permutation that sorts images by their test-set position (stable, so images of equal
    position keep rank order); None when they already are in order, as on one process."""
    if index.size < 2 or bool(np.all(index[1:] >= index[:-1])):
        return None
    return np.argsort(index, kind="stable")


class CodeMetrics(Metric):
    """The requested variants ("rd4ad", "pdd"); RD4AD's need masks and are absent without them.

    Multi-class test sets get the pooled variants only (the official single-class scripts).
    update() takes each image's position in the test set (`index`); without it the position is
    the update order on this rank, which under DDP is exact only for strided shards (rank r gets
    images r, r + W, r + 2W, ... as ResumableBatchSampler shards). Other keyword arguments go to
    torchmetrics.Metric (process_group, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, names, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = check_code_metrics(names)
        add_cat_states(self, STATES)
        self._clear()

    def _clear(self) -> None:
        self._has_masks: bool | None = None
        self._indexed: bool | None = None

    def reset(self) -> None:
        """Forget everything accumulated (call between test sets)."""
        super().reset()
        self._clear()

    def update(
        self,
        maps: ArrayLike,
        scores: ArrayLike,
        labels: ArrayLike,
        masks: ArrayLike = None,
        index: ArrayLike = None,
    ) -> None:
        """One test batch: maps (B, h, w) at the model's resolution, scores (B,), labels (B,),
        masks None or per image at any resolution, index None or each image's test-set position
        (the batch's `index` field)."""
        s, y = scores_and_labels(scores, labels)
        self._has_masks = check_masks(self._has_masks, masks is not None)
        self.index.append(torch.from_numpy(self._positions(index, s.size)))
        self.scores.append(torch.from_numpy(s))
        self.labels.append(torch.from_numpy(y.astype(np.uint8)))
        if "rd4ad" not in self.names or masks is None:
            return
        m = as_scores(maps, "maps")
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        gts = np.stack([rd4ad_mask(masks[i], m.shape[1:]) for i in range(s.size)])
        pro = np.full(s.size, np.nan)
        for i in np.flatnonzero(y):
            pro[i] = rd4ad_image_pro(m[i], gts[i])
        self.neg.append(torch.from_numpy(m[~gts]))
        self.pos.append(torch.from_numpy(m[gts]))
        self.pro.append(torch.from_numpy(pro))
        # the code's image label is the resized mask's maximum, its score the map's maximum
        self.mask_labels.append(torch.from_numpy(gts.reshape(s.size, -1).any(1).astype(np.uint8)))
        self.map_max.append(torch.from_numpy(m.reshape(s.size, -1).max(1)))

    def _positions(self, index: ArrayLike, batch: int) -> np.ndarray:
        """The batch's test-set positions: `index`, or the next `batch` update positions."""
        self._indexed = given_every_batch(
            self._indexed,
            index is not None,
            "index",
            "pass every batch's test-set positions (the batch's `index` field) or none.",
        )
        if index is None:
            seen = sum(t.numel() for t in self.scores)
            return np.arange(seen, seen + batch, dtype=np.int64)
        positions = to_numpy(index, "index").astype(np.int64).reshape(-1)
        if positions.size != batch:
            raise ValueError(f"index holds {positions.size} positions for a batch of {batch}.")
        return positions

    def compute(self) -> dict[str, float]:
        """{code_rd4ad/pixel_auroc, code_rd4ad/aupro, code_rd4ad/image_auroc, code_pdd/...} over
        every rank's images, in test-set order."""
        scores = joined(self.scores, np.float32)
        if not scores.size:
            raise RuntimeError("CodeMetrics.compute() called before any update().")
        order = position_order(joined(self.index, np.int64))

        def ordered(state: Any, dtype: type) -> np.ndarray:
            values = joined(state, dtype)
            return values if order is None else values[order]

        if self._is_synced and not self._indexed and "pdd" in self.names:
            warnings.warn(
                "CodeMetrics under torch.distributed without `index`: code_pdd/* assumes rank r "
                "tested images r, r + W, r + 2W, ... of the test set; pass index= to update() "
                "for the single-process numbers whatever the sharding.",
                RuntimeWarning,
                stacklevel=2,
            )
        out: dict[str, float] = {}
        if "rd4ad" in self.names and self._has_masks:
            neg = sort_chunks(state_arrays(self.neg))  # pixel order is irrelevant to AUROC
            if not self._is_synced:  # the sorted parts become the state: sorted once, one copy
                self.neg = [torch.from_numpy(part) for part in neg]
            ranked = rank(neg, joined(self.pos, np.float32))
            out["code_rd4ad/pixel_auroc"] = auroc_from(ranked, "code_rd4ad/pixel_auroc")
            out["code_rd4ad/aupro"] = mean_defined(ordered(self.pro, np.float64).tolist())
            image = ranked_scores(
                ordered(self.map_max, np.float32), ordered(self.mask_labels, np.uint8).astype(bool)
            )
            out["code_rd4ad/image_auroc"] = auroc_from(image, "code_rd4ad/image_auroc")
        if "pdd" in self.names:
            labels = ordered(self.labels, np.uint8).astype(bool)
            out.update(pdd_metrics(ordered(self.scores, np.float32), labels))
        return out
