"""VisA with its official split file split_csv/1cls.csv (object, split, label, image, mask)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import categories, require_file
from adlab.data.records import DatasetError, Sample

VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
    "pcb2", "pcb3", "pcb4", "pipe_fryum",
)  # fmt: skip
LAYOUT = (
    "<root>/split_csv/1cls.csv with columns object,split,label,image,mask and paths relative to "
    "<root> (<category>/Data/Images/{Normal,Anomaly}, <category>/Data/Masks/Anomaly)"
)


def read_visa(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    split_file = require_file(root / str(config.get("split_file", "split_csv/1cls.csv")), LAYOUT)
    wanted = set(categories(config, VISA_CATEGORIES, "visa"))
    samples: list[Sample] = []
    with split_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"object", "split", "label", "image", "mask"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{split_file}: missing columns {sorted(missing)}; layout: {LAYOUT}")
        for line, row in enumerate(reader, start=2):
            if row["object"] not in wanted:
                continue
            split = row["split"].strip()
            label = {"normal": 0, "anomaly": 1}.get(row["label"].strip())
            if split not in ("train", "test") or label is None:
                raise DatasetError(
                    f"{split_file}:{line}: split must be train/test and label normal/anomaly, "
                    f"got {row['split']!r}, {row['label']!r}."
                )
            if split == "train" and label == 1:
                continue  # 1cls: training uses normals only; the file lists none anyway
            image = root / row["image"].strip()
            if not image.is_file():
                raise DatasetError(f"{split_file}:{line}: listed image {image} does not exist.")
            mask = None
            if label == 1:
                mask_path = root / (row["mask"] or "").strip()
                if not row["mask"] or not mask_path.is_file():
                    raise DatasetError(
                        f"{split_file}:{line}: anomalous image {image} has no mask file "
                        f"({mask_path})."
                    )
                mask = str(mask_path)
            samples.append(Sample(str(image), label, split, row["object"], mask))
    return samples
