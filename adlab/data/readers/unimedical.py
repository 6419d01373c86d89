"""Uni-Medical (PDD's multi-class benchmark: brain, liver, retinal) and any set indexed by a
meta.json in ADer's format: {"train"|"test": {class: [{"img_path", "mask_path", "cls_name",
"specie_name", "anomaly"}, ...]}} with paths relative to the root. ADer's
data/gen_benchmark/medical.py writes it for an archive that lacks it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import require_file
from adlab.data.records import DatasetError, Sample

LAYOUT = (
    '<root>/meta.json = {"train": {cls: [{"img_path", "mask_path", "anomaly", ...}]}, '
    '"test": {...}} with paths relative to <root>'
)


def read_meta_json(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    meta = require_file(root / str(config.get("meta_file", "meta.json")), LAYOUT)
    try:
        listing = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta}: invalid JSON ({exc}); layout: {LAYOUT}") from exc
    wanted = config.get("category")
    wanted = (
        None
        if wanted in (None, "all")
        else ({wanted} if isinstance(wanted, str) else set(map(str, wanted)))
    )
    samples: list[Sample] = []
    for split in ("train", "test"):
        classes = listing.get(split)
        if not isinstance(classes, dict):
            raise DatasetError(f"{meta}: missing the {split!r} section; layout: {LAYOUT}")
        for cls, entries in sorted(classes.items()):
            if wanted is not None and cls not in wanted:
                continue
            for entry in entries:
                label = int(entry.get("anomaly", 0))
                if split == "train" and label:
                    continue
                image = root / entry["img_path"]
                if not image.is_file():
                    raise DatasetError(
                        f"{meta}: lists {entry['img_path']}, but {image} is missing."
                    )
                mask = None
                if label and entry.get("mask_path"):
                    mask_path = root / entry["mask_path"]
                    if not mask_path.is_file():
                        raise DatasetError(f"{meta}: mask {mask_path} of {image} is missing.")
                    mask = str(mask_path)
                samples.append(
                    Sample(str(image), label, split, str(entry.get("cls_name", cls)), mask)
                )
    if wanted is not None and not samples:
        raise DatasetError(
            f"{meta}: no class named {sorted(wanted)}; classes: {sorted(listing['test'])}."
        )
    return samples
