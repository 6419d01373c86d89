"""Image-score histogram of normal vs anomalous test images with the F1-max threshold: shows how
far apart the classes are and where the errors of the worst-case grid come from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

NORMAL = (31, 119, 180)
ANOMALOUS = (214, 39, 40)


def score_counts(
    scores: np.ndarray, labels: np.ndarray, bins: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, normal counts, anomalous counts) over one shared set of bins."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return (
        edges,
        np.histogram(scores[~labels], edges)[0],
        np.histogram(scores[labels], edges)[0],
    )


def write_histogram(
    path: Path, scores: np.ndarray, labels: np.ndarray, threshold: float, bins: int = 30
) -> dict[str, list]:
    """Draw the two histograms (overlaid, translucent) and the threshold line; returns the counts
    it drew (for tests and results)."""
    edges, normal, anomalous = score_counts(scores, labels, bins)
    w, h, m = 640, 360, 50
    img = Image.new("RGB", (w + 2 * m, h + 2 * m), "white")
    draw = ImageDraw.Draw(img, "RGBA")
    font = ImageFont.load_default()
    top = max(1, int(max(normal.max(initial=0), anomalous.max(initial=0))))
    bw = w / bins
    for counts, color in ((normal, NORMAL), (anomalous, ANOMALOUS)):
        for i, c in enumerate(counts.tolist()):
            if c:
                x0 = m + i * bw
                draw.rectangle([x0, m + h - c / top * h, x0 + bw - 1, m + h], fill=(*color, 140))
    draw.rectangle([m, m, m + w, m + h], outline="black")
    for k in range(5):
        x = m + k * w / 4
        draw.text(
            (x - 12, m + h + 6), f"{edges[0] + k * (edges[-1] - edges[0]) / 4:.3g}", "black", font
        )
        draw.text((4, m + h - k * h / 4 - 6), f"{k * top / 4:g}", "black", font)
    if not math.isnan(threshold):
        x = m + (threshold - edges[0]) / (edges[-1] - edges[0]) * w
        draw.line([(x, m), (x, m + h)], fill="black", width=2)
        draw.text((x + 4, m + 4), f"F1-max threshold {threshold:.4g}", "black", font)
    n_norm, n_anom = int(normal.sum()), int(anomalous.sum())
    draw.text(
        (m, 10),
        f"image scores: normal (blue, n={n_norm}) vs anomalous (red, n={n_anom})",
        "black",
        font,
    )
    draw.text((m + w - 60, m + h + 24), "image score", "black", font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return {"edges": edges.tolist(), "normal": normal.tolist(), "anomalous": anomalous.tolist()}
