"""A synthetic benchmark generated deterministically by seed, written once as an MVTec-layout tree.

Two styles: `ct` (a head/organ ellipse with skull rim, soft tissue and ventricles on a dark
background, like a CT/MRI slice) and `texture` (industrial-like periodic gratings with noise).
Anomalies are blobs, ellipses, scratches and a minority of very small or subtle spots, brighter
or darker than their surroundings, with exact pixel masks (pixels where the lesion dominates).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adlab.data.records import DatasetError

GENERATOR_VERSION = 2  # bump on any change to the generated pixels
STYLES = ("ct", "texture")
DEFECTS = ("blob", "ellipse", "scratch", "blob", "ellipse", "blob", "ellipse", "small")  # 1/8 tiny


def parameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """The generation parameters with their defaults; their hash names the tree's folder."""
    params = {
        "style": str(config.get("style", "ct")),
        "image_size": int(config.get("image_size", 128)),
        "n_train": int(config.get("n_train", 64)),
        "n_test_normal": int(config.get("n_test_normal", 24)),
        "n_test_anomalous": int(config.get("n_test_anomalous", 24)),
        "seed": int(config.get("seed", 0)),
        "version": GENERATOR_VERSION,
    }
    if params["style"] not in STYLES:
        raise DatasetError(f"dataset.style={params['style']!r}: use one of {', '.join(STYLES)}.")
    if params["image_size"] < 32:
        raise DatasetError(f"dataset.image_size={params['image_size']} must be at least 32.")
    if params["n_train"] < 1:
        raise DatasetError("dataset.n_train must be at least 1 (zero normal training images).")
    return params


def tree_path(root: Path, params: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:12]
    return root / f"{params['style']}-{digest}"


def ensure_tree(root: Path, config: Mapping[str, Any]) -> tuple[Path, str]:
    """Generate the tree under root unless it exists; returns (tree folder, category name)."""
    params = parameters(config)
    target = tree_path(root, params)
    if not (target / "params.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            write_tree(temp, params)
            try:
                os.rename(temp, target)
            except OSError:
                if not (target / "params.json").is_file():  # not a concurrent writer: a real error
                    raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return target, params["style"]


def write_tree(folder: Path, params: Mapping[str, Any]) -> None:
    """Write every image (and mask) of the benchmark under folder in the MVTec layout."""
    style, size, seed = params["style"], params["image_size"], params["seed"]
    base = folder / style
    jobs: list[tuple[Path, Path | None, str | None, list[int]]] = []
    for i in range(params["n_train"]):
        jobs.append((base / "train" / "good" / f"{i:03d}.png", None, None, [seed, 0, i]))
    for i in range(params["n_test_normal"]):
        jobs.append((base / "test" / "good" / f"{i:03d}.png", None, None, [seed, 1, i]))
    for i in range(params["n_test_anomalous"]):
        defect = DEFECTS[i % len(DEFECTS)]
        name = f"{i:03d}"
        jobs.append((
            base / "test" / defect / f"{name}.png",
            base / "ground_truth" / defect / f"{name}_mask.png",
            defect,
            [seed, 2, i],
        ))  # fmt: skip
    for image_path, mask_path, defect, key in jobs:
        rng = np.random.default_rng(key)
        image, region = normal_image(style, size, rng)
        if defect is not None:
            image, mask = add_defect(image, region, defect, rng)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask * 255).save(mask_path, compress_level=1)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(image_path, compress_level=1)
    (folder / "params.json").write_text(json.dumps(dict(params), indent=1, sort_keys=True))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32)
    return np.meshgrid(coords, coords, indexing="xy")


