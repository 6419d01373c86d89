"""Texture sources for synthetic anomalies: a folder of images (URD's code uses DTD) or textures
generated on the fly in several families, so synthesis runs offline without a download.

Both return (C, H, W) float32 in [0, 1] with the image's channel count: RGB for colour images,
luminance for grayscale ones (a coloured patch on a CT slice would be trivially detectable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from adlab.data.io import header_size, is_image_file, read_image
from adlab.data.records import DatasetError
from adlab.data.synthesis.perlin import perlin_noise

FAMILIES = ("noise", "stripes", "cells", "blobs", "colour")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class TextureSource(Protocol):
    def sample(
        self, rng: np.random.Generator, size: tuple[int, int], channels: int
    ) -> torch.Tensor:
        """One texture of `size` (H, W) as (channels, H, W) float32 in [0, 1]."""
        ...


def _to_tensor(rgb: np.ndarray, channels: int) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (channels, H, W) float32; one channel = luminance."""
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    array = (rgb @ LUMA)[None] if channels == 1 else rgb.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class TextureFolder:
    """Every image under `folder` (any depth, sorted), drawn uniformly and resized (squashed, PIL
    bilinear) to the image size, as URD's code does with DTD's images/*/*.jpg."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        hint = (
            "set synthesis.textures to a folder of texture images (e.g. DTD's dtd/images), or "
            "synthesis.textures=null to use generated textures"
        )
        if not self.folder.is_dir():
            raise DatasetError(f"synthesis.textures={self.folder}: not a folder; {hint}.")
        try:
            files = sorted(p for p in self.folder.rglob("*") if p.is_file() and is_image_file(p))
        except OSError as exc:
            raise DatasetError(
                f"synthesis.textures={self.folder}: cannot list the folder ({exc}); {hint}."
            ) from exc
        if not files:
            raise DatasetError(
                f"synthesis.textures={self.folder}: no image files (.png, .jpg, ...) in it or its "
                f"subfolders; {hint}."
            )
        for path in files:  # header check only: a broken file is named now, not mid-training
            try:
                header_size(path)
            except DatasetError as exc:
                raise DatasetError(
                    f"synthesis.textures={self.folder}: {exc} Remove the file or {hint}."
                ) from exc
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def sample(
        self, rng: np.random.Generator, size: tuple[int, int], channels: int
    ) -> torch.Tensor:
        path = self.files[int(rng.integers(len(self.files)))]
        image = read_image(path)
        if image.mode == "F":  # high bit-depth, already scaled to [0, 1]
            image = Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8))
        image = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return _to_tensor(np.asarray(image, dtype=np.float32) / 255.0, channels)


class GeneratedTextures:
    """Procedural textures, one family drawn uniformly per sample: fractal noise, stripes,
    Voronoi cells, blobs and smooth colour fields, each with random colours and parameters."""

    def __init__(self, families: tuple[str, ...] | list[str] = FAMILIES) -> None:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise DatasetError(
                f"synthesis.families={list(families)}: use a non-empty subset of {list(FAMILIES)}."
            )
        self.families = tuple(families)

    def sample(
        self, rng: np.random.Generator, size: tuple[int, int], channels: int
    ) -> torch.Tensor:
        family = self.families[int(rng.integers(len(self.families)))]
        return _to_tensor(GENERATORS[family](rng, size), channels)


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.random((n, 3))


def _ramp(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> (H, W, 3) between two colours."""
    v = np.clip(values, 0, 1)[..., None]
    return low * (1 - v) + high * v


