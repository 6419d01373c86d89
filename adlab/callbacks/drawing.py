"""PIL drawing helpers for the run figures: resizing, contours, captions and the colour bar.

Plain numpy/PIL so figures need no matplotlib (not a dependency of adlab)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_PANEL = 256  # px on the short side: readable in a paper and in W&B
CAPTION_H = 28
BAR_W = 70
BG = (255, 255, 255)
INK = (0, 0, 0)


def panel_size(h: int, w: int, min_side: int = MIN_PANEL) -> tuple[int, int]:
    """(H, W) at least min_side on the short side, aspect kept (ground truth is never shrunk)."""
    scale = max(1.0, min_side / max(1, min(h, w)))
    return round(h * scale), round(w * scale)


def resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """(h,w[,3]) uint8/float array -> size (H, W); bilinear unless nearest (masks)."""
    if arr.shape[:2] == tuple(size):
        return arr
    mode = Image.NEAREST if nearest else Image.BILINEAR
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), mode))
    img = Image.fromarray(arr.astype(np.float32), mode="F").resize((size[1], size[0]), mode)
    return np.asarray(img)


def contour(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The boundary pixels of a bool mask (mask minus its erosion), `width` px thick."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def with_contour(img: np.ndarray, mask: np.ndarray, color=(0, 255, 0)) -> np.ndarray:
    out = img.copy()
    out[contour(mask, width=max(1, min(mask.shape) // 128))] = color
    return out


def caption(width: int, lines: list[str], height: int = CAPTION_H) -> np.ndarray:
    """A white strip with text lines (PIL's default font)."""
    img = Image.new("RGB", (width, height * len(lines)), BG)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, text in enumerate(lines):
        draw.text((6, i * height + 8), text, fill=INK, font=font)
    return np.asarray(img)


def colour_bar(height: int, vmin: float, vmax: float, colors) -> np.ndarray:
    """A vertical colour bar (high at the top) with the run's map values at 5 ticks."""
    ramp = np.linspace(1, 0, height, dtype=np.float32)[:, None].repeat(18, axis=1)
    img = Image.new("RGB", (BAR_W, height), BG)
    img.paste(Image.fromarray(colors(ramp)), (4, 0))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for k in range(5):
        y = round(k * (height - 1) / 4)
        draw.line([(22, y), (26, y)], fill=INK)
        value = vmax - k * (vmax - vmin) / 4
        draw.text((28, min(max(y - 5, 0), height - 12)), f"{value:.3g}", fill=INK, font=font)
    return np.asarray(img)


def hstack(parts: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels side by side on white, top-aligned."""
    h = max(p.shape[0] for p in parts)
    w = sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for p in parts:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def vstack(parts: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows one below the other on white, left-aligned."""
    w = max(p.shape[1] for p in parts)
    h = sum(p.shape[0] for p in parts) + gap * (len(parts) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    y = 0
    for p in parts:
        out[y : y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out
