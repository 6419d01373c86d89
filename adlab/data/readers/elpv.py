"""ELPV solar cells from the installed `elpv-dataset` package, read straight from its files.

Split (adlab's, fixed): normal = defect probability 0, anomalous = probability 1 (the uncertain
1/3 and 2/3 are excluded); a seeded `test_normal_fraction` (default 0.3) of the normals of each
cell type is held out for testing: 1,508 normals -> about 1,056 train / 452 test, against 715
anomalous test images, so both test classes are of the same order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adlab.data.readers.common import require_file
from adlab.data.records import DatasetError, Sample

CELL_TYPES = ("all", "mono", "poly")
LAYOUT = "<root>/labels.csv (path probability type, whitespace separated) and <root>/images/*.png"


def package_root() -> Path:
    """The data folder shipped inside the elpv-dataset package."""
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DatasetError(
            "dataset=elpv needs the elpv-dataset package (`pip install elpv-dataset`) or "
            "dataset.root pointing at a copy with labels.csv and images/."
        ) from exc
    return Path(elpv_dataset.__file__).parent / "data"


def read_elpv(root: Path, config: Mapping[str, Any]) -> list[Sample]:
    cell_type = str(config.get("cell_type", "all"))
    if cell_type not in CELL_TYPES:
        raise DatasetError(f"dataset.cell_type={cell_type!r}: use one of {', '.join(CELL_TYPES)}.")
    fraction = float(config.get("test_normal_fraction", 0.3))
    if not 0 < fraction < 1:
        raise DatasetError(f"dataset.test_normal_fraction={fraction} must be in (0, 1).")
    labels = require_file(root / "labels.csv", LAYOUT)
    rows: list[tuple[str, float, str]] = []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DatasetError(
                f"{labels}:{number}: expected 'path probability type', got {line!r}."
            )
        rows.append((parts[0], float(parts[1]), parts[2]))
    seed = int(config.get("split_seed", 0))
    samples: list[Sample] = []
    for kind in ("mono", "poly"):
        if cell_type not in ("all", kind):
            continue
        normals = sorted(p for p, prob, t in rows if t == kind and prob == 0.0)
        anomalous = sorted(p for p, prob, t in rows if t == kind and prob == 1.0)
        held = set(random.Random(f"{seed}-{kind}").sample(normals, round(len(normals) * fraction)))
        category = kind if cell_type != "all" else "elpv"
        for name in normals:
            split = "test" if name in held else "train"
            samples.append(Sample(str(root / name), 0, split, category))
        samples += [Sample(str(root / name), 1, "test", category) for name in anomalous]
    return samples
