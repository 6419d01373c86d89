"""Training episodes of a few-shot method: each query image with k support images of its own
source dataset, as D24FAD's official code draws them.

The draw replays the official order on one `random.Random(seed)`: first every source's sorted file
list is shuffled (sources in member order), then for each source and each query in that order k
supports are drawn uniformly with replacement, redrawing whenever the query itself comes up.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from adlab.data.dataset import AnomalyDataset, ImageCache
from adlab.data.records import DatasetError, Sample


@dataclass(frozen=True)
class Episode:
    query: Sample
    supports: tuple[Sample, ...]


def draw_episodes(
    sources: Mapping[str, Sequence[Sample]], shots: int, rng: random.Random
) -> list[Episode]:
    """One episode per training image of every source (see the module docstring for the order)."""
    shuffled = {}
    for name, samples in sources.items():
        pool = sorted(samples, key=lambda s: s.path)
        if len(pool) < 2:
            raise DatasetError(
                f"protocol member {name} has {len(pool)} training normal image(s); an episode "
                "needs the query and at least one other image of the same source."
            )
        rng.shuffle(pool)
        shuffled[name] = pool
    episodes = []
    for pool in shuffled.values():
        for query in pool:
            supports = []
            for _ in range(shots):
                pick = pool[rng.randint(0, len(pool) - 1)]
                while pick.path == query.path:
                    pick = pool[rng.randint(0, len(pool) - 1)]
                supports.append(pick)
            episodes.append(Episode(query, tuple(supports)))
    return episodes


class Episodes:
    """The episodes of each epoch: drawn once by the seed (resample=never, official), or again
    for every epoch after the first (resample=epoch), deterministically from (seed, epoch)."""

    def __init__(
        self, sources: Mapping[str, Sequence[Sample]], shots: int, seed: int, resample: str
    ) -> None:
        if resample not in ("never", "epoch"):
            raise DatasetError(f"protocol.resample={resample!r}: use 'never' or 'epoch'.")
        if shots < 1:
            raise DatasetError(f"sampler.shots={shots} must be a positive number of supports.")
        self.sources = {k: list(v) for k, v in sources.items()}
        self.shots, self.seed, self.resample = int(shots), int(seed), resample
        self._drawn: tuple[int, list[Episode]] = (0, self._draw(0))

    def _draw(self, epoch: int) -> list[Episode]:
        rng = random.Random(self.seed if epoch == 0 else self.seed * 1_000_003 + epoch)
        return draw_episodes(self.sources, self.shots, rng)

    def __len__(self) -> int:
        return len(self._drawn[1])

    def of_epoch(self, epoch: int) -> list[Episode]:
        epoch = 0 if self.resample == "never" else int(epoch)
        if self._drawn[0] != epoch:
            self._drawn = (epoch, self._draw(epoch))
        return self._drawn[1]


class EpisodeDataset(Dataset):
    """Items {image, label, path, category, support (k, 3, H, W)}; keyed by an index or an
    (index, epoch) pair (adlab.data.synthesis.EpochSampler), as AnomalyDataset."""

    def __init__(self, episodes: Episodes, cache: ImageCache) -> None:
        self.episodes = episodes
        samples = [s for source in episodes.sources.values() for s in source]
        self.images = AnomalyDataset(samples, cache)
        self.index = {s.path: i for i, s in enumerate(samples)}

    def __len__(self) -> int:
        return len(self.episodes)

    def _item(self, sample: Sample) -> dict:
        return self.images[self.index[sample.path]]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        episode = self.episodes.of_epoch(epoch)[index]
        item = self._item(episode.query)
        item["support"] = torch.stack([self._item(s)["image"] for s in episode.supports])
        return item
