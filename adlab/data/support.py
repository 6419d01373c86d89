"""Support sets of a few-shot test: k normal training images of the target per seed, or the files
of a prepared folder (the official med-kshot/<name>/train/shot<k>/good<k>), checked never to be
test images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adlab.data.io import is_image_file
from adlab.data.records import DatasetError, Sample
from adlab.data.samplers import seeds_of, select_train


@dataclass(frozen=True)
class SupportSet:
    """One support set: its label in results ("seed3" or "support_dir"), seed, images and the
    folder they were read from (None when drawn from the training normals)."""

    label: str
    seed: int | None
    samples: tuple[Sample, ...]
    folder: str | None = None

    @property
    def files(self) -> list[str]:
        return [s.path for s in self.samples]


def support_sets(
    pool: Sequence[Sample], test: Sequence[Sample], sampler: Mapping[str, Any]
) -> list[SupportSet]:
    """The sets sampler=kshot asks for (none for sampler=full): drawn from `pool` (the target's
    training normals) by each of sampler.seeds, or read from sampler.support_dir."""
    if sampler.get("name", "full") != "kshot":
        return []
    folder = sampler.get("support_dir")
    if folder:
        category = pool[0].category if pool else ""
        files = tuple(read_support_dir(folder, sampler, category))
        sets = [SupportSet("support_dir", None, files, str(folder))]
    else:
        sets = [
            SupportSet(
                f"seed{seed}", seed, tuple(select_train(list(pool), {**sampler, "seeds": [seed]}))
            )
            for seed in seeds_of(sampler)
        ]
    check_not_in_test(sets, test)
    return sets


def read_support_dir(folder: str | Path, sampler: Mapping[str, Any], category: str) -> list[Sample]:
    """Every file of the folder, which must all be images, as many as sampler.shots."""
    path = Path(str(folder)).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"sampler.support_dir={folder} does not exist; point it at a folder of k normal "
            "images (official: med-kshot/<name>/train/shot<k>/good<k>)."
        )
    files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    for p in files:
        if not p.is_file() or not is_image_file(p):
            raise DatasetError(
                f"sampler.support_dir={folder}: {p.name} is not an image file (adlab reads "
                ".png .jpg .jpeg .bmp .tif .tiff .dcm); a support folder holds only the k "
                "support images: move it out."
            )
    shots = int(sampler.get("shots", len(files)))
    if len(files) != shots:
        raise DatasetError(
            f"sampler.support_dir={folder} holds {len(files)} images but sampler.shots={shots}; "
            f"set sampler.shots={len(files)} or pick the shot{shots} folder."
        )
    return [Sample(str(p.resolve()), 0, "train", category) for p in files]


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_not_in_test(sets: Sequence[SupportSet], test: Sequence[Sample]) -> None:
    """No support image may be a test image: not the same file, nor, for a support_dir (files
    from outside the dataset), a copy of one (compared by content among test files of the same
    size). Drawn sets come from the training folder; byte-identical train and test files there
    are the benchmark's own business."""
    by_size: dict[int, list[str]] = {}
    for sample in test:
        by_size.setdefault(os.path.getsize(sample.path), []).append(sample.path)
    test_paths = {os.path.realpath(s.path) for s in test}
    digests: dict[str, str] = {}

    def known(path: str) -> str:  # each test file is hashed at most once
        if path not in digests:
            digests[path] = _digest(path)
        return digests[path]

    for support in sets:
        for sample in support.samples:
            if os.path.realpath(sample.path) in test_paths:
                raise DatasetError(
                    f"support image {sample.path} ({support.label}) is also a test image; "
                    "supports must be normal training images of the target."
                )
            same_size = by_size.get(os.path.getsize(sample.path), [])
            if same_size and support.folder is not None:
                digest = _digest(sample.path)
                copy = next((p for p in same_size if known(p) == digest), None)
                if copy is not None:
                    raise DatasetError(
                        f"support image {sample.path} ({support.label}) has the same content as "
                        f"test image {copy}; remove it from the support set."
                    )
