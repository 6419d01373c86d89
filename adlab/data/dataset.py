"""Torch dataset over Samples with an in-memory cache of resized images, and its collate.

The cache holds each image after decoding and resizing (before normalisation), so epochs after
the first do no decoding; grayscale stays one channel there and is replicated per batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from torch.utils.data import Dataset

from adlab.data.io import decoding, read_image, read_mask
from adlab.data.records import DatasetError, Sample
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
    """Items are dicts {image, label, path, category[, mask]}; masks at ground-truth resolution."""

    def __init__(
        self, samples: Sequence[Sample], cache: ImageCache, with_masks: bool = False
    ) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        transform = self.cache.transform
        resized = self.cache.images.get(sample.path)
        if resized is None:
            image = read_image(sample.path)
            self.cache.sizes.setdefault(sample.path, image.size)
            resized = transform.resize(image)
        item = {
            "image": transform.finish(resized),
            "label": sample.label,
            "path": sample.path,
            "category": sample.category,
        }
        if self.with_masks:
            item["mask"] = self._mask(sample)
        return item

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