def _coords(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates in [0, 1)."""
    rows, cols = np.meshgrid(np.arange(size[0]) / size[0], np.arange(size[1]) / size[1],
                             indexing="ij")  # fmt: skip
    return rows, cols


def noise_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Fractal Perlin noise (3-5 octaves) through a two-colour ramp, plus fine grain."""
    base = int(rng.integers(1, 5))
    octaves = int(rng.integers(3, 6))
    total, amplitude = np.zeros(size), 1.0
    for octave in range(octaves):
        cells = base * 2**octave
        total += amplitude * perlin_noise(size, (cells, cells), rng)
        amplitude *= 0.5
    values = 0.5 + total / 1.5
    grain = rng.normal(0, rng.uniform(0, 0.08), size)
    low, high = _colours(rng, 2)
    return _ramp(values + grain, low, high)


def stripes_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Parallel stripes at a random angle and frequency, sine or square profile, with a Perlin
    wobble of the phase."""
    rows, cols = _coords(size)
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 24)
    wobble = rng.uniform(0, 1.5) * perlin_noise(size, (2, 2), rng)
    phase = 2 * np.pi * (frequency * (rows * np.cos(angle) + cols * np.sin(angle))) + wobble
    wave = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:
        wave = (wave > rng.uniform(0.3, 0.7)).astype(np.float64)
    low, high = _colours(rng, 2)
    return _ramp(wave, low, high)


def cells_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Voronoi cells with one random colour each, darkened towards the cell borders."""
    rows, cols = (c.astype(np.float32) for c in _coords(size))
    count = int(rng.integers(6, 64))
    points = rng.random((count, 2)).astype(np.float32)
    dist = (rows[None] - points[:, 0, None, None]) ** 2
    dist += (cols[None] - points[:, 1, None, None]) ** 2
    nearest = np.partition(dist, 1, axis=0)[:2]
    colours = _colours(rng, count)[np.argmin(dist, axis=0)]
    edge = np.sqrt(nearest[1]) - np.sqrt(nearest[0])
    border = np.clip(edge / rng.uniform(0.01, 0.05), 0, 1)[..., None]
    dark = rng.uniform(0.2, 0.8)
    return colours * (dark + (1 - dark) * border)


def blobs_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Soft random ellipses of random colours over a flat background (each computed only inside
    its bounding box)."""
    rows, cols = _coords(size)
    out = np.broadcast_to(_colours(rng, 1)[0], (*size, 3)).copy()
    for _ in range(int(rng.integers(3, 20))):
        centre = rng.random(2)
        radii = rng.uniform(0.03, 0.25, 2)
        theta = rng.uniform(0, np.pi)
        power = rng.uniform(0, 1)
        colour = _colours(rng, 1)[0]
        reach = radii.max() * np.sqrt(1.5)  # alpha is 0 beyond this distance from the centre
        r0, r1 = (np.clip(centre[0] + np.array([-reach, reach]), 0, 1) * size[0]).astype(int)
        c0, c1 = (np.clip(centre[1] + np.array([-reach, reach]), 0, 1) * size[1]).astype(int)
        box = (slice(r0, r1 + 1), slice(c0, c1 + 1))
        dr, dc = rows[box] - centre[0], cols[box] - centre[1]
        u = (dr * np.cos(theta) + dc * np.sin(theta)) / radii[0]
        v = (-dr * np.sin(theta) + dc * np.cos(theta)) / radii[1]
        alpha = np.clip(1.5 - (u * u + v * v), 0, 1)[..., None] ** (0.5 + 2.5 * power)
        out[box] = out[box] * (1 - alpha) + colour * alpha
    return out


def colour_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth colour field: a coarse grid of random colours interpolated (cubic) to the size."""
    cells = int(rng.integers(2, 6))
    grid = _colours(rng, cells * cells).reshape(cells, cells, 3)
    rows, cols = np.meshgrid(np.linspace(0, cells - 1, size[0]), np.linspace(0, cells - 1, size[1]),
                             indexing="ij")  # fmt: skip
    field = [ndimage.map_coordinates(grid[..., c], [rows, cols], order=3, mode="nearest")
             for c in range(3)]  # fmt: skip
    return np.stack(field, axis=-1)


GENERATORS = {
    "noise": noise_texture,
    "stripes": stripes_texture,
    "cells": cells_texture,
    "blobs": blobs_texture,
    "colour": colour_texture,
}
