"""All figures of one test phase, written under the run dir and returned per W&B key, so the
files on disk and the images in W&B are the same figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adlab.callbacks.figures import colour_scale, outcome, sample_panels, worst_grid
from adlab.callbacks.histogram import write_histogram

Figures = dict[str, list[tuple[Path, str]]]


def write_run_figures(
    run_dir: Path,
    visuals: list[dict],
    worst: list[dict],
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    normalize: str,
    note: str = "",
) -> Figures:
    """anomaly_maps/NN_<label>_<name>.png per kept sample, figures/worst_errors.png and
    figures/score_histogram.png; {wandb key: [(path, caption)]}. `note` (e.g. that the teacher
    is random) is printed on every sample figure."""
    out: Figures = {}
    vmin, vmax = colour_scale(visuals + worst)
    if visuals:
        maps_dir = run_dir / "anomaly_maps"
        maps_dir.mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(visuals):
            kind = "anomalous" if v["label"] else "normal"
            path = maps_dir / f"{i:02d}_{kind}_{Path(v['path']).stem}.png"
            Image.fromarray(sample_panels(v, normalize, vmin, vmax, threshold, note)).save(path)
            verdict = outcome(v["score"], v["label"], threshold)
            text = f"{kind} score={v['score']:.4f} {verdict} {Path(v['path']).name}"
            out.setdefault("test/anomaly_maps", []).append((path, text))
    figures = run_dir / "figures"
    if worst:
        figures.mkdir(parents=True, exist_ok=True)
        path = figures / "worst_errors.png"
        grid = worst_grid(worst, normalize, vmin, vmax, threshold, max(1, len(worst) // 2), note)
        Image.fromarray(grid).save(path)
        out["test/worst_errors"] = [(path, f"worst errors at F1-max threshold {threshold:.4g}")]
    if len(scores):
        path = figures / "score_histogram.png"
        write_histogram(path, scores, labels, threshold)
        out["test/score_histogram"] = [(path, f"image scores, threshold {threshold:.4g}")]
    return out
