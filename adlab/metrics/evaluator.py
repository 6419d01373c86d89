"""Streaming evaluation: methods call update() per test batch and compute() once at the end.

AnomalyEvaluator is a torchmetrics Metric whose states are concatenated across ranks, so a DDP
test phase computes the metrics of the whole test set on every rank.

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
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

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
from adlab.metrics.states import add_cat_states, check_masks, state_arrays

RESOLUTIONS = ("gt", "model")
# Metric states, each a list reduced by concatenation across ranks: per image, then per chunk.
STATES = (
    "scores",
    "labels",
    "image_categories",
    "neg",
    "pos",
    "region_ids",
    "chunk_sizes",
    "chunk_categories",
)


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
    """Nearest-neighbour resize of one (H, W) bool mask or (B, H, W) masks."""
    if m.shape[-2:] == tuple(size):
        return m
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.uint8)).reshape(-1, 1, *m.shape[-2:])
    out = F.interpolate(t, size=size, mode="nearest").numpy().astype(bool)
    return out.reshape(*m.shape[:-2], *size)


def _region_ids(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Region ids (int32, 1..n) of the anomalous pixels of (N, H, W) masks in raster order, and
    n. Only images with anomalous pixels are labelled: normal ones hold no region, so the ids
    are those of labelling the whole stack, without the pass over the normal images."""
    has = masks.reshape(len(masks), -1).any(axis=1)
    if not has.any():
        return np.zeros(0, np.int32), 0
    part = masks if has.all() else masks[has]
    regions, n = label_regions(part)
    return regions[part].astype(np.int32, copy=False), int(n)


