"""Paper figures of single test images: image | ground-truth contour | heat-map overlay with the
run's colour bar, captioned with the score, the label and TP/FP/TN/FN at the F1-max threshold.

Drawn at ground-truth resolution (at least 256 px per panel), one colour scale per run, so two
images of a run (or a grid of its worst errors) can be compared by colour."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from adlab.callbacks.drawing import (
    caption,
    colour_bar,
    hstack,
    panel_size,
    resize,
    vstack,
    with_contour,
)
from adlab.callbacks.visualize import heat_colors, to_uint8_image


def outcome(score: float, label: int, threshold: float) -> str:
    """TP/FP/TN/FN of one image when score >= threshold counts as anomalous ("?" without one)."""
    if math.isnan(threshold):
        return "?"
    predicted = score >= threshold
    if label:
        return "TP" if predicted else "FN"
    return "FP" if predicted else "TN"


def colour_scale(visuals: list[dict]) -> tuple[float, float]:
    """One (vmin, vmax) for every map drawn in a run."""
    if not visuals:
        return 0.0, 1.0
    return (
        min(float(v["map"].min()) for v in visuals),
        max(float(v["map"].max()) for v in visuals),
    )


def _mask(visual: dict) -> np.ndarray | None:
    mask = visual.get("mask")
    if mask is None:
        return None
    return torch.as_tensor(mask).reshape(mask.shape[-2:]).cpu().numpy() > 0


def sample_panels(
    visual: dict, normalize: str, vmin: float, vmax: float, threshold: float, note: str = ""
) -> np.ndarray:
    """One figure row: caption over image | GT contour (when a mask exists) | overlay | colour
    bar. Panel size is the mask's (ground-truth) size, raised to 256 px on the short side."""
    img = to_uint8_image(visual["image"], normalize)
    mask = _mask(visual)
    size = panel_size(*(mask.shape if mask is not None else img.shape[:2]))
    img = resize(img, size)
    amap = resize(visual["map"].float().cpu().numpy(), size)
    heat = heat_colors((amap - vmin) / max(vmax - vmin, 1e-12))
    blend = (0.5 * img + 0.5 * heat).round().astype(np.uint8)
    panels = [img]
    if mask is not None:
        mask = resize(mask.astype(np.uint8), size, nearest=True) > 0
        panels.append(with_contour(img, mask))
        blend = with_contour(blend, mask, color=(255, 255, 255))
    panels += [blend, colour_bar(size[0], vmin, vmax, heat_colors)]
    row = hstack(panels)
    kind = "anomalous" if visual["label"] else "normal"
    verdict = outcome(visual["score"], visual["label"], threshold)
    text = (
        f"{Path(visual['path']).name}  label={kind}  score={visual['score']:.4g}  "
        f"{verdict} at F1-max threshold {threshold:.4g}"
    )
    names = "image | ground truth | anomaly map" if mask is not None else "image | anomaly map"
    lines = [text, names] + ([note] if note else [])
    return vstack([caption(row.shape[1], lines), row], gap=0)


def worst_errors(candidates: list[dict], threshold: float, n: int) -> tuple[list[dict], list[dict]]:
    """The n highest-scoring false positives and the n lowest-scoring false negatives."""
    fps = [v for v in candidates if outcome(v["score"], v["label"], threshold) == "FP"]
    fns = [v for v in candidates if outcome(v["score"], v["label"], threshold) == "FN"]
    fps.sort(key=lambda v: -v["score"])
    fns.sort(key=lambda v: v["score"])
    return fps[:n], fns[:n]


def worst_grid(
    candidates: list[dict],
    normalize: str,
    vmin: float,
    vmax: float,
    threshold: float,
    n: int,
    note: str = "",
) -> np.ndarray:
    """Worst false positives, then worst false negatives, one captioned row each."""
    fps, fns = worst_errors(candidates, threshold, n)
    rows = []
    for title, items in (("worst false positives", fps), ("worst false negatives", fns)):
        rows.append(caption(3 * 256, [f"{title} ({len(items)} shown)"]))
        rows += [sample_panels(v, normalize, vmin, vmax, threshold, note) for v in items]
        if not items:
            rows.append(caption(3 * 256, [f"no {title[6:]} at threshold {threshold:.4g}"]))
    return vstack(rows, gap=8)
