"""Registry: reader name -> function(root, dataset config) -> list[Sample].

A dataset config picks its reader with `reader:` (default: its `name`), so several configs
(d24fad_lag, headct, ...) share one layout family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.bmad import read_bmad
from adlab.data.readers.elpv import read_elpv
from adlab.data.readers.folders import read_dirs, read_folder
from adlab.data.readers.isic import read_isic2018
from adlab.data.readers.medianomaly import read_medianomaly
from adlab.data.readers.mvtec import (
    read_btad,
    read_category,
    read_mpdd,
    read_mvtec,
    read_mvtec2,
    read_mvtec_layout,
)
from adlab.data.readers.unimedical import read_meta_json
from adlab.data.readers.visa import read_visa
from adlab.data.records import DatasetError, Sample

Reader = Callable[[Path, Mapping[str, Any]], list[Sample]]


def _read_synthetic(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    """root is the generated tree (see adlab.data.datamodule.resolve_root)."""
    style = str(config.get("style", "ct"))
    return read_category(root / style, style)


READERS: dict[str, Reader] = {
    "mvtec": read_mvtec,
    "mvtec_layout": read_mvtec_layout,
    "mpdd": read_mpdd,
    "btad": read_btad,
    "mvtec2": read_mvtec2,
    "visa": read_visa,
    "bmad": read_bmad,
    "medianomaly": read_medianomaly,
    "isic2018": read_isic2018,
    "dirs": read_dirs,
    "folder": read_folder,
    "meta_json": read_meta_json,
    "elpv": read_elpv,
    "synthetic": _read_synthetic,
}


def get_reader(config: Mapping[str, Any]) -> Reader:
    name = str(config.get("reader") or config.get("name"))
    if name not in READERS:
        raise DatasetError(
            f"dataset.reader={name!r} is unknown; use one of {', '.join(sorted(READERS))}."
        )
    return READERS[name]
