"""`adlab.report <sweep dir> --plot table.png`: one panel per dataset, one bar per method (mean
over seeds, whisker = seed std). Drawn with PIL (a dependency already), so no plotting library
is needed."""

from __future__ import annotations

import statistics
from pathlib import Path

from PIL import Image, ImageDraw

from adlab.report import table

COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip
PANEL_W, PANEL_H, MARGIN = 260, 240, 40
PER_ROW = 4


def bars(results: list[dict], metric: str, pooled: bool = False) -> tuple[list, list, dict]:
    """(methods, datasets, {(method, dataset): (mean, std)}) in percent."""
    methods, datasets, cells = table(results, metric, pooled)
    stats = {
        key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
        for key, v in cells.items()
        if v
    }
    return methods, datasets, stats


def plot(results: list[dict], metric: str, path: Path, pooled: bool = False) -> Path:
    """Write the PNG; the y axis spans the range of the values (floor at a multiple of 10)."""
    methods, datasets, stats = bars(results, metric, pooled)
    if not stats:
        raise ValueError(f"--plot: no values of {metric} in these results.")
    low = min(m - s for m, s in stats.values())
    y0 = max(0.0, 10 * (low // 10) - 10) if low > 10 else 0.0
    y1 = min(100.0, max(m + s for m, s in stats.values()) + 5)
    rows = (len(datasets) + PER_ROW - 1) // PER_ROW
    cols = min(len(datasets), PER_ROW)
    legend_h = 18 * len(methods) + 10
    img = Image.new("RGB", (cols * PANEL_W + MARGIN, rows * PANEL_H + 30 + legend_h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, 8), f"{metric} (%): mean over seeds, whisker = seed std", fill="black")
    for k, dataset in enumerate(datasets):
        left = MARGIN + (k % PER_ROW) * PANEL_W
        top = 30 + (k // PER_ROW) * PANEL_H
        panel(draw, (left, top), dataset, methods, stats, (y0, y1))
    legend_top = 30 + rows * PANEL_H
    for i, method in enumerate(methods):
        y = legend_top + 18 * i
        draw.rectangle([MARGIN, y + 2, MARGIN + 12, y + 14], fill=COLOURS[i % len(COLOURS)])
        draw.text((MARGIN + 18, y + 2), method, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def panel(draw, origin, dataset, methods, stats, y_range) -> None:
    """One dataset: axes with ticks, a bar and a whisker per method that has a value."""
    (left, top), (y0, y1) = origin, y_range
    x0, x1 = left + 10, left + PANEL_W - 20
    base, height = top + PANEL_H - 30, PANEL_H - 60
    draw.text((x0, top + 4), dataset[:38], fill="black")

    def y_of(v: float) -> float:
        return base - (min(max(v, y0), y1) - y0) / (y1 - y0) * height

    for t in range(5):
        v = y0 + t * (y1 - y0) / 4
        draw.line([(x0, y_of(v)), (x1, y_of(v))], fill=(225, 225, 225))
        draw.text((left - 32, y_of(v) - 6), f"{v:.0f}", fill="black")
    draw.rectangle([x0, base - height, x1, base], outline="black")
    width = (x1 - x0) / max(len(methods), 1)
    for i, method in enumerate(methods):
        if (method, dataset) not in stats:
            continue
        mean, std = stats[(method, dataset)]
        a, b = x0 + i * width + width * 0.15, x0 + (i + 1) * width - width * 0.15
        draw.rectangle([a, y_of(mean), b, base], fill=COLOURS[i % len(COLOURS)])
        if std:
            mid = (a + b) / 2
            draw.line([(mid, y_of(mean - std)), (mid, y_of(mean + std))], fill="black", width=2)
            for v in (mean - std, mean + std):
                draw.line([(mid - 5, y_of(v)), (mid + 5, y_of(v))], fill="black", width=2)
        draw.text((a, y_of(mean) - 12), f"{mean:.1f}", fill="black")
