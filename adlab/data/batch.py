"""The typed batch every loader yields, and the collate that keeps every field.

The datamodule makes the base fields; data components add optional ones (a synthetic-anomaly
transform adds `augmented` and `synthetic_mask`, an episode sampler adds `support`). A method
declares the keys it trains on (`required_batch_keys`) and a run whose data lacks one fails
before training with the key named and where it comes from.
"""

from __future__ import annotations

from numbers import Number
from typing import TypedDict

import torch
from torch import Tensor

from adlab.data.records import DatasetError


class Batch(TypedDict, total=False):
    image: Tensor  # (B, 3, H, W) normalised model input
    label: Tensor  # (B,) 0 normal, 1 anomalous
    path: list[str]
    category: list[str]
    mask: Tensor | list[Tensor]  # (B, 1, h, w) uint8 at ground-truth resolution (test)
    index: Tensor  # (B,) int64 position in the split (evaluation): the test order across ranks
    augmented: Tensor  # (B, 3, H, W) the image with a synthetic anomaly
    synthetic_mask: Tensor  # (B, 1, H, W) where the synthetic anomaly is
    support: Tensor  # (B, k, 3, H, W) reference images of the same source


BASE_KEYS = ("image", "label", "path", "category")
# Where an optional key comes from, for the error a method gets when its data lacks one.
BATCH_KEY_SOURCES = {
    "mask": "test splits of datasets with pixel masks",
    "augmented": "a synthetic-anomaly transform (synthesis=perlin)",
    "synthetic_mask": "a synthetic-anomaly transform (synthesis=perlin)",
    "support": "a few-shot episode sampler (sampler=kshot with protocol=lodo)",
}


def collate(items: list[dict | None]) -> Batch:
    """Stack every field: tensors of one shape into a batch tensor (else a list of tensors),
    numbers into a tensor (ints as int64), anything else into a list. Every item must have the
    same keys. Items that are None (files skipped while loading) are left out of the batch."""
    kept = [item for item in items if item is not None]
    if not kept:
        raise DatasetError(
            f"all {len(items)} images of a batch failed to decode and were skipped "
            "(dataset.on_bad_image=skip): see the warnings that name them, and list every bad "
            "file with `python -m adlab.data.check --decode`."
        )
    items = kept
    keys = list(items[0])
    for i, item in enumerate(items):
        if set(item) != set(keys):
            raise ValueError(
                f"batch item {i} has keys {sorted(item)}, item 0 has {sorted(keys)}: every item "
                "of a batch must carry the same fields"
            )
    batch: dict = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, Tensor):
            same = all(v.shape == first.shape for v in values)
            batch[key] = torch.stack(values) if same else values
        elif isinstance(first, bool | Number) and not isinstance(first, str):
            dtype = torch.long if all(isinstance(v, int) for v in values) else torch.float32
            batch[key] = torch.tensor(values, dtype=dtype)
        else:
            batch[key] = values
    return batch  # type: ignore[return-value]
