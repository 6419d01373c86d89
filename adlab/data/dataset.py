"""Torch dataset over Samples with an in-memory cache of resized images, and its collate.

The cache holds each image after decoding and resizing (before normalisation), so epochs after
the first do no decoding; grayscale stays one channel there and is replicated per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from adlab.data.io import header_size, read_image, read_mask, verify_image
from adlab.data.records import DatasetError, Sample
from adlab.data.synthesis import PerlinAnomalies, item_rng
from adlab.data.transforms import Transform
from adlab.data.validate import fit_mask

log = logging.getLogger(__name__)
LATE_SKIP_HINT = (
    "Replace the file, or set dataset.on_bad_image=skip to drop such files from their batch "
    "(each one is logged)."
)


class ImageCache:
    """Decoded, resized images and ground-truth masks keyed by path, plus each image's size.

    keep_pixels: decode and keep every image (cache=memory); else decode each once and drop it
    (decode=True, cache=none's default) or read headers only. Masks are always decoded at setup:
    they are small, and a header check misses a corrupt one until the test, after training."""

    def __init__(
        self,
        transform: Transform,
        keep_pixels: bool,
        decode: bool = True,
        mask_resize: bool = False,
        high_bit_depth: str = "minmax",
    ) -> None:
        self.transform = transform
        self.keep_pixels = keep_pixels
        self.decode = decode
        self.mask_resize = mask_resize
        self.high_bit_depth = high_bit_depth  # how 16-bit and float images become pixels
        self.images: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.resized_masks: list[str] = []

    def load(
        self, samples: Iterable[Sample], workers: int, progress: bool = False
    ) -> dict[str, DatasetError]:
        """Check every sample's image and mask in a thread pool; {image path: error} of each
        failure (all of them, so one message or listing can name every bad file)."""
        unique = sorted({s.path: s for s in samples}.values(), key=lambda s: s.path)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(self._load_one, unique)
            errors = list(_progress(results, len(unique)) if progress else results)
        return {s.path: err for s, err in zip(unique, errors) if err is not None}

    def _load_one(self, sample: Sample) -> DatasetError | None:
        try:
            if self.keep_pixels:
                image = read_image(sample.path, self.high_bit_depth)
                self.sizes[sample.path] = image.size
                self.images[sample.path] = self.transform.resize(image)
            else:
                check = verify_image if self.decode else header_size
                self.sizes[sample.path] = check(sample.path)
            if sample.mask:
                raw = read_mask(sample.mask)
                mask = fit_mask(raw, self.sizes[sample.path], sample, self.mask_resize)
                if mask is not raw:
                    self.resized_masks.append(sample.mask)
                if self.keep_pixels:
                    self.masks[sample.path] = self.transform.crop_mask(mask)
        except DatasetError as exc:
            self.images.pop(sample.path, None)
            return exc
        return None

    def read_mask(self, sample: Sample) -> np.ndarray:
        """The sample's mask file at its image's size (resized only with mask_resize)."""
        return fit_mask(read_mask(sample.mask), self.sizes[sample.path], sample, self.mask_resize)


def _progress(results: Iterator, total: int) -> Iterator:
    from tqdm import tqdm

    return tqdm(results, total=total, desc="decoding", unit="file")


class AnomalyDataset(Dataset):
    """Items are dicts {image, label, path, category[, mask][, index]}; masks at ground-truth
    resolution; `with_index` adds the item's position in the split (the evaluation loaders, so
    code metrics that depend on the test order can restore it after a DDP gather).

    A file that fails to decode here (cache=none; setup checked it, so it changed since or
    dataset.verify=header) follows dataset.on_bad_image: an error naming it, or with skip_bad
    the item is None, dropped by collate and logged.

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
        with_index: bool = False,
        skip_bad: bool = False,
        synthesis: PerlinAnomalies | None = None,
        foreground: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.with_masks = with_masks
        self.with_index = with_index
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # in this process (a worker process keeps its own)
        self.synthesis = synthesis
        self.foreground = foreground or {}
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.samples[index]
        try:
            return self._item(sample, index, epoch)
        except DatasetError as exc:
            if not self.skip_bad:
                raise DatasetError(f"{exc} {LATE_SKIP_HINT}") from exc
            self.skipped.append(sample.path)
            log.warning("skipped a bad file (dataset.on_bad_image=skip): %s", exc)
            return None

    def _item(self, sample: Sample, index: int, epoch: int) -> dict:
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
        if self.with_index:
            item["index"] = index
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
            image = read_image(sample.path, self.cache.high_bit_depth)
            self.cache.sizes.setdefault(sample.path, image.size)
            resized = self.cache.transform.resize(image)
        return resized

    def _mask(self, sample: Sample) -> torch.Tensor:
        cached = self.cache.masks.get(sample.path)
        if cached is not None:
            return cached
        transform = self.cache.transform
        if sample.mask:
            return transform.crop_mask(self.cache.read_mask(sample))
        width, height = self.cache.sizes[sample.path]
        return transform.crop_mask(np.zeros((height, width), dtype=np.uint8))


def default_workers() -> int:
    """Threads for decoding at setup: PIL releases the GIL while decoding and resizing. The
    job's torch threads (its share of the CPUs, resources.threads), not the machine's count."""
    return max(1, min(8, torch.get_num_threads()))
