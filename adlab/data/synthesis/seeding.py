"""Per-item randomness keyed by (run seed, epoch, sample index), independent of worker count.

The epoch reaches the dataset through the sampler: EpochSampler runs in the main process and
yields (index, epoch) pairs, which DataLoader hands to the workers with each index. So persistent
workers see the right epoch without any shared state, and the anomalies of a sample depend only
on the triple, never on which worker draws it or in what order.

Lightning calls set_epoch before every epoch but creates the first epoch's iterator (and, with
workers, prefetches its indices) before that call; the first pass therefore uses the sampler's
starting epoch: 0 for a fresh fit, `checkpoint_epoch(ckpt)` when resuming.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

log = logging.getLogger("adlab")
STREAM = 0x5EED_A110  # separates this stream from other users of the same seed


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator hashed from the triple (numpy's SeedSequence mixes every word)."""
    words = [STREAM, int(seed) % 2**64, int(epoch), int(index)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


class EpochSampler(Sampler):
    """Wraps an index sampler and tags each index with the epoch: (index, epoch).

    set_epoch(epoch) sets the next pass's epoch (Lightning calls it, also after a resume);
    without it each pass counts one epoch on from `epoch`.
    """

    def __init__(self, sampler: Sampler, epoch: int = 0) -> None:
        self.sampler = sampler
        self.epoch = int(epoch)
        self._early_pass: int | None = None  # epoch of a pass started before any set_epoch
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        if not self._epoch_set and self._early_pass not in (None, int(epoch)):
            log.warning(
                "synthetic anomalies: the first training pass drew epoch %d's anomalies but the "
                "trainer is at epoch %d (a resume without the start epoch); pass "
                "train_dataloader(epoch=checkpoint_epoch(ckpt_path)) to keep resumes exact.",
                self._early_pass,
                epoch,
            )
        self._epoch_set = True
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not self._epoch_set and self._early_pass is None:
            self._early_pass = epoch
        return ((int(index), epoch) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def checkpoint_epoch(path: str | Path | None) -> int:
    """The epoch a Lightning checkpoint resumes training at (its fit loop's processed epochs,
    the value Lightning then passes to set_epoch); 0 without a checkpoint."""
    if not path:
        return 0
    ckpt = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=False, mmap=True)
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(progress.get("current", {}).get("processed", ckpt.get("epoch", 0)))
