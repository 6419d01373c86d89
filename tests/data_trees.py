"""Miniature benchmark trees in each published layout, written by the data tests.

Every helper writes a handful of tiny files and returns the counts a reader must report, so the
tests compare the reader against what was written rather than against constants.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, size: int = 16, value: int = 128, mode: str = "L") -> Path:
    """A small image with a gradient (so resizing is not trivially constant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = (np.add.outer(np.arange(size), np.arange(size)) * 3 + value) % 256
    array = ramp.astype(np.uint8)
    if mode == "RGB":
        Image.fromarray(np.stack([array, 255 - array, array // 2], axis=2)).save(path)
    elif mode == "RGBA":
        rgba = np.stack([array, array, array, np.full_like(array, 200)], axis=2)
        Image.fromarray(rgba, mode="RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(ramp.astype(np.uint16) * 16 + 1000).save(path)
    elif mode == "P":
        Image.fromarray(array).convert("P").save(path)
    else:
        Image.fromarray(array).save(path)
    return path


def write_mask(path: Path, size: int = 16, box: tuple[int, int, int, int] = (4, 4, 8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size, size), np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)
    return path


def mvtec_tree(
    root: Path,
    category: str = "bottle",
    mask_ext: str = ".png",
    good: str = "good",
    suffix: str = "_mask",
) -> dict:
    """MVTec layout: 3 train, 2 test good, 2 + 1 anomalous in two defect types, with masks.
    Includes a 16-bit, an RGBA and a palette image."""
    base = root / category
    for i, mode in enumerate(("L", "I;16", "RGBA")):
        write_png(base / "train" / good / f"{i:03d}.png", mode=mode)
    for i in range(2):
        write_png(base / "test" / good / f"{i:03d}.png", mode="RGB")
    for defect, n in (("crack", 2), ("hole", 1)):
        for i in range(n):
            write_png(base / "test" / defect / f"{i:03d}.png", mode="P")
            write_mask(base / "ground_truth" / defect / f"{i:03d}{suffix}{mask_ext}")
    return {"train": 3, "test_normal": 2, "test_anomalous": 3}


def write_jpeg(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = (np.add.outer(np.arange(size), np.arange(size)) * 5 % 256).astype(np.uint8)
    Image.fromarray(np.stack([ramp] * 3, axis=2)).save(path, "JPEG")
    return path


def visa_tree(root: Path) -> dict:
    """VisA: two categories, each 2 train normal, 1 test normal, 2 anomalous JPEGs with masks."""
    rows = ["object,split,label,image,mask"]
    for cat in ("candle", "pcb1"):
        for i in range(3):
            image = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            write_jpeg(root / image)
            rows.append(f"{cat},{'train' if i < 2 else 'test'},normal,{image},")
        for i in range(2):
            image = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            mask = f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            write_jpeg(root / image)
            write_mask(root / mask)
            rows.append(f"{cat},test,anomaly,{image},{mask}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return {"train": 2, "test_normal": 1, "test_anomalous": 2}


def bmad_tree(root: Path, resc: bool = False, masks: bool = True, img_sub: bool = True) -> dict:
    """BMAD layout (Brain/Liver style, or RESC's variant)."""

    def split_dir(split: str) -> Path:
        if resc:
            top = {"train": "Train", "valid": "Val", "test": "Test"}[split]
            return root / top / {"train": "train", "valid": "val", "test": "test"}[split]
        return root / split

    def images(folder: Path) -> Path:
        return folder / "img" if img_sub else folder

    for i in range(3):
        write_png(images(split_dir("train") / "good") / f"{i}.png")
    counts = {"valid": (1, 2), "test": (2, 3)}
    for split, (n_good, n_bad) in counts.items():
        for i in range(n_good):
            write_png(images(split_dir(split) / "good") / f"g{i}.png")
        for i in range(n_bad):
            write_png(images(split_dir(split) / "Ungood") / f"b{i}.png")
            if masks:
                if resc:
                    short = {"valid": "val", "test": "test"}[split]
                    mask_dir = split_dir(split).parent / f"{short}_label" / "Ungood"
                else:
                    mask_dir = split_dir(split) / "Ungood" / "anomaly_mask"
                write_mask(mask_dir / f"b{i}.png")
    return {"train": 3, "valid": (1, 2), "test": (2, 3)}


def medianomaly_tree(root: Path) -> dict:
    listing = {"train": {"0": []}, "test": {"0": [], "1": []}}
    for key, part, n in (("train", "0", 3), ("test", "0", 2), ("test", "1", 2)):
        for i in range(n):
            name = f"{key}_{part}_{i}.png"
            write_png(root / "images" / name)
            listing[key][part].append(name)
    (root / "data.json").write_text(json.dumps(listing))
    return {"train": 3, "test_normal": 2, "test_anomalous": 2}


def goodbad_tree(root: Path, bad: str = "bad") -> dict:
    """D24FAD / prepared HeadCT layout: train/good, test/{good,bad}; one BMP and one TIFF."""
    for i in range(3):
        write_png(root / "train" / "good" / f"{i}.png")
    write_png(root / "test" / "good" / "0.png")
    Image.open(write_png(root / "test" / "good" / "1.png")).save(root / "test" / "good" / "1.bmp")
    (root / "test" / "good" / "1.png").unlink()
    for i in range(2):
        Image.open(write_png(root / "test" / bad / f"{i}.png")).save(
            root / "test" / bad / f"{i}.tif"
        )
        (root / "test" / bad / f"{i}.png").unlink()
    return {"train": 3, "test_normal": 2, "test_anomalous": 2}


def meta_json_tree(root: Path) -> dict:
    meta: dict = {"train": {}, "test": {}}
    for cls in ("brain", "liver"):
        meta["train"][cls] = []
        meta["test"][cls] = []
        for i in range(2):
            path = f"{cls}/train/good/{i}.png"
            write_png(root / path)
            meta["train"][cls].append(
                {
                    "img_path": path,
                    "mask_path": "",
                    "cls_name": cls,
                    "specie_name": "good",
                    "anomaly": 0,
                }
            )
        path = f"{cls}/test/good/0.png"
        write_png(root / path)
        meta["test"][cls].append(
            {
                "img_path": path,
                "mask_path": "",
                "cls_name": cls,
                "specie_name": "good",
                "anomaly": 0,
            }
        )
        path, mask = f"{cls}/test/Ungood/0.png", f"{cls}/ground_truth/Ungood/0.png"
        write_png(root / path)
        write_mask(root / mask)
        meta["test"][cls].append(
            {
                "img_path": path,
                "mask_path": mask,
                "cls_name": cls,
                "specie_name": "Ungood",
                "anomaly": 1,
            }
        )
    (root / "meta.json").write_text(json.dumps(meta))
    return {"train": 4, "test_normal": 2, "test_anomalous": 2}
