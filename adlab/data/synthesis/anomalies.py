"""DRAEM-style synthetic anomalies, as URD's code makes them: a thresholded, rotated Perlin mask
filled with a texture blended into the image, img*(1-m) + (1-beta)*tex*m + beta*img*m.

Works on the resized image in [0, 1] before normalisation; every sample gets an anomaly (the
official aug_prob is 1.0). The mask marks exactly the pixels the blend replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from adlab.data.records import DatasetError
from adlab.data.synthesis.perlin import perlin_mask
from adlab.data.synthesis.textures import FAMILIES, GeneratedTextures, TextureFolder, TextureSource

KEYS = ("name", "textures", "families", "beta", "perlin_scale", "threshold", "rotation",
        "foreground")  # fmt: skip


class Synthetic(NamedTuple):
    damaged: torch.Tensor  # (C, H, W) float32 in [0, 1]
    mask: torch.Tensor  # (1, H, W) float32 0/1
    texture: torch.Tensor  # (C, H, W) the texture that was blended in
    beta: float  # weight of the original image inside the mask


@dataclass(frozen=True)
class PerlinAnomalies:
    """The generator of one run: texture source and the ranges each sample is drawn from."""

    textures: TextureSource
    beta: tuple[float, float] = (0.0, 0.8)
    perlin_scale: tuple[int, int] = (0, 6)  # exponents: 2^a cells, a in [low, high)
    threshold: float = 0.5
    rotation: float = 90.0  # degrees, uniform in [-rotation, rotation]

    def synthesize(
        self,
        image: torch.Tensor,
        rng: np.random.Generator,
        foreground: np.ndarray | torch.Tensor | None = None,
    ) -> Synthetic:
        """(C, H, W) image in [0, 1] -> damaged image, mask, texture and beta. The anomaly only
        lands where `foreground` (H, W) is true."""
        channels, height, width = image.shape
        mask = perlin_mask((height, width), rng, self.perlin_scale, self.rotation, self.threshold)
        if foreground is not None:
            mask = mask & np.asarray(foreground, dtype=bool)
        texture = self.textures.sample(rng, (height, width), channels)
        beta = float(rng.uniform(*self.beta))
        inside = torch.from_numpy(mask)[None]
        image = image.float()
        damaged = torch.where(inside, (1 - beta) * texture + beta * image, image)
        return Synthetic(damaged, inside.float(), texture, beta)

    def __call__(
        self,
        image: torch.Tensor,
        rng: np.random.Generator,
        foreground: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.synthesize(image, rng, foreground)
        return out.damaged, out.mask


def _pair(config: Mapping[str, Any], key: str, default: tuple) -> tuple:
    value = config.get(key, default)
    if not isinstance(value, list | tuple) or len(value) != 2 or value[0] > value[1]:
        raise DatasetError(f"synthesis.{key}={value!r}: give [low, high] with low <= high.")
    return tuple(value)


def enabled(config: Mapping[str, Any] | None) -> bool:
    return bool(config) and str(config.get("name", "none")) != "none"


def check_config(config: Mapping[str, Any]) -> None:
    """Reject unknown keys and names before any data is read."""
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise DatasetError(f"synthesis has unknown keys {unknown}; known: {list(KEYS)}.")
    name = str(config.get("name", "none"))
    if name not in ("none", "perlin"):
        raise DatasetError(f"synthesis.name={name!r}: use synthesis=none or synthesis=perlin.")


def build_anomalies(config: Mapping[str, Any]) -> PerlinAnomalies:
    """PerlinAnomalies from the synthesis config group (lists the texture folder)."""
    check_config(config)
    low, high = _pair(config, "perlin_scale", (0, 6))
    if not 0 <= low < high:
        raise DatasetError(f"synthesis.perlin_scale=[{low}, {high}]: need 0 <= low < high.")
    beta = _pair(config, "beta", (0.0, 0.8))
    if not (0 <= beta[0] and beta[1] <= 1):
        raise DatasetError(f"synthesis.beta={list(beta)}: the range must lie in [0, 1].")
    folder = config.get("textures")
    textures: TextureSource = (
        TextureFolder(folder) if folder else GeneratedTextures(config.get("families") or FAMILIES)
    )
    return PerlinAnomalies(
        textures=textures,
        beta=(float(beta[0]), float(beta[1])),
        perlin_scale=(int(low), int(high)),
        threshold=float(config.get("threshold", 0.5)),
        rotation=float(config.get("rotation", 90.0)),
    )