def _ellipse(xx, yy, cx, cy, ax, ay, angle) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipse."""
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    u, v = (dx * cos + dy * sin) / ax, (-dx * sin + dy * cos) / ay
    return np.sqrt(u * u + v * v)


def _smooth_field(xx, yy, size: int, rng: np.random.Generator, waves: int = 3) -> np.ndarray:
    """Low-frequency variation: a sum of random cosines (cheap and smooth)."""
    field = np.zeros_like(xx)
    for _ in range(waves):
        freq = rng.uniform(0.5, 2.5) * 2 * np.pi / size
        theta = rng.uniform(0, np.pi)
        field += np.cos(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    return field / waves


def normal_image(style: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A defect-free image in [0, 1] and the boolean region where defects may appear."""
    xx, yy = _grid(size)
    s = size / 128.0
    if style == "texture":
        image = np.full((size, size), rng.uniform(0.45, 0.55), np.float32)
        theta = rng.uniform(0, np.pi)
        for k, amp in ((1, 0.12), (2, 0.06)):
            freq = 2 * np.pi * k * rng.uniform(5.5, 6.5) / size
            phase = rng.uniform(0, 6.3)
            angle = theta + (k - 1) * np.pi / 2
            image += amp * np.cos(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        image += 0.04 * _smooth_field(xx, yy, size, rng)
        image += rng.normal(0, 0.03, image.shape).astype(np.float32)
        margin = int(10 * s)
        region = np.zeros((size, size), bool)
        region[margin:-margin, margin:-margin] = True
        return image, region
    cx, cy = size / 2 + rng.uniform(-2, 2) * s, size / 2 + rng.uniform(-2, 2) * s
    ax, ay = rng.uniform(44, 47) * s, rng.uniform(52, 55) * s
    angle = rng.uniform(-0.05, 0.05)
    radius = _ellipse(xx, yy, cx, cy, ax, ay, angle)
    rim = 4.0 * s / min(ax, ay)
    tissue = rng.uniform(0.43, 0.47) + 0.005 * _smooth_field(xx, yy, size, rng)
    image = np.full((size, size), 0.05, np.float32)
    inside = radius < 1 - rim
    image[inside] = tissue[inside]
    skull = (radius >= 1 - rim) & (radius < 1)
    image[skull] = rng.uniform(0.65, 0.7)
    anatomy = np.zeros((size, size), bool)
    for side in (-1, 1):  # two ventricles: normal anatomy the model must learn
        vx = cx + side * rng.uniform(7, 8) * s
        vent = _ellipse(xx, yy, vx, cy, rng.uniform(3.5, 4.5) * s, rng.uniform(10, 12) * s, angle)
        image[vent < 1] = 0.2
        anatomy |= vent < 2.2  # keep defect centres off the ventricles, where dark ones hide
    image += rng.normal(0, 0.015, image.shape).astype(np.float32)
    region = (radius < 0.7) & ~anatomy
    return image, region


def add_defect(
    image: np.ndarray, region: np.ndarray, defect: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect inside region; returns the image and its exact 0/1 uint8 mask."""
    size = image.shape[0]
    s = size / 128.0
    xx, yy = _grid(size)
    ys, xs = np.nonzero(region)
    pick = rng.integers(len(xs))
    cx, cy = float(xs[pick]), float(ys[pick])
    sign = 1.0 if rng.random() < 0.3 else -1.0  # most lesions hypodense, a third bright
    if defect == "blob":
        weight = np.clip(
            (1 - _ellipse(xx, yy, cx, cy, *(rng.uniform(7, 13, 2) * s), 0.0)) * 4, 0, 1
        )
        amp = rng.uniform(0.3, 0.45)
    elif defect == "ellipse":
        axes = (rng.uniform(16, 24) * s, rng.uniform(8, 12) * s)
        weight = np.clip((1 - _ellipse(xx, yy, cx, cy, *axes, rng.uniform(0, np.pi))) * 3, 0, 1)
        amp = rng.uniform(0.3, 0.45)
    elif defect == "scratch":
        theta = rng.uniform(0, np.pi)
        length, width = rng.uniform(20, 32) * s, rng.uniform(2.5, 3.5) * s
        along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        across = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        weight = np.clip(width - np.abs(across), 0, 1) * (np.abs(along) < length)
        amp = rng.uniform(0.4, 0.5)
    elif defect == "small":
        radius = rng.uniform(2, 3.5) * s
        weight = np.clip((1 - _ellipse(xx, yy, cx, cy, radius, radius, 0.0)) * 2, 0, 1)
        amp = rng.uniform(0.2, 0.3)
    else:
        raise DatasetError(f"unknown synthetic defect {defect!r}; use one of {sorted(DEFECTS)}")
    weight = weight.astype(np.float32)
    if sign > 0:
        amp += 0.1  # bright lesions must stand out from the bright skull rim too
    grain = rng.normal(0, 0.08, image.shape).astype(np.float32)  # lesions are heterogeneous
    out = image + weight * (sign * amp + grain)
    mask = (weight >= 0.5).astype(np.uint8)
    if not mask.any():  # the shape fell between pixel centres: mark its strongest pixel
        mask.flat[int(np.argmax(weight))] = 1
    return out, mask
