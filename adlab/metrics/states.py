"""List states of the streaming evaluators (AnomalyEvaluator, CodeMetrics), shared so both sync
the same way under torch.distributed.

Each state is a list reduced by concatenation ("cat"): on one process it holds one tensor per
update; inside a synced compute() it is one tensor with every rank's items, rank after rank.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torchmetrics import Metric


def add_cat_states(metric: Metric, names: Iterable[str]) -> None:
    """Register each name as a list state that DDP concatenates across ranks."""
    for name in names:
        metric.add_state(name, default=[], dist_reduce_fx="cat")


def state_arrays(state: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
    """A list state as numpy views: one per update, or one after a distributed sync (cat)."""
    items = [state] if isinstance(state, torch.Tensor) else state
    return [t.detach().cpu().numpy() for t in items]


def joined(state: torch.Tensor | list[torch.Tensor], dtype: np.dtype | type) -> np.ndarray:
    """A list state as one flat array (no copy when it is one part; empty when no update)."""
    parts = [p.reshape(-1) for p in state_arrays(state)]
    if not parts:
        return np.zeros(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def given_every_batch(seen: bool | None, given: bool, name: str, fix: str) -> bool:
    """An optional update() argument for every batch or for none: a per-image state built from
    it must cover every image. Returns `given`, the new `seen`."""
    if seen is not None and given != seen:
        raise ValueError(f"{name} was given for some batches and None for others; {fix}")
    return given


def check_masks(seen: bool | None, has_masks: bool) -> bool:
    """Masks for every batch or for none."""
    return given_every_batch(
        seen,
        has_masks,
        "masks",
        "a test set must have masks for every image (use all-zero masks for normal images) or "
        "for none.",
    )
