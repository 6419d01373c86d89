"""A training loader whose shuffled order continues exactly after a checkpoint.

The shuffle of each epoch is drawn from one seeded generator, so epoch e's order depends on the
draws of epochs 0..e-1: a resumed process that re-seeds it would replay epoch 0's order. The
loader records the generator's state at the start of every pass; adlab.callbacks.resume stores
it in the checkpoint and, on resume, restores it and skips the batches already trained.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import BatchSampler, DataLoader


class ResumableBatchSampler(BatchSampler):
    """Batches of `sampler`; `skip_next(n)` drops the first n batches of the next pass only."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self._skip = 0

    def skip_next(self, batches: int) -> None:
        self._skip = int(batches)

    def __iter__(self) -> Iterator[list]:
        skip, self._skip = self._skip, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
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
