"""BMAD (Bao et al. 2023): train/good, {valid,test}/{good,Ungood} with images directly inside or
in an img/ sub-folder and masks in anomaly_mask/ (older copies: label/); RESC's variant
Train/train/good, {Val,Test}/{val,test}/{good,Ungood} with masks in {val,test}_label/Ungood."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import list_images, mask_index, require_dir
from adlab.data.records import DatasetError, Sample

LAYOUT = (
    "<root>/train/good[/img], <root>/{valid,test}/{good,Ungood}[/img], masks in "
    "<root>/{valid,test}/Ungood/anomaly_mask (or label); RESC: <root>/Train/train/good, "
    "<root>/{Val,Test}/{val,test}/{good,Ungood}, <root>/{Val,Test}/{val,test}_label/Ungood"
)


def _images(folder: Path) -> list[Path]:
    img = folder / "img"
    return list_images(img if img.is_dir() else folder)


def _split_dirs(root: Path, split: str) -> tuple[Path, Path | None]:
    """(folder holding good/Ungood, folder holding the Ungood masks or None)."""
    resc = {"train": "Train", "valid": "Val", "test": "Test"}[split]
    short = {"train": "train", "valid": "val", "test": "test"}[split]
    if (root / resc / short).is_dir():  # RESC
        labels = root / resc / f"{short}_label" / "Ungood"
        return root / resc / short, labels if labels.is_dir() else None
    folder = root / split
    for name in ("anomaly_mask", "label"):
        if (folder / "Ungood" / name).is_dir():
            return folder, folder / "Ungood" / name
    return folder, None


def read_bmad(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    category = str(config.get("category") or config.get("name", "bmad"))
    with_masks = bool(config.get("masks", False))
    train_dir, _ = _split_dirs(root, "train")
    samples = [
        Sample(str(p), 0, "train", category)
        for p in _images(require_dir(train_dir / "good", LAYOUT))
    ]
    for split in ("valid", "test"):
        folder, masks = _split_dirs(root, split)
        if split == "valid" and not folder.is_dir():
            continue
        require_dir(folder, LAYOUT)
        if with_masks and masks is None:
            raise DatasetError(
                f"missing mask folder {folder / 'Ungood' / 'anomaly_mask'} (or label/): this BMAD "
                f"set has pixel masks; layout: {LAYOUT}"
            )
        index = mask_index(masks) if with_masks and masks is not None else {}
        for label, name in ((0, "good"), (1, "Ungood")):
            for path in _images(require_dir(folder / name, LAYOUT)):
                mask = None
                if label == 1 and with_masks:
                    found = index.get(path.stem)
                    if found is None:
                        raise DatasetError(f"{path}: anomalous image without a mask in {masks}.")
                    mask = str(found)
                samples.append(Sample(str(path), label, split, category, mask))
    return samples
