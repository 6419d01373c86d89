"""The MedIAnomaly benchmark layout of RSNA, VinCXR, BrainTumor and LAG: <root>/images/ and
<root>/data.json listing file names as {"train": {"0": [...]}, "test": {"0": [normal...],
"1": [abnormal...]}} (image labels only). Its other sets have no data.json: Camelyon16 and
BraTS2021 are class folders (reader `dirs`), ISIC2018 the official Task 3 folders and CSVs (reader
`isic2018`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import require_dir, require_file
from adlab.data.records import DatasetError, Sample

LAYOUT = (
    '<root>/images/*, <root>/data.json = {"train": {"0": [...]}, "test": {"0": [...], "1": [...]}}'
)


def read_medianomaly(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    index_file = require_file(root / "data.json", LAYOUT)
    images = require_dir(root / "images", LAYOUT)
    category = str(config.get("category") or config.get("name", ""))
    try:
        listing = json.loads(index_file.read_text())
        parts = [
            ("train", 0, listing["train"]["0"]),
            ("test", 0, listing["test"]["0"]),
            ("test", 1, listing["test"]["1"]),
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{index_file}: not a MedIAnomaly index ({exc}); layout: {LAYOUT}"
        ) from exc
    samples = []
    for split, label, names in parts:
        for name in sorted(names):
            path = images / name
            if not path.is_file():
                raise DatasetError(f"{index_file}: lists {name}, but {path} does not exist.")
            samples.append(Sample(str(path), label, split, category))
    return samples
