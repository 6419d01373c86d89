"""Benchmarks stored as plain class folders: D24FAD's train/good + test/{good,bad}, the prepared
HeadCT and BrainMRI trees, ZhangLab and CheXpert (SQUID copies), MedIAnomaly's Camelyon16 and
BraTS2021, and `folder` (anomalib-like: any normal folder, abnormal folder, optional mask and
normal-test folders). Masks are found by image stem, after the optional mask_replace rule."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import (
    list_images,
    mask_index,
    mask_key,
    mask_rule,
    require_dir,
    require_valid,
)
from adlab.data.records import DatasetError, Sample

# (config key, split, label) for read_dirs: each key names a folder relative to the root
DIR_KEYS = (
    ("train_normal", "train", 0),
    ("valid_normal", "valid", 0),
    ("valid_anomalous", "valid", 1),
    ("test_normal", "test", 0),
    ("test_anomalous", "test", 1),
)


def read_dirs(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    """Class folders named by config keys train_normal, test_normal, test_anomalous (required)
    and valid_normal, valid_anomalous, test_masks (optional; null to leave out). Folders are
    relative to root or absolute (e.g. D24FAD's fixed support set as train_normal)."""
    category = str(config.get("category") or config.get("name", ""))
    layout = ", ".join(
        f"<root>/{config.get(key)}" for key, _, _ in DIR_KEYS if config.get(key) is not None
    )
    masks_dir = config.get("test_masks")
    rule = mask_rule(config)
    index = mask_index(require_dir(root / masks_dir, layout)) if masks_dir else {}
    samples: list[Sample] = []
    for key, split, label in DIR_KEYS:
        relative = config.get(key)
        if relative is None:
            if key in ("train_normal", "test_normal", "test_anomalous"):
                raise DatasetError(f"dataset.{key} is required: the folder of those images.")
            continue
        folder = root / str(relative)
        if split == "valid" and not folder.is_dir():
            if not require_valid(config):
                continue
            raise DatasetError(
                f"missing validation folder {folder} (dataset.{key}); the "
                f"{config.get('name', 'dataset')} download has one (used for model selection): "
                "restore it, point the key at it, or set dataset.require_valid=false to run "
                "without it."
            )
        for path in list_images(require_dir(folder, layout)):
            mask = None
            if masks_dir and split == "test" and label == 1:
                key_stem = mask_key(path, rule)
                found = index.get(key_stem)
                if found is None:
                    raise DatasetError(
                        f"{path}: anomalous test image without a mask in {root / masks_dir}; "
                        f"expected {key_stem}.png or {key_stem}_mask.png there"
                        + (f" (dataset.mask_replace={rule})." if rule else ".")
                    )
                mask = str(found)
            samples.append(Sample(str(path), label, split, category, mask))
    return samples


def read_folder(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    """anomalib-style Folder: normal_dir, abnormal_dir, optional mask_dir (and mask_replace) and
    normal_test_dir (relative to root or absolute). Without normal_test_dir, a seeded
    normal_split_ratio of the normals is held out for testing so the test set has both classes."""
    layout = "dataset.normal_dir (normal images), dataset.abnormal_dir, [mask_dir, normal_test_dir]"
    category = str(config.get("category") or "folder")

    def folder(key: str) -> Path | None:
        value = config.get(key)
        return None if value is None else require_dir(root / str(value), layout)

    normal, abnormal = folder("normal_dir"), folder("abnormal_dir")
    if normal is None or abnormal is None:
        raise DatasetError(f"dataset=folder needs {layout}.")
    masks, normal_test = folder("mask_dir"), folder("normal_test_dir")
    normals = list_images(normal)
    if normal_test is not None:
        test_normals = list_images(normal_test)
    else:
        ratio = float(config.get("normal_split_ratio", 0.2))
        held = set(random.Random(int(config.get("split_seed", 0))).sample(
            range(len(normals)), round(len(normals) * ratio)
        ))  # fmt: skip
        test_normals = [p for i, p in enumerate(normals) if i in held]
        normals = [p for i, p in enumerate(normals) if i not in held]
    index = mask_index(masks) if masks is not None else {}
    rule = mask_rule(config)
    samples = [Sample(str(p), 0, "train", category) for p in normals]
    samples += [Sample(str(p), 0, "test", category) for p in test_normals]
    for path in list_images(abnormal):
        mask = None
        if masks is not None:
            key = mask_key(path, rule)
            found = index.get(key)
            if found is None:
                raise DatasetError(f"{path}: no mask named {key}[_mask].* in {masks}.")
            mask = str(found)
        samples.append(Sample(str(path), 1, "test", category, mask))
    return samples
