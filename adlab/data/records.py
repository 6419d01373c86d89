"""What every dataset reader returns: a flat list of samples, one per image file."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "valid", "test")


class DatasetError(ValueError):
    """Bad or missing data. The message names the file or key and says how to fix it."""


@dataclass(frozen=True)
class Sample:
    """One image of a benchmark.

    label is 0 for normal and 1 for anomalous; mask is the ground-truth mask file of an anomalous
    image (None for normal images and for datasets with image-level labels only).
    """

    path: str
    label: int
    split: str
    category: str = ""
    mask: str | None = None
