"""Anomaly-map overlays: image | heat-map overlay | ground truth, as PNG panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_uint8_image(image: torch.Tensor, normalize: str) -> np.ndarray:
    """(3,H,W) model input -> (H,W,3) uint8, undoing ImageNet normalisation when it was applied."""
    arr = image.float().cpu().numpy().transpose(1, 2, 0)
    if normalize == "imagenet":
        arr = arr * IMAGENET_STD + IMAGENET_MEAN
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values in [0,1] -> (..., 3) uint8 with a blue-cyan-yellow-red ramp (no matplotlib needed)."""
    stops = np.array(
        [[0, 0, 128], [0, 128, 255], [0, 255, 255], [255, 255, 0], [255, 64, 0], [160, 0, 0]],
        dtype=np.float32,
    )
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).round().astype(np.uint8)


def overlay_panel(visual: dict, normalize: str, vmin: float, vmax: float) -> np.ndarray:
    """One PNG row for a kept test sample; maps share one colour scale across the run."""
    img = to_uint8_image(visual["image"], normalize)
    h, w = img.shape[:2]
    amap = visual["map"].float()
    if amap.shape != (h, w):
        amap = F.interpolate(amap[None, None], size=(h, w), mode="bilinear")[0, 0]
    norm = (amap.numpy() - vmin) / max(vmax - vmin, 1e-12)
    heat = heat_colors(norm)
    blend = (0.5 * img + 0.5 * heat).round().astype(np.uint8)
    panels = [img, blend]
    if visual.get("mask") is not None:
        mask = visual["mask"].float().reshape(1, 1, *visual["mask"].shape[-2:])
        mask = F.interpolate(mask, size=(h, w), mode="nearest")[0, 0].numpy() > 0
        panels.append(np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2))
    return np.concatenate(panels, axis=1)


def write_overlays(visuals: list[dict], out_dir: Path, normalize: str) -> list[tuple[Path, str]]:
    """Write one PNG per kept sample; returns (path, caption) pairs for the loggers."""
    if not visuals:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    vmin = min(float(v["map"].min()) for v in visuals)
    vmax = max(float(v["map"].max()) for v in visuals)
    written = []
    for i, v in enumerate(visuals):
        kind = "anomalous" if v["label"] else "normal"
        path = out_dir / f"{i:02d}_{kind}_{Path(v['path']).stem}.png"
        Image.fromarray(overlay_panel(v, normalize, vmin, vmax)).save(path)
        written.append((path, f"{kind} score={v['score']:.4f} {Path(v['path']).name}"))
    return written
