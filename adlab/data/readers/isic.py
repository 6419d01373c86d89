"""ISIC 2018 Task 3 as MedIAnomaly uses it: the official image folders and ground-truth CSVs
(columns image,MEL,NV,BCC,AKIEC,BKL,DF,VASC, one-hot 0.0/1.0). Normal = melanocytic nevus (NV):
training uses the NV == 1 images only (6,705), the test set is NV == 1 normal (909) and NV == 0
anomalous (603). No data.json: the labels come straight from the CSVs."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import require_dir, require_file
from adlab.data.records import DatasetError, Sample

LAYOUT = (
    "<root>/ISIC2018_Task3_Training_Input/<image>.jpg, <root>/ISIC2018_Task3_Training_GroundTruth/"
    "ISIC2018_Task3_Training_GroundTruth.csv, and the same with Test for the test split"
)
DEFAULTS = {
    "train_images": "ISIC2018_Task3_Training_Input",
    "train_labels": "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
    "test_images": "ISIC2018_Task3_Test_Input",
    "test_labels": "ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv",
}


def _rows(labels: Path, normal_class: str) -> list[tuple[int, str, float]]:
    """(line, image id, value of the normal-class column) for every row of a ground-truth CSV."""
    with labels.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", normal_class} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(
                f"{labels}: missing columns {sorted(missing)}; expected the ISIC 2018 Task 3 "
                "header image,MEL,NV,BCC,AKIEC,BKL,DF,VASC (dataset.normal_class names one)."
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row[normal_class])
            except (TypeError, ValueError) as exc:
                raise DatasetError(
                    f"{labels}:{line}: {normal_class}={row[normal_class]!r} is not 0 or 1."
                ) from exc
            if value not in (0.0, 1.0):
                raise DatasetError(f"{labels}:{line}: {normal_class}={value} is not 0 or 1.")
            rows.append((line, row["image"].strip(), value))
    return rows


def read_isic2018(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    category = str(config.get("category") or config.get("name", "isic2018"))
    normal_class = str(config.get("normal_class", "NV"))
    samples: list[Sample] = []
    for split in ("train", "test"):
        images = require_dir(
            root / str(config.get(f"{split}_images", DEFAULTS[f"{split}_images"])), LAYOUT
        )
        labels = require_file(
            root / str(config.get(f"{split}_labels", DEFAULTS[f"{split}_labels"])), LAYOUT
        )
        for line, image, value in _rows(labels, normal_class):
            label = 0 if value == 1.0 else 1
            if split == "train" and label:
                continue  # one-class training: the other diagnoses are never seen
            path = images / f"{image}.jpg"
            if not path.is_file():
                raise DatasetError(f"{labels}:{line}: lists {image}, but {path} does not exist.")
            samples.append(Sample(str(path), label, split, category))
    return samples
