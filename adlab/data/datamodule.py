"""AnomalyDataModule: config -> validated samples -> cached datasets -> DataLoaders.

A plain class with the LightningDataModule method names (no Lightning import: only
adlab/methods knows Lightning); adlab.run passes its loaders to the Trainer.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from adlab.data import synthetic
from adlab.data.batch import BASE_KEYS, collate
from adlab.data.dataset import AnomalyDataset, ImageCache, default_workers
from adlab.data.fingerprint import fingerprint
from adlab.data.readers import get_reader
from adlab.data.readers.elpv import package_root
from adlab.data.records import DatasetError, Sample
from adlab.data.samplers import carve_validation, select_train
from adlab.data.support import SupportSet, support_sets
from adlab.data.transforms import Transform

DEFAULT_CACHE_MAX_IMAGES = 20000


def as_dict(config: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


def resolve_root(config: Mapping[str, Any]) -> Path:
    """The folder the reader reads: dataset.root, the generated synthetic tree, or ELPV's package
    data when root is null."""
    name = str(config.get("name", ""))
    root = config.get("root")
    if root is None:
        if name == "elpv" or config.get("reader") == "elpv":
            return package_root()
        base = os.environ.get("ADLAB_DATA", "./data")
        root = f"{base}/{name}"
    path = Path(str(root)).expanduser().resolve()
    if name == "synthetic" or config.get("reader") == "synthetic":
        tree, _ = synthetic.ensure_tree(path, config)
        return tree
    if not path.is_dir():
        raise DatasetError(
            f"dataset.root={path} does not exist. Put the {name} benchmark there (layout: see "
            "README.md, Datasets) or set dataset.root=<folder> / the ADLAB_DATA variable."
        )
    return path


class AnomalyDataModule:
    """Reads and validates a benchmark and serves train/valid/test loaders of dict batches."""

    def __init__(
        self,
        dataset: Mapping[str, Any],
        sampler: Mapping[str, Any] | None = None,
        image_size: int = 256,
        crop_size: int | None = None,
        resample: str = "bilinear",
        normalize: str = "imagenet",
        batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        self.config = as_dict(dataset)
        self.sampler = as_dict(sampler) or {"name": "full"}
        self.transform = Transform(int(image_size), crop_size, str(resample), str(normalize))
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.splits: dict[str, list[Sample]] = {}
        self.skipped: list[str] = []
        self.fingerprint = ""
        self.root = ""
        self.has_masks = False
        self.support: list[SupportSet] = []  # sampler=kshot: the target's support sets
        self.pool_size = 0  # training normals the support sets are drawn from
        self._cache: ImageCache | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read, validate, sample and (with cache=memory) decode everything once."""
        if self._cache is not None:
            return
        config = self.config
        if not config.get("name"):
            raise DatasetError("dataset.name is missing: pick a config with dataset=<name>.")
        on_bad = str(config.get("on_bad_image", "error"))
        if on_bad not in ("error", "skip"):
            raise DatasetError(f"dataset.on_bad_image={on_bad!r}: use 'error' or 'skip'.")
        root = resolve_root(config)
        self.root = str(root)
        samples = get_reader(config)(root, config)
        self.fingerprint = fingerprint(samples, str(root))
        self._check_masks(samples)
        cache = ImageCache(self.transform, keep_pixels=self._use_memory_cache(len(samples)))
        workers = int(config.get("decode_workers") or default_workers())
        self.skipped = cache.load(samples, workers, skip_bad=on_bad == "skip")
        bad = set(self.skipped)
        samples = [s for s in samples if s.path not in bad]
        self.splits = self._split(samples)
        outside = [s for s in self.splits["train"] if s.path not in cache.sizes]
        cache.load(outside, workers, skip_bad=False)  # a support_dir's files: checked now
        self.has_masks = any(s.mask for s in self.splits["test"])
        self._cache = cache

    def _use_memory_cache(self, count: int) -> bool:
        mode = str(self.config.get("cache", "auto"))
        if mode not in ("auto", "memory", "none"):
            raise DatasetError(f"dataset.cache={mode!r}: use 'auto', 'memory' or 'none'.")
        limit = int(self.config.get("cache_max_images", DEFAULT_CACHE_MAX_IMAGES))
        return mode == "memory" or (mode == "auto" and count <= limit)

    @staticmethod
    def _check_masks(samples: list[Sample]) -> None:
        """A set with pixel masks must have one for every anomalous test image."""
        anomalous = [s for s in samples if s.split == "test" and s.label == 1]
        with_mask = [s for s in anomalous if s.mask]
        if with_mask and len(with_mask) != len(anomalous):
            missing = next(s for s in anomalous if not s.mask)
            raise DatasetError(
                f"{missing.path}: anomalous test image without a mask, while "
                f"{len(with_mask)} others have one; add its mask file."
            )

    def _split(self, samples: list[Sample]) -> dict[str, list[Sample]]:
        name = self.config.get("name")
        train = [s for s in samples if s.split == "train" and s.label == 0]
        valid = [s for s in samples if s.split == "valid"]
        test = sorted((s for s in samples if s.split == "test"), key=lambda s: s.path)
        if not train:
            raise DatasetError(
                f"dataset {name} at {self.root}: zero normal training images (after skipping "
                f"{len(self.skipped)} bad files); check dataset.root and dataset.category."
            )
        if not test:
            raise DatasetError(f"dataset {name} at {self.root}: zero test images.")
        fraction = float(self.config.get("val_fraction", 0) or 0)
        if fraction:
            if valid:
                raise DatasetError(
                    f"dataset.val_fraction={fraction} but {name} has its own validation split "
                    "(used by default); set dataset.val_fraction=0."
                )
            train, valid = carve_validation(train, fraction, self.seed)
        if self.config.get("val_from_test"):  # explicit opt-in only: the test set itself
            valid = list(test)
        # k-shot: the support sets (per seed, or a support_dir); a method without supports
        # trains on the first, so RD4AD k-shot and D24FAD's test of that seed share the images.
        self.pool_size = len(train)
        self.support = support_sets(train, test, self.sampler)
        train = list(self.support[0].samples) if self.support else select_train(train, self.sampler)
        return {"train": train, "valid": sorted(valid, key=lambda s: s.path), "test": test}

    def _loader(self, split: str, shuffle: bool, masks: bool) -> DataLoader:
        if self._cache is None:
            raise RuntimeError("call AnomalyDataModule.setup() before asking for loaders")
        dataset = AnomalyDataset(self.splits[split], self._cache, with_masks=masks)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=False,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, masks=False)

    def val_dataloader(self) -> DataLoader | None:
        if not self.splits.get("valid"):
            return None
        masks = any(s.mask for s in self.splits["valid"])
        return self._loader("valid", shuffle=False, masks=masks)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, masks=self.has_masks)

    def batch_keys(self, split: str) -> set[str]:
        """The fields of this split's batches (what a method may require)."""
        keys = set(BASE_KEYS)
        if split == "test" and self.has_masks:
            keys.add("mask")
        return keys

    def reference_images(self, support: SupportSet | None = None) -> torch.Tensor | None:
        """The images of a support set (default: the first) that few-shot methods score test
        images against; None without sampler=kshot."""
        support = support or (self.support[0] if self.support else None)
        if support is None:
            return None
        dataset = AnomalyDataset(support.samples, self._cache)
        return torch.stack([dataset[i]["image"] for i in range(len(dataset))])

    def reference_sets(self) -> list[SupportSet]:
        """Every support set a few-shot method is tested against (one test per set)."""
        return list(self.support)

    def summary(self) -> dict[str, Any]:
        """Counts per split and label, masks found and the fingerprint (check's JSON line)."""

        def count(split: str) -> Counter:
            return Counter(s.label for s in self.splits.get(split, []))

        valid, test = count("valid"), count("test")
        masks = sum(1 for split in ("valid", "test") for s in self.splits.get(split, []) if s.mask)
        return {
            "train": {"normal": len(self.splits.get("train", []))},
            "valid": {"normal": valid[0], "anomalous": valid[1]},
            "test": {"normal": test[0], "anomalous": test[1]},
            "masks": masks,
            "fingerprint": self.fingerprint,
        }
