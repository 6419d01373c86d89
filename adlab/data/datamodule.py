"""AnomalyDataModule: config -> validated samples -> cached datasets -> DataLoaders.

A plain class with the LightningDataModule method names (no Lightning import: only
adlab/methods knows Lightning); adlab.run passes its loaders to the Trainer.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler

from adlab.data import synthetic
from adlab.data.batch import BASE_KEYS, collate
from adlab.data.dataset import AnomalyDataset, ImageCache, default_workers
from adlab.data.fingerprint import fingerprint
from adlab.data.io import IMAGE_EXTENSIONS, check_high_bit_depth
from adlab.data.readers import get_reader
from adlab.data.readers.common import unread_files
from adlab.data.readers.elpv import package_root
from adlab.data.records import DatasetError, Sample
from adlab.data.resumable import ResumableBatchSampler, ResumableLoader
from adlab.data.samplers import carve_validation, select_train
from adlab.data.support import SupportSet, support_sets
from adlab.data.synthesis import EpochSampler, PerlinAnomalies, build_anomalies, enabled
from adlab.data.synthesis.anomalies import check_config
from adlab.data.synthesis.foreground import foreground_mask, method_for, warn_without_opencv
from adlab.data.transforms import Transform
from adlab.data.validate import one_class_splits, raise_for_bad_files

DEFAULT_CACHE_MAX_IMAGES = 20000
SHOWN_PATHS = 5  # paths named in a log line about skipped or unread files
log = logging.getLogger(__name__)


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
    if root == "???":
        raise DatasetError(f"dataset={name} needs its folder: add dataset.root=<folder>.")
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


def _first(items: Iterable[str], count: int = SHOWN_PATHS) -> str:
    """The first `count` items, space separated, with '...' when there are more."""
    items = list(items)
    return " ".join(items[:count]) + (" ..." if len(items) > count else "")


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
        allow_one_class: bool = False,
        synthesis: Mapping[str, Any] | None = None,
        high_bit_depth: str = "minmax",
    ) -> None:
        self.config = as_dict(dataset)
        self.high_bit_depth = check_high_bit_depth(str(high_bit_depth))
        self.synthesis = as_dict(synthesis)
        if self.synthesis:
            check_config(self.synthesis)
        self.anomalies: PerlinAnomalies | None = None
        self.foreground: dict[str, np.ndarray] = {}
        self.sampler = as_dict(sampler) or {"name": "full"}
        self.transform = Transform(int(image_size), crop_size, str(resample), str(normalize))
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.allow_one_class = bool(allow_one_class)
        self.splits: dict[str, list[Sample]] = {}
        self.skipped: list[str] = []
        self.unsupported: list[str] = []
        self.fingerprint = ""
        self.root = ""
        self.has_masks = False
        self.support: list[SupportSet] = []  # sampler=kshot: the target's support sets
        self.pool_size = 0  # training normals the support sets are drawn from
        self._cache: ImageCache | None = None
        self._datasets: list[AnomalyDataset] = []

    def setup(self, stage: str | None = None) -> None:
        """Read, validate every file (images and masks), skip or stop on bad ones, sample and
        (with cache=memory) decode everything once."""
        if self._cache is not None:
            return
        on_bad = str(self.config.get("on_bad_image", "error"))
        if on_bad not in ("error", "skip"):
            raise DatasetError(f"dataset.on_bad_image={on_bad!r}: use 'error' or 'skip'.")
        samples = self.read()
        cache = self.make_cache(len(samples))
        workers = int(self.config.get("decode_workers") or default_workers())
        failed = cache.load(samples, workers)
        raise_for_bad_files(failed, skip=on_bad == "skip")
        self.skipped = sorted(failed)
        if failed:
            log.warning(
                "skipped %d bad files (dataset.on_bad_image=skip; listed in results.json): %s",
                len(failed),
                _first(str(failed[path]) for path in self.skipped),
            )
        if cache.resized_masks:
            log.info(
                "resized %d masks to their image's size (dataset.mask_resize=true): %s",
                len(cache.resized_masks),
                _first(sorted(cache.resized_masks)),
            )
        samples = [s for s in samples if s.path not in failed]
        self.fingerprint = fingerprint(samples, self.root)  # the files actually used
        self.splits = self._split(samples)
        self._check_test_classes()
        outside = [s for s in self.splits["train"] if s.path not in cache.sizes]
        raise_for_bad_files(cache.load(outside, workers), skip=False)  # support_dir files
        self.has_masks = any(s.mask for s in self.splits["test"])
        self._cache = cache
        if enabled(self.synthesis):
            self.anomalies = build_anomalies(self.synthesis)
            self.foreground = self._foreground_masks(self.splits["train"], workers)
        log.info(
            "dataset %s at %s: %s", self.config.get("name"), self.root, json.dumps(self.summary())
        )

    def read(self) -> list[Sample]:
        """The reader's samples, with complete masks; notes files that look like images but are
        not read (unsupported formats) in `unsupported` and a warning. Decodes nothing."""
        if not self.config.get("name"):
            raise DatasetError("dataset.name is missing: pick a config with dataset=<name>.")
        root = resolve_root(self.config)
        self.root = str(root)
        with unread_files() as unread:
            samples = get_reader(self.config)(root, self.config)
        self.unsupported = sorted({str(p) for p in unread})
        if self.unsupported:
            log.warning(
                "%d files in the dataset folders look like images but are not read (adlab reads "
                "%s; convert or rename them): %s",
                len(self.unsupported),
                " ".join(IMAGE_EXTENSIONS),
                _first(self.unsupported),
            )
        self._check_masks(samples)
        return samples

    def make_cache(self, count: int) -> ImageCache:
        """The cache for `count` images, per dataset.cache, verify and mask_resize."""
        verify = str(self.config.get("verify", "full"))
        if verify not in ("full", "header"):
            raise DatasetError(f"dataset.verify={verify!r}: use 'full' or 'header'.")
        return ImageCache(
            self.transform,
            keep_pixels=self._use_memory_cache(count),
            decode=verify == "full",
            mask_resize=bool(self.config.get("mask_resize", False)),
            high_bit_depth=self.high_bit_depth,
        )

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

    def _check_test_classes(self) -> None:
        """Image AUROC and the other test metrics need normal and anomalous test images."""
        problems = one_class_splits(self.splits["test"])
        if not problems or self.allow_one_class:
            return
        notes = ""
        if self.unsupported:
            notes += f"; {len(self.unsupported)} files that look like images were not read"
        if self.skipped:
            notes += f"; {len(self.skipped)} bad files were skipped"
        raise DatasetError(
            f"dataset {self.config.get('name')} at {self.root}: {'; '.join(problems)}{notes}. "
            "The test metrics need both classes: check the folders of the missing class and "
            "dataset.category, or set eval.allow_one_class=true to test anyway (the metrics that "
            "need both classes are then NaN)."
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

    def _foreground_masks(self, samples: list[Sample], workers: int) -> dict[str, np.ndarray]:
        """Where synthetic anomalies may land, per training image (dataset.foreground per
        category; synthesis.foreground=false turns it off), computed once from the resized image
        as URD's code does at dataset construction."""
        rule = self.config.get("foreground")
        if not self.synthesis.get("foreground", True) or not rule:
            return {}
        methods = {s.path: method_for(rule, s.category) for s in samples}
        todo = [s for s in samples if methods[s.path] != "none"]
        warn_without_opencv({methods[s.path] for s in todo})
        dataset = AnomalyDataset(todo, self._cache)  # type: ignore[arg-type]

        def one(sample: Sample) -> np.ndarray | None:
            return foreground_mask(dataset.resized(sample), methods[sample.path])

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            masks = list(pool.map(one, todo))
        return {s.path: m for s, m in zip(todo, masks) if m is not None}

    def _loader(self, split: str, shuffle: bool, masks: bool, epoch: int = 0) -> DataLoader:
        if self._cache is None:
            raise RuntimeError("call AnomalyDataModule.setup() before asking for loaders")
        synthesis = self.anomalies if split == "train" else None
        dataset = AnomalyDataset(
            self.splits[split],
            self._cache,
            with_masks=masks,
            with_index=split != "train",
            skip_bad=self.config.get("on_bad_image") == "skip",
            synthesis=synthesis,
            foreground=self.foreground,
            seed=self.seed,
        )
        self._datasets.append(dataset)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        # The order is what shuffle=True draws (a RandomSampler on the same generator). Synthesis
        # draws from (seed, epoch, index): EpochSampler carries the epoch to the workers.
        order = RandomSampler(dataset, generator=generator) if shuffle else range(len(dataset))
        if synthesis is not None:
            order = EpochSampler(order, epoch)  # type: ignore[arg-type]
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        loader = ResumableLoader if split == "train" else DataLoader
        return loader(
            dataset,
            batch_sampler=ResumableBatchSampler(order, batch_size, False, even=split == "train"),
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self, epoch: int = 0) -> DataLoader:
        """Shuffled training batches; `epoch` is where synthetic anomalies start (a resumed fit:
        adlab.data.synthesis.checkpoint_epoch(ckpt_path))."""
        return self._loader("train", shuffle=True, masks=False, epoch=epoch)

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
        if split != "train":
            keys.add("index")
        if split == "train" and enabled(self.synthesis):
            keys |= {"augmented", "synthetic_mask"}
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
            "skipped": len(self.skipped),
            "unsupported": len(self.unsupported),
            "fingerprint": self.fingerprint,
        }

    def skipped_while_loading(self) -> list[str]:
        """Files dropped from batches after setup (on_bad_image=skip), as seen by this process:
        with num_workers > 0 each worker keeps its own list, and the log names every file."""
        return [path for dataset in self._datasets for path in dataset.skipped]
