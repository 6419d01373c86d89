"""BMAD (Bao et al. 2023) in each layout its copies come in. Every set ships a labelled validation
split (`valid/` for Brain, Liver, Camelyon16; `val/` for OCT2017, RSNA; `Val/val` for RESC), so a
missing one is an error: model selection would otherwise silently have nothing to select on.

- anomalib-style repack and Brain/Camelyon16/OCT2017/RSNA releases: train/good[/img],
  {valid|val,test}/{good,Ungood}[/img], masks in Ungood/anomaly_mask or Ungood/label;
- Liver release (root = Liver/Train/hist_DIY): train/good, {valid,test}/img/{good,Ungood},
  masks in {valid,test}/label/Ungood with the image's file name;
- RESC: Train/train/good, {Val,Test}/{val,test}/{good,Ungood}, masks in {val,test}_label/Ungood.
The anomalous folder may also be spelled `ungood` (MVFA's *_AD copies).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from adlab.data.readers.common import list_images, mask_index, require_dir, require_valid
from adlab.data.records import DatasetError, Sample

LAYOUT = (
    "<root>/train/good[/img], <root>/{valid|val,test}/{good,Ungood}[/img], masks in "
    "<root>/{valid|val,test}/Ungood/anomaly_mask (or label); Liver release (root = "
    "Liver/Train/hist_DIY): <root>/{valid,test}/img/{good,Ungood}, "
    "<root>/{valid,test}/label/Ungood; "
    "RESC: <root>/Train/train/good, <root>/{Val,Test}/{val,test}/{good,Ungood}, "
    "<root>/{Val,Test}/{val,test}_label/Ungood"
)
SPLIT_NAMES = {"valid": ("valid", "val"), "test": ("test",)}


class SplitDirs(NamedTuple):
    """Where one labelled split of a BMAD copy keeps its normal, anomalous and mask images."""

    good: Path
    bad: Path
    masks: Path  # may not exist: only the sets with pixel labels need it


def _images(folder: Path) -> list[Path]:
    img = folder / "img"
    return list_images(img if img.is_dir() else folder)


def _bad(parent: Path) -> Path:
    """parent/Ungood, or the lower-case spelling when only that exists."""
    lower = parent / "ungood"
    return lower if lower.is_dir() and not (parent / "Ungood").is_dir() else parent / "Ungood"


def _split_dirs(root: Path, split: str) -> SplitDirs | None:
    """The folders of the valid or test split in whichever layout the copy uses, else None."""
    for name in SPLIT_NAMES[split]:
        resc = root / name.capitalize() / name
        if resc.is_dir():  # RESC: Val/val, masks in Val/val_label/Ungood
            return SplitDirs(resc / "good", _bad(resc), _bad(resc.parent / f"{name}_label"))
        folder = root / name
        if (folder / "img").is_dir():  # Liver release: valid/img/{good,Ungood}, valid/label/Ungood
            return SplitDirs(folder / "img" / "good", _bad(folder / "img"), _bad(folder / "label"))
        if folder.is_dir():
            bad = _bad(folder)
            masks = next((bad / n for n in ("anomaly_mask", "label") if (bad / n).is_dir()), None)
            return SplitDirs(folder / "good", bad, masks or bad / "anomaly_mask")
    return None


def _train_dir(root: Path) -> Path:
    if (root / "Train" / "train").is_dir():  # RESC
        return root / "Train" / "train" / "good"
    for inner in (root / "Train" / "hist_DIY", root / "hist_DIY"):
        if not (root / "train").is_dir() and inner.is_dir():
            raise DatasetError(
                f"{root} is above BMAD's Liver release: set dataset.root={inner} (the folder "
                "holding train/, valid/, test/)."
            )
    return root / "train" / "good"


def read_bmad(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    category = str(config.get("category") or config.get("name", "bmad"))
    with_masks = bool(config.get("masks", False))
    samples = [
        Sample(str(p), 0, "train", category) for p in _images(require_dir(_train_dir(root), LAYOUT))
    ]
    for split in ("valid", "test"):
        dirs = _split_dirs(root, split)
        if dirs is None:
            if split == "test":
                require_dir(root / "test", LAYOUT)
            if not require_valid(config):
                continue
            raise DatasetError(
                f"missing BMAD validation split: expected {root / 'valid'} or {root / 'val'} "
                f"(RESC: {root / 'Val' / 'val'}) with good/ and Ungood/ inside. Every BMAD set "
                "ships one (used for model selection); restore it from the download, or set "
                "dataset.require_valid=false to run without it."
            )
        if with_masks and not dirs.masks.is_dir():
            raise DatasetError(
                f"missing mask folder {dirs.masks}: this BMAD set has pixel masks; layout: {LAYOUT}"
            )
        index = mask_index(dirs.masks) if with_masks else {}
        for label, folder in ((0, dirs.good), (1, dirs.bad)):
            for path in _images(require_dir(folder, LAYOUT)):
                mask = None
                if label == 1 and with_masks:
                    found = index.get(path.stem)
                    if found is None:
                        raise DatasetError(
                            f"{path}: anomalous image without a mask in {dirs.masks}; expected "
                            f"{path.stem}.png there."
                        )
                    mask = str(found)
                samples.append(Sample(str(path), label, split, category, mask))
    return samples
