"""Perlin noise and the thresholded, rotated Perlin mask of DRAEM-style synthetic anomalies.

Single-octave gradient noise as URD's code draws it (random gradient angles on a (rx+1, ry+1)
lattice, quintic fade, scaled by sqrt 2), evaluated at pixel i of n at lattice position i*r/n, so
it matches the lattice of the official code when n is a multiple of r and works at any size.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def fade(t: np.ndarray) -> np.ndarray:
    """Quintic fade 6t^5 - 15t^4 + 10t^3: C2-continuous interpolation weights."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """(H, W) float64 noise with res[0] lattice cells along rows and res[1] along columns; zero
    at lattice points, within about [-1, 1]."""
    height, width = shape
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    grads = np.stack((np.cos(angles), np.sin(angles)), axis=-1)
    pos_r = np.arange(height) * (res[0] / height)
    pos_c = np.arange(width) * (res[1] / width)
    cell_r, cell_c = np.floor(pos_r).astype(int), np.floor(pos_c).astype(int)
    fr, fc = np.meshgrid(pos_r - cell_r, pos_c - cell_c, indexing="ij")
    cr, cc = np.meshgrid(cell_r, cell_c, indexing="ij")

    def corner(dr: int, dc: int) -> np.ndarray:
        g = grads[cr + dr, cc + dc]
        return g[..., 0] * (fr - dr) + g[..., 1] * (fc - dc)

    tr, tc = fade(fr), fade(fc)
    n0 = corner(0, 0) + tr * (corner(1, 0) - corner(0, 0))
    n1 = corner(0, 1) + tr * (corner(1, 1) - corner(0, 1))
    return math.sqrt(2) * (n0 + tc * (n1 - n0))


def rotate(array: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre with bilinear interpolation; what comes from outside is 0 (as
    imgaug's Affine in URD's code), so rotated corners never exceed a positive threshold."""
    if degrees == 0:
        return array
    return ndimage.rotate(array, degrees, reshape=False, order=1, mode="constant", cval=0.0)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    scale_exponents: tuple[int, int] = (0, 6),
    rotation: float = 90.0,
    threshold: float = 0.5,
) -> np.ndarray:
    """(H, W) bool mask: noise with 2^a x 2^b cells (a, b drawn independently from
    [low, high)), rotated by a uniform angle in [-rotation, rotation], above `threshold`."""
    low, high = scale_exponents
    exp_r, exp_c = rng.integers(low, high, size=2)
    noise = perlin_noise(shape, (2 ** int(exp_r), 2 ** int(exp_c)), rng)
    angle = float(rng.uniform(-rotation, rotation)) if rotation else 0.0
    return rotate(noise, angle) > threshold
