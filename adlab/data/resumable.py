"""A training loader whose shuffled order continues exactly after a checkpoint.

The shuffle of each epoch is drawn from one seeded generator, so epoch e's order depends on the
draws of epochs 0..e-1: a resumed process that re-seeds it would replay epoch 0's order. The
loader records the generator's state at the start of every pass; adlab.callbacks.resume stores
it in the checkpoint and, on resume, restores it and skips the batches already trained.

Under torch.distributed (Lightning DDP) each rank iterates its own shard of the same order
(every rank draws the same shuffle from the same seed), so the loaders need no
DistributedSampler (the trainer runs with use_distributed_sampler=false): training shards are
padded to equal length (DDP needs the same number of steps on every rank), evaluation shards
are not, so each test image is scored exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableBatchSampler(BatchSampler):
    """Batches of `sampler` (this rank's shard under torch.distributed); `skip_next(n)` drops
    the first n batches of the next pass only. `even=True` pads the shards to equal length by
    repeating the first indices (training), False leaves them uneven (evaluation)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, even: bool = True) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.even = even
        self._skip = 0

    def skip_next(self, batches: int) -> None:
        self._skip = int(batches)

    def _shard(self) -> tuple[int, int]:
        """(rank, world); (0, 1) when Lightning already put a DistributedSampler in."""
        if isinstance(self.sampler, DistributedSampler):
            return 0, 1
        return rank_and_world()

    def _shard_size(self, total: int) -> int:
        rank, world = self._shard()
        if world == 1:
            return total
        return math.ceil(total / world) if self.even else len(range(rank, total, world))

    def __len__(self) -> int:
        n = self._shard_size(len(self.sampler))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list]:
        skip, self._skip = self._skip, 0
        rank, world = self._shard()
        order = iter(self.sampler)
        if world > 1:
            indices = list(order)
            if self.even and len(indices) % world:
                indices += (indices * world)[: world - len(indices) % world]
            order = iter(indices[rank::world])
        batch, count = [], 0
        for index in order:
            batch.append(index)
            if len(batch) == self.batch_size:
                if count >= skip:
                    yield batch
                batch, count = [], count + 1
        if batch and not self.drop_last and count >= skip:
            yield batch


class ResumableLoader(DataLoader):
    """A DataLoader over a ResumableBatchSampler that keeps its generator's state at the start of
    each pass (`pass_start_state`), before the pass draws its shuffle and worker seeds.

    state_dict/load_state_dict are empty (the resume callback holds the state, since only the
    trainer knows how many batches were trained); they tell Lightning the loader resumes
    mid-epoch.
    """

    def __iter__(self):
        self.pass_start_state = None if self.generator is None else self.generator.get_state()
        return super().__iter__()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
