"""Resize, centre crop and normalise, as each method's official preprocessing does.

Resizing works on PIL images so that LANCZOS (D24FAD) and BICUBIC match the official code; the
cached result is the resized image before normalisation (uint8 where the source is 8-bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Transform:
    """Preprocessing of one run: resize to image_size, centre crop to crop_size, normalise."""

    image_size: int
    crop_size: int | None = None
    resample: str = "bilinear"
    normalize: str = "imagenet"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE:
            raise ValueError(
                f"data.resample={self.resample!r} is not supported; use one of {sorted(RESAMPLE)}."
            )
        if self.normalize not in ("imagenet", "none"):
            raise ValueError(f"data.normalize={self.normalize!r}: use 'imagenet' or 'none'.")
        if int(self.image_size) < 1:
            raise ValueError(f"image_size={self.image_size} must be a positive integer.")
        if self.crop_size is not None and not 0 < int(self.crop_size) <= int(self.image_size):
            raise ValueError(
                f"data.crop_size={self.crop_size} must be in 1..image_size={self.image_size} "
                "(or null for no crop)."
            )

    @property
    def output_size(self) -> int:
        return int(self.crop_size or self.image_size)

    @property
    def crop_fraction(self) -> float:
        return self.output_size / int(self.image_size)

    def resize(self, image: Image.Image) -> torch.Tensor:
        """PIL image (L, RGB or F) -> (C, S, S) tensor, uint8 for L/RGB, float32 for F."""
        size = int(self.image_size)
        image = image.resize((size, size), RESAMPLE[self.resample])
        if self.crop_size:
            left = (size - int(self.crop_size)) // 2
            image = image.crop((left, left, left + int(self.crop_size), left + int(self.crop_size)))
        array = np.asarray(image)
        if image.mode == "F":
            array = np.clip(array, 0.0, 1.0)  # LANCZOS/BICUBIC overshoot at edges
        tensor = torch.from_numpy(np.array(array, copy=True))
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()

    def finish(self, resized: torch.Tensor) -> torch.Tensor:
        """Cached (C, S, S) tensor -> float32 (3, S, S), normalised per config."""
        return self.normalise(self.unit(resized))

    @staticmethod
    def unit(resized: torch.Tensor) -> torch.Tensor:
        """Cached (C, S, S) tensor -> float32 (C, S, S) in [0, 1]: where data transforms such as
        synthetic anomalies work, before normalisation."""
        return resized.float() / 255.0 if resized.dtype == torch.uint8 else resized.float()

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(C, S, S) in [0, 1] -> (3, S, S) model input (grayscale replicated, then normalised)."""
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        if self.normalize == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            image = (image - mean) / std
        return image.contiguous()

    def crop_mask(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) 0/1 mask -> (1, h, w) uint8 at ground-truth resolution, centre-cropped by the
        same fraction as the image so that it covers the same content."""
        if self.crop_size:
            height, width = mask.shape
            keep_h = max(1, round(height * self.crop_fraction))
            keep_w = max(1, round(width * self.crop_fraction))
            top, left = (height - keep_h) // 2, (width - keep_w) // 2
            mask = mask[top : top + keep_h, left : left + keep_w]
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)).unsqueeze(0)
