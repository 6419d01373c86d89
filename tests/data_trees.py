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


def bmad_tree(
    root: Path,
    resc: bool = False,
    masks: bool = True,
    img_sub: bool = True,
    val: str = "valid",
    bad: str = "Ungood",
    mask_dir: str = "anomaly_mask",
) -> dict:
    """BMAD layout (Brain/OCT2017/RSNA style with `val` = valid or val, the anomalib repack with
    anomaly_mask/, MVFA's copies with ungood/label, or RESC's variant)."""

    def split_dir(split: str) -> Path:
        if resc:
            top = {"train": "Train", "valid": "Val", "test": "Test"}[split]
            return root / top / {"train": "train", "valid": "val", "test": "test"}[split]
        return root / {"train": "train", "valid": val, "test": "test"}[split]

    def images(folder: Path) -> Path:
        return folder / "img" if img_sub else folder

    for i in range(3):
        write_png(images(split_dir("train") / "good") / f"{i}.png")
    counts = {"valid": (1, 2), "test": (2, 3)}
    for split, (n_good, n_bad) in counts.items():
        for i in range(n_good):
            write_png(images(split_dir(split) / "good") / f"g{i}.png")
        for i in range(n_bad):
            write_png(images(split_dir(split) / bad) / f"b{i}.png")
            if masks:
                if resc:
                    short = {"valid": "val", "test": "test"}[split]
                    folder = split_dir(split).parent / f"{short}_label" / bad
                else:
                    folder = split_dir(split) / bad / mask_dir
                write_mask(folder / f"b{i}.png")
    return {"train": 3, "valid": (1, 2), "test": (2, 3)}


def bmad_liver_release_tree(root: Path) -> dict:
    """BMAD's Liver release under Liver/Train/hist_DIY: train/good, {valid,test}/img/{good,Ungood}
    and masks with the same file names in {valid,test}/label/Ungood. Returns the hist_DIY root."""
    base = root / "Liver" / "Train" / "hist_DIY"
    for i in range(3):
        write_png(base / "train" / "good" / f"{i}.png")
    for split, (n_good, n_bad) in {"valid": (1, 2), "test": (2, 3)}.items():
        for i in range(n_good):
            write_png(base / split / "img" / "good" / f"g{i}.png")
        for i in range(n_bad):
            write_png(base / split / "img" / "Ungood" / f"b{i}.png")
            write_mask(base / split / "label" / "Ungood" / f"b{i}.png")
    return {"root": base, "train": 3, "valid": (1, 2), "test": (2, 3)}


def chexpert_tree(root: Path) -> dict:
    """SQUID's CheXpert copy: train_256_pa/normal_256, val_256_pa and our_test_256_pa with
    normal_256 and abnormal_256."""
    parts = (
        ("train_256_pa/normal_256", 3),
        ("val_256_pa/normal_256", 2),
        ("val_256_pa/abnormal_256", 1),
        ("our_test_256_pa/normal_256", 2),
        ("our_test_256_pa/abnormal_256", 3),
    )
    for folder, n in parts:
        for i in range(n):
            write_jpeg(root / folder / f"patient{i:05d}_view1_frontal.jpg")
    return {"train": 3, "valid": (2, 1), "test": (2, 3)}


def brats2021_tree(root: Path) -> dict:
    """MedIAnomaly's BraTS2021: flat train/, test/{normal,tumor}, masks in test/annotation named by
    replacing flair with seg in the image name."""
    for i in range(3):
        write_png(root / "train" / f"BraTS2021_0000{i}_flair_60.png")
    for i in range(2):
        write_png(root / "test" / "normal" / f"BraTS2021_0100{i}_flair_20.png")
    for i in range(3):
        write_png(root / "test" / "tumor" / f"BraTS2021_0200{i}_flair_80.png")
        write_mask(root / "test" / "annotation" / f"BraTS2021_0200{i}_seg_80.png")
    return {"train": 3, "test_normal": 2, "test_anomalous": 3}


ISIC_HEADER = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"


def isic2018_tree(root: Path) -> dict:
    """ISIC 2018 Task 3 as MedIAnomaly ships it: the official Input folders (with their licence
    files) and one-hot ground-truth CSVs. Training: 4 NV + 2 other; test: 2 NV + 3 other."""
    one_hot = {"MEL": 0, "NV": 1, "BCC": 2, "AKIEC": 3, "BKL": 4, "DF": 5, "VASC": 6}
    parts = {
        "Training": ["NV", "MEL", "NV", "NV", "BCC", "NV"],
        "Test": ["NV", "DF", "VASC", "NV", "MEL"],
    }
    ids = {}
    for part, classes in parts.items():
        rows = [ISIC_HEADER]
        ids[part] = []
        for i, cls in enumerate(classes):
            image = f"ISIC_{(100 if part == 'Test' else 0) + i:07d}"
            write_jpeg(root / f"ISIC2018_Task3_{part}_Input" / f"{image}.jpg")
            values = ["0.0"] * 7
            values[one_hot[cls]] = "1.0"
            rows.append(",".join([image, *values]))
            ids[part].append((image, cls))
        (root / f"ISIC2018_Task3_{part}_Input" / "LICENSE.txt").write_text("CC-BY-NC\n")
        truth = root / f"ISIC2018_Task3_{part}_GroundTruth"
        truth.mkdir(parents=True)
        (truth / f"ISIC2018_Task3_{part}_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return {"train": 4, "test_normal": 2, "test_anomalous": 3, "ids": ids}


def visa_pytorch_tree(root: Path, category: str = "candle") -> dict:
    """anomalib's VisA repack visa_pytorch/<cat>/{train/good, test/{good,bad}, ground_truth/bad}:
    JPEG images, PNG masks with the image's stem."""
    base = root / "visa_pytorch" / category
    for i in range(3):
        write_jpeg(base / "train" / "good" / f"{i:04d}.JPG")
    write_jpeg(base / "test" / "good" / "0900.JPG")
    for i in range(2):
        write_jpeg(base / "test" / "bad" / f"{i:03d}.JPG")
        write_mask(base / "ground_truth" / "bad" / f"{i:03d}.png")
    return {"root": root / "visa_pytorch", "train": 3, "test_normal": 1, "test_anomalous": 2}


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
