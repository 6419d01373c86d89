"""Torch dataset over Samples with an in-memory cache of resized images, and its collate.

The cache holds each image after decoding and resizing (before normalisation), so epochs after
the first do no decoding; grayscale stays one channel there and is replicated per batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from adlab.data.io import decoding, read_image, read_mask
from adlab.data.records import DatasetError, Sample
from adlab.data.synthesis import PerlinAnomalies, item_rng
from adlab.data.transforms import Transform


class ImageCache:
    """Decoded, resized images and ground-truth masks keyed by path, plus each image's size."""

    def __init__(self, transform: Transform, keep_pixels: bool) -> None:
        self.transform = transform
        self.keep_pixels = keep_pixels
        self.images: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.sizes: dict[str, tuple[int, int]] = {}

    def load(self, samples: Iterable[Sample], workers: int, skip_bad: bool) -> list[str]:
        """Decode (or, without keep_pixels, check the header of) every sample's image and mask.
        Returns the paths that failed when skip_bad, else raises the first failure."""
        unique = sorted({s.path: s for s in samples}.values(), key=lambda s: s.path)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(self._load_one, unique))
        failed = [(sample.path, err) for sample, err in zip(unique, results) if err is not None]
        if failed and not skip_bad:
            raise failed[0][1]
        return [path for path, _ in failed]

    def _load_one(self, sample: Sample) -> DatasetError | None:
        try:
            if self.keep_pixels:
                image = read_image(sample.path)
                self.sizes[sample.path] = image.size
                self.images[sample.path] = self.transform.resize(image)
            else:
                self.sizes[sample.path] = _check_header(sample.path)
            if sample.mask and self.keep_pixels:
                self.masks[sample.path] = self.transform.crop_mask(read_mask(sample.mask))
        except DatasetError as exc:
            return exc
        return None


def _check_header(path: str) -> tuple[int, int]:
    """Cheap validity check without a full decode (used when nothing is cached)."""
    if path.lower().endswith(".dcm"):
        return read_image(path).size
    with decoding(path), Image.open(path) as image:
        size = image.size
        image.verify()
    return size


class AnomalyDataset(Dataset):
    """Items are dicts {image, label, path, category[, mask]}; masks at ground-truth resolution.

    With `synthesis`, items also carry `augmented` (the image with a synthetic anomaly, normalised
    like `image`) and `synthetic_mask` ((1, H, W) float 0/1), drawn from (seed, epoch, index):
    the key is an index or an (index, epoch) pair from EpochSampler (a bare index is epoch 0).
    `foreground` maps a path to the (H, W) bool mask the anomaly must stay inside.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        cache: ImageCache,
        with_masks: bool = False,
        synthesis: PerlinAnomalies | None = None,
        foreground: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.with_masks = with_masks
        self.synthesis = synthesis
        self.foreground = foreground or {}
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.samples[index]
        transform = self.cache.transform
        resized = self.resized(sample)
        image = transform.unit(resized)
        item = {
            "image": transform.normalise(image),
            "label": sample.label,
            "path": sample.path,
            "category": sample.category,
        }
        if self.with_masks:
            item["mask"] = self._mask(sample)
        if self.synthesis is not None:
            rng = item_rng(self.seed, epoch, index)
            fg = self.foreground.get(sample.path)
            damaged, mask = self.synthesis(image, rng, fg)
            item["augmented"] = transform.normalise(damaged)
            item["synthetic_mask"] = mask
        return item

    def resized(self, sample: Sample) -> torch.Tensor:
        """The cached resized image (C, S, S), decoded now when nothing is cached."""
        resized = self.cache.images.get(sample.path)
        if resized is None:
            image = read_image(sample.path)
            self.cache.sizes.setdefault(sample.path, image.size)
            resized = self.cache.transform.resize(image)
        return resized

    def _mask(self, sample: Sample) -> torch.Tensor:
        cached = self.cache.masks.get(sample.path)
        if cached is not None:
            return cached
        transform = self.cache.transform
        if sample.mask:
            return transform.crop_mask(read_mask(sample.mask))
        width, height = self.cache.sizes[sample.path]
        return transform.crop_mask(torch.zeros(height, width, dtype=torch.uint8).numpy())


def default_workers() -> int:
    """Threads for decoding at setup: PIL releases the GIL while decoding and resizing."""
    return min(8, os.cpu_count() or 1)