def _encode(names: Sequence[str]) -> torch.Tensor:
    """Category names as one uint8 tensor (UTF-8, each name ended by a NUL byte), so they can be
    a concatenated metric state like the numbers."""
    data = b"".join(n.encode() + b"\0" for n in names)
    if not data:
        return torch.zeros(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode(parts: list[np.ndarray]) -> list[str]:
    data = b"".join(p.astype(np.uint8, copy=False).tobytes() for p in parts)
    return [b.decode() for b in data.split(b"\0")[:-1]]


def _segments(parts: list[np.ndarray], sizes: np.ndarray) -> list[np.ndarray]:
    """Views of the chunks of sizes `sizes` in the concatenation of `parts` (no copy when the
    parts already are those chunks, as on one process)."""
    if len(parts) == len(sizes) and all(p.size == n for p, n in zip(parts, sizes)):
        return [p.reshape(-1) for p in parts]
    flat = np.concatenate([p.reshape(-1) for p in parts]) if len(parts) != 1 else parts[0]
    return np.split(flat.reshape(-1), np.cumsum(sizes)[:-1])


@dataclass
class _Pixels:
    """One category's pixels, ready to rank: sorted negatives, positives and region ids
    (1..n_regions within the category)."""

    neg: list[np.ndarray] = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_regions: int = 0


@dataclass
class _Prepared:
    """The states of one compute, decoded and with every category's negatives sorted once."""

    scores: np.ndarray
    labels: np.ndarray
    image_categories: np.ndarray  # category name per image
    categories: list[str]  # in order of first appearance
    pixels: dict[str, _Pixels]
    key: tuple[int, bool]  # (updates, synced) it was made from


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


class AnomalyEvaluator(Metric):
    """Accumulates image scores/labels and pixel maps/masks; computes all metrics exactly.

    A torchmetrics Metric: its states are lists reduced by concatenation ("cat"), so under DDP
    (Lightning or your own loop) compute() sees every rank's images, and it can be used like
    any torchmetrics metric (update / compute / reset / forward). The states are flat arrays:
    float32 scores of normal and of anomalous pixels and the anomalous pixels' region ids per
    chunk (one batch's images of one category), so memory is ~4 bytes per pixel.

    eval_resolution: "gt" resizes each map (bilinear) to its mask's size (the published protocol);
    "model" resizes each mask (nearest) to the map's size. fpr_limit: AUPRO integration limit.
    pixel_metrics: False skips all pixel work (image-level metrics only). Other keyword
    arguments go to torchmetrics.Metric (process_group, dist_sync_fn, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        eval_resolution: Literal["gt", "model"] = "gt",
        fpr_limit: float = 0.3,
        pixel_metrics: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if eval_resolution not in RESOLUTIONS:
            raise ValueError(
                f"eval_resolution must be one of {RESOLUTIONS}; got {eval_resolution!r}."
            )
        self.eval_resolution = eval_resolution
        self.fpr_limit = check_fpr_limit(fpr_limit)
        self.pixel_metrics = bool(pixel_metrics)
        add_cat_states(self, STATES)
        self._clear()

    def _clear(self) -> None:
        self._has_masks: bool | None = None
        self._prepared: _Prepared | None = None
        self._curve: tuple[np.ndarray, np.ndarray] | None = None
        self._aupro = math.nan

    def reset(self) -> None:
        """Forget everything accumulated (call between test sets)."""
        super().reset()
        self._clear()

    @property
    def num_images(self) -> int:
        return sum(a.size for a in state_arrays(self.scores))

    @property
    def categories(self) -> list[str]:
        """The categories seen (by all ranks after a compute), in order of first appearance."""
        if self._prepared is not None:
            return list(self._prepared.categories)
        return list(dict.fromkeys(_decode(state_arrays(self.image_categories))))

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
        has_masks = check_masks(self._has_masks, masks is not None)
        chunks = []
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
                for pm, gm in self._resized(part, [mask_list[i] for i in idx]):
                    chunks.append((cat, pm, gm))
        for cat, pm, gm in chunks:
            ids, n = _region_ids(gm)
            pos = pm[gm]
            neg = pm[~gm] if pos.size else pm.reshape(-1).copy()  # a copy: pm may be the input
            self.neg.append(torch.from_numpy(neg))
            self.pos.append(torch.from_numpy(pos))
            self.region_ids.append(torch.from_numpy(ids))
            sizes = [neg.size, pos.size, n]
            self.chunk_sizes.append(torch.tensor([sizes], dtype=torch.int64))
            self.chunk_categories.append(_encode([cat]))
        self._has_masks = has_masks
        self.scores.append(torch.from_numpy(s))
        self.labels.append(torch.from_numpy(y.astype(np.uint8)))
        self.image_categories.append(_encode(cats))
        self._prepared = None
        self._curve = None

    def _resized(
        self, m: torch.Tensor, masks: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(maps, masks) groups at the evaluation resolution, same-size images stacked."""
        sizes = {g.shape for g in masks}
        if len(sizes) == 1:  # one resize and labelling call for the batch
            if self.eval_resolution == "gt":
                groups = [(_resize_map(m, masks[0].shape), np.stack(masks))]
            else:
                groups = [(m.numpy(), _resize_mask(np.stack(masks), tuple(m.shape[-2:])))]
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

    # --- compute ----------------------------------------------------------------------------
    def _prepare(self) -> _Prepared:
        """Decode the (synced) states: images, and per category the pixel chunks with their
        negatives sorted once (kept until the next update, for compute_by_category)."""
        key = (self._update_count, self._is_synced)
        if self._prepared is not None and self._prepared.key == key:
            return self._prepared
        scores = state_arrays(self.scores)
        if not scores or not sum(a.size for a in scores):
            raise RuntimeError("AnomalyEvaluator.compute() called before any update().")
        image_categories = np.asarray(_decode(state_arrays(self.image_categories)))
        pixels: dict[str, _Pixels] = {}
        rows = state_arrays(self.chunk_sizes)
        if rows:
            sizes = np.concatenate([r.reshape(-1, 3) for r in rows]).astype(np.int64)
            names = _decode(state_arrays(self.chunk_categories))
            negs = _segments(state_arrays(self.neg), sizes[:, 0])
            poss = _segments(state_arrays(self.pos), sizes[:, 1])
            idss = _segments(state_arrays(self.region_ids), sizes[:, 1])
            grouped: dict[str, tuple[list, list, list]] = {}
            for name in dict.fromkeys(names):
                grouped[name] = ([], [], [])
            for name, (_, _, n), neg, pos, ids in zip(names, sizes, negs, poss, idss):
                store = pixels.setdefault(name, _Pixels())
                negs_c, pos_c, ids_c = grouped[name]
                negs_c.append(neg)
                pos_c.append(pos)
                ids_c.append(ids.astype(np.int64) + store.n_regions)
                store.n_regions += int(n)
            for name, (negs_c, pos_c, ids_c) in grouped.items():
                store = pixels[name]
                store.neg = sort_chunks(negs_c)  # in place for a single chunk
                store.pos = np.concatenate(pos_c) if len(pos_c) > 1 else pos_c[0]
                store.ids = np.concatenate(ids_c) if len(ids_c) > 1 else ids_c[0]
        if pixels and not self._is_synced:
            self._compact(pixels)
        self._prepared = _Prepared(
            scores=np.concatenate(scores) if len(scores) > 1 else scores[0],
            labels=np.concatenate(state_arrays(self.labels)).astype(bool),
            image_categories=image_categories,
            categories=list(dict.fromkeys(image_categories.tolist())),
            pixels=pixels,
            key=key,
        )
        return self._prepared

    def _compact(self, pixels: dict[str, _Pixels]) -> None:
        """Make the sorted arrays this rank's pixel states, one chunk per sorted part, and drop
        the per-batch chunks: memory stays one copy of the pixels, not two."""
        neg, pos, ids, sizes, names = [], [], [], [], []
        empty = np.zeros(0, np.float32)
        for name, store in pixels.items():
            for k, part in enumerate(store.neg or [empty]):
                first = k == 0
                neg.append(torch.from_numpy(part))
                pos.append(torch.from_numpy(store.pos if first else empty))
                ids.append(torch.from_numpy((store.ids if first else empty).astype(np.int32)))
                counts = [part.size, pos[-1].numel(), store.n_regions if first else 0]
                sizes.append(torch.tensor([counts], dtype=torch.int64))
                names.append(_encode([name]))
        self.neg, self.pos, self.region_ids = neg, pos, ids
        self.chunk_sizes, self.chunk_categories = sizes, names

    def compute(self) -> dict[str, float]:
        """image_auroc, image_ap, image_f1_max; plus pixel_* and aupro when masks were given.

        Over the whole test set (all categories pooled), as a single-class set is evaluated."""
        prepared = self._prepare()
        results = _image_metrics(prepared.scores, prepared.labels)
        if not (self.pixel_metrics and prepared.pixels):
            return results
        stores = list(prepared.pixels.values())
        offsets = np.cumsum([0] + [p.n_regions for p in stores[:-1]])
        pixel, self._curve = _pixel_metrics(
            [part for p in stores for part in p.neg],  # ranked together, never merged
            np.concatenate([p.pos for p in stores]),
            np.concatenate([p.ids + o for p, o in zip(stores, offsets)]),
            sum(p.n_regions for p in stores),
            self.fpr_limit,
        )
        self._aupro = pixel["aupro"]
        results.update(pixel)
        return results

    def compute_by_category(self) -> dict[str, dict[str, float]]:
        """The metrics of compute() for each category alone, {category: metrics}.

        Multi-class benchmarks (Uni-Medical, UniAD's MVTec) report these and their mean. Under
        DDP the states are synced as for compute() (reused when compute() just did it)."""
        sync = self.sync_on_compute and self.distributed_available_fn()
        prepared = self._prepared
        if prepared is None or prepared.key != (self._update_count, sync):
            if not self.update_called:
                raise RuntimeError(
                    "AnomalyEvaluator.compute_by_category() called before any update()."
                )
            with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=sync):
                prepared = self._prepare()
        out = {}
        for cat in prepared.categories:
            keep = prepared.image_categories == cat
            out[cat] = _image_metrics(prepared.scores[keep], prepared.labels[keep])
            store = prepared.pixels.get(cat)
            if self.pixel_metrics and store is not None:
                pixel, _ = _pixel_metrics(
                    store.neg, store.pos, store.ids, store.n_regions, self.fpr_limit
                )
                out[cat].update(pixel)
        return out

    def image_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of every image so far: the histogram and worst-case figures use them."""
        if self._prepared is not None:  # after compute(): every rank's images
            return self._prepared.scores, self._prepared.labels.astype(bool)
        scores, labels = state_arrays(self.scores), state_arrays(self.labels)
        if not scores:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return np.concatenate(scores), np.concatenate(labels).astype(bool)

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
