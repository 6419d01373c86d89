"""MVTec AD layout and its relatives: MPDD (same layout), BTAD (ok/ko, .bmp or .png masks without
a suffix), MVTec AD 2 (test_public with its ground truth inside, validation/good) and any tree of
own data in the MVTec layout (mvtec_layout: categories found on disk, masks where present)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import (
    categories,
    list_images,
    mask_index,
    require_dir,
    require_valid,
)
from adlab.data.records import DatasetError, Sample

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
    "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
MVTEC2_CATEGORIES = (
    "can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts",
)  # fmt: skip
MPDD_CATEGORIES = (
    "bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes",
)  # fmt: skip
BTAD_CATEGORIES = ("01", "02", "03")

MVTEC_LAYOUT = (
    "<root>/<category>/train/good/*.png, <root>/<category>/test/<good|defect>/*.png, "
    "<root>/<category>/ground_truth/<defect>/<name>_mask.png"
)
BTAD_LAYOUT = "<root>/<01|02|03>/train/ok, test/{ok,ko}, ground_truth/ko/<name>.png|.bmp"
MVTEC2_LAYOUT = (
    "<root>/<category>/train/good, validation/good, test_public/{good,bad}, "
    "test_public/ground_truth/bad/<name>_mask.png"
)


def read_category(
    base: Path, category: str, *, good: str = "good", test: str = "test",
    ground_truth: Path | None = None, layout: str = MVTEC_LAYOUT, masks: bool = True,
) -> list[Sample]:  # fmt: skip
    """One category folder of the MVTec layout -> train and test Samples."""
    require_dir(base, layout)
    train_dir = require_dir(base / "train" / good, layout)
    samples = [Sample(str(p), 0, "train", category) for p in list_images(train_dir)]
    test_dir = require_dir(base / test, layout)
    gt_root = ground_truth if ground_truth is not None else base / "ground_truth"
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        if defect_dir.resolve() == gt_root.resolve():
            continue
        defect = defect_dir.name
        is_good = defect == good
        index = {} if is_good or not masks else mask_index(gt_root / defect)
        for path in list_images(defect_dir):
            mask = None
            if not is_good and masks:
                found = index.get(path.stem)
                if found is None:
                    raise DatasetError(
                        f"{path}: anomalous test image without a mask; expected "
                        f"{gt_root / defect / (path.stem + '_mask.png')} (layout: {layout})."
                    )
                mask = str(found)
            samples.append(Sample(str(path), 0 if is_good else 1, "test", category, mask))
    return samples


def read_mvtec(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    return _read_all(root, config, MVTEC_CATEGORIES, "mvtec")


def read_mpdd(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    return _read_all(root, config, MPDD_CATEGORIES, "mpdd")


OWN_DATA_HINT = (
    " For your own data in this layout use dataset=mvtec_layout dataset.root=<folder> "
    "(every category folder found there, or dataset.category=<name> or [<a>,<b>])."
)


def _read_all(root: Path, config: Mapping[str, Any], known: tuple[str, ...], key: str):
    known_or_any = None if config.get("strict_categories") is False else known
    out: list[Sample] = []
    for category in categories(config, known_or_any, key, OWN_DATA_HINT):
        out += read_category(root / category, category, masks=bool(config.get("masks", True)))
    return out


def read_mvtec_layout(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    """Own data in the MVTec layout: root holds category folders (or is one); dataset.category
    is 'all' (every folder with train/<good>), a name or a list; masks 'auto' reads pixel masks
    for a category that has a ground_truth folder."""
    good = str(config.get("good", "good"))
    if (root / "train" / good).is_dir():
        found = {root.name: root}
    else:
        found = {p.name: p for p in sorted(root.iterdir()) if (p / "train" / good).is_dir()}
    if not found:
        raise DatasetError(
            f"no category folder in {root}: expected <root>/<category>/train/{good} (or "
            f"<root>/train/{good} when root is one category); layout: {MVTEC_LAYOUT}"
        )
    wanted = config.get("category") or "all"
    names = sorted(found) if wanted == "all" else _names(wanted)
    for name in names:
        if name not in found:
            raise DatasetError(
                f"dataset.category={name!r}: no folder {root / name}/train/{good}; categories "
                f"found in {root}: {', '.join(found)} (or 'all')."
            )
    masks = config.get("masks", "auto")
    if masks not in ("auto", True, False):
        raise DatasetError(f"dataset.masks={masks!r}: use auto, true or false.")
    out: list[Sample] = []
    for name in names:
        base = found[name]
        with_masks = (base / "ground_truth").is_dir() if masks == "auto" else bool(masks)
        out += read_category(base, name, good=good, masks=with_masks)
    return out


def _names(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def read_btad(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    out: list[Sample] = []
    for category in categories(config, BTAD_CATEGORIES, "btad"):
        out += read_category(root / category, category, good="ok", layout=BTAD_LAYOUT)
    return out


def read_mvtec2(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    """MVTec AD 2 with test_public (the only split with public ground truth) and validation/good,
    which every category ships (a missing one is an error unless dataset.require_valid=false)."""
    test = str(config.get("test_split", "test_public"))
    if test.startswith("test_private"):
        raise DatasetError(
            f"dataset.test_split={test}: MVTec AD 2's private test sets (test_private, "
            "test_private_mixed) ship without labels or masks (they are scored by MVTec's "
            "evaluation server), so adlab cannot compute metrics on them; use "
            "dataset.test_split=test_public."
        )
    out: list[Sample] = []
    for category in categories(config, MVTEC2_CATEGORIES, "mvtec2"):
        base = root / category
        samples = read_category(
            base, category, test=test, ground_truth=base / test / "ground_truth",
            layout=MVTEC2_LAYOUT,
        )  # fmt: skip
        valid_dir = base / "validation" / "good"
        if valid_dir.is_dir():
            samples += [Sample(str(p), 0, "valid", category) for p in list_images(valid_dir)]
        elif require_valid(config):
            raise DatasetError(
                f"missing validation folder {valid_dir}: every MVTec AD 2 category ships one; "
                "restore it from the download, or set dataset.require_valid=false to run "
                "without it."
            )
        out += samples
    return out
