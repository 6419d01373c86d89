"""Checks made at setup, before any training: masks that do not fit their image, the one message
that reports every bad file, and test splits that lack a class (their metrics would be NaN)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from adlab.data.io import resize_mask
from adlab.data.records import DatasetError, Sample

SKIP_HINT = (
    "Replace the file, or set dataset.on_bad_image=skip to leave it out (it is then listed "
    "in results.json)."
)
SKIP_HINT_MANY = (
    "Replace these files, or set dataset.on_bad_image=skip to leave them out (they are then "
    "listed in results.json)."
)
RESIZE_HINT = (
    "Fix the masks, or set dataset.mask_resize=true to resize each mask to its image's size "
    "(nearest neighbour)."
)


class MaskSizeError(DatasetError):
    """A mask of another size than its image: never skipped, since pixel metrics would compare
    misaligned pixels; fixed in the data or accepted with dataset.mask_resize=true."""


def fit_mask(mask: np.ndarray, image_size: tuple[int, int], sample: Sample, resize: bool):
    """The (H, W) mask at its image's (width, height): resized when allowed, else MaskSizeError."""
    height, width = mask.shape
    if (width, height) == tuple(image_size):
        return mask
    if resize:
        return resize_mask(mask, image_size)
    raise MaskSizeError(
        f"{sample.mask}: mask is {width}x{height} but its image {sample.path} is "
        f"{image_size[0]}x{image_size[1]}."
    )


def listing(errors: Iterable[DatasetError], limit: int = 5) -> str:
    """The first `limit` messages, then how many more there are."""
    errors = list(errors)
    text = " ".join(str(e) for e in errors[:limit])
    more = len(errors) - limit
    if more > 0:
        text += f" (and {more} more; `python -m adlab.data.check --decode` lists them all)"
    return text


def raise_for_bad_files(failed: Mapping[str, DatasetError], skip: bool) -> None:
    """Mask size mismatches always stop the run; undecodable files stop it unless skip."""
    sizes = [e for e in failed.values() if isinstance(e, MaskSizeError)]
    if sizes:
        count = f"{len(sizes)} masks differ" if len(sizes) > 1 else "A mask differs"
        raise DatasetError(f"{count} in size from the image: {listing(sizes)} {RESIZE_HINT}")
    if failed and not skip:
        if len(failed) == 1:
            raise DatasetError(f"{listing(failed.values())} {SKIP_HINT}")
        raise DatasetError(f"{len(failed)} bad files: {listing(failed.values())} {SKIP_HINT_MANY}")


def one_class_splits(samples: Iterable[Sample]) -> list[str]:
    """What lacks a class: the test split, or else each category of it that does."""
    test = [s for s in samples if s.split == "test"]
    groups: dict[str, list[Sample]] = {"": test}
    if len({s.category for s in test}) > 1:
        groups = {}
        for sample in test:
            groups.setdefault(sample.category, []).append(sample)
    problems = []
    for category, items in sorted(groups.items()):
        labels = Counter(s.label for s in items)
        if labels[0] and labels[1]:
            continue
        where = f"the test split of category {category!r}" if category else "the test split"
        problems.append(f"{where} has {labels[0]} normal and {labels[1]} anomalous images")
    pooled = Counter(s.label for s in test)
    if len(groups) > 1 and not (pooled[0] and pooled[1]):
        problems = [f"the test split has {pooled[0]} normal and {pooled[1]} anomalous images"]
    return problems
