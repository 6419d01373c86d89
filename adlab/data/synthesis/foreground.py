"""Foreground masks of object images, so that synthetic anomalies land on the object.

As URD's code: Otsu, inverted (the object is darker than the background), for MVTec capsule and
screw; GrabCut (rectangle = the image minus a 1-pixel border, 11 iterations) for the other
masked objects. GrabCut needs OpenCV (`pip install adlab[synthesis]`); without it a documented
approximation runs: Otsu on a blurred image with the polarity whose side touches the border less,
largest connected component, holes filled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from adlab.data.records import DatasetError

log = logging.getLogger("adlab")
METHODS = ("none", "otsu_inv", "otsu", "grabcut")
GRABCUT_ITERATIONS = 11


def method_for(foreground: str | Mapping[str, str] | None, category: str) -> str:
    """The method for one category from dataset.foreground: null (none), one method for every
    category, or {category: method} with unnamed categories getting none."""
    if foreground is None:
        return "none"
    if isinstance(foreground, str):
        method, key = foreground, "dataset.foreground"
    else:
        method, key = str(foreground.get(category) or "none"), f"dataset.foreground.{category}"
    if method not in METHODS:
        raise DatasetError(f"{key}={method!r}: use one of {list(METHODS)}.")
    return method


def to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8 or float in [0, 1] -> (H, W, 3) uint8."""
    array = image.numpy() if image.dtype == torch.uint8 else image.float().clamp(0, 1).numpy()
    if array.dtype != np.uint8:
        array = np.round(array * 255).astype(np.uint8)
    array = array.transpose(1, 2, 0)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance as OpenCV's RGB->gray for 8-bit images (0.299/0.587/0.114 in 15-bit fixed
    point, as OpenCV 4.x and 5 compute it)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values as OpenCV picks it: the first level that maximises the
    between-class variance of {<= t} and {> t}."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    q1 = np.cumsum(p)
    q2 = 1.0 - q1
    mu1_sum = np.cumsum(levels * p)
    mu = mu1_sum[-1]
    eps = np.finfo(np.float32).eps
    valid = (np.minimum(q1, q2) >= eps) & (np.maximum(q1, q2) <= 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu1 = mu1_sum / q1
        mu2 = (mu - mu1_sum) / q2
        sigma = q1 * q2 * (mu1 - mu2) ** 2
    sigma = np.where(valid, sigma, -1.0)
    return int(np.argmax(sigma)) if sigma.max() >= 0 else 0


def otsu_mask(rgb: np.ndarray, inverted: bool) -> np.ndarray:
    values = gray(rgb)
    threshold = otsu_threshold(values)
    return values <= threshold if inverted else values > threshold


def _opencv() -> Any | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def grabcut_mask(rgb: np.ndarray) -> np.ndarray:
    """GrabCut initialised with the rectangle (1, 1, w-1, h-1); definite and probable foreground.
    OpenCV's k-means seeding uses its thread's RNG, reset here so the mask is reproducible."""
    cv2 = _opencv()
    if cv2 is None:
        return approximate_object_mask(rgb)
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    rect = (1, 1, width - 1, height - 1)
    cv2.grabCut(bgr, mask, rect, background, foreground, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def approximate_object_mask(rgb: np.ndarray) -> np.ndarray:
    """GrabCut stand-in without OpenCV: Otsu on a blurred image, the side that touches the image
    border less is the object; keep its largest component and fill its holes. Whole image when
    that leaves nothing."""
    sigma = max(1.0, min(rgb.shape[:2]) / 128)
    values = ndimage.gaussian_filter(gray(rgb).astype(np.float64), sigma)
    values = np.clip(np.round(values), 0, 255).astype(np.uint8)
    bright = values > otsu_threshold(values)
    border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    objects = ~bright if border.mean() > 0.5 else bright
    labels, count = ndimage.label(objects)
    if count == 0:
        return np.ones(objects.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def foreground_mask(image: torch.Tensor, method: str) -> np.ndarray | None:
    """(H, W) bool mask of where anomalies may land for a (C, H, W) image; None = everywhere."""
    if method == "none":
        return None
    rgb = to_uint8_rgb(image)
    if method == "grabcut":
        return grabcut_mask(rgb)
    if method in ("otsu_inv", "otsu"):
        return otsu_mask(rgb, inverted=method == "otsu_inv")
    raise DatasetError(f"foreground method {method!r}: use one of {list(METHODS)}.")


def warn_without_opencv(methods: set[str]) -> None:
    if "grabcut" in methods and _opencv() is None:
        log.warning(
            "dataset.foreground asks for GrabCut but OpenCV is not installed: using the Otsu + "
            "largest-component approximation (pip install adlab[synthesis] for URD's GrabCut)."
        )
