"""Pick the training images: all normals (full-shot) or k normals per seed (k-shot)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from adlab.data.records import DatasetError, Sample


def select_train(samples: list[Sample], sampler: Mapping[str, Any]) -> list[Sample]:
    """Apply the sampler config ({name: full} or {name: kshot, shots, seeds}) to the training
    normals: k-shot draws by the first seed, per category, so a multi-class set gets k images of
    each class."""
    name = sampler.get("name", "full")
    if name == "full":
        return list(samples)
    if name != "kshot":
        raise DatasetError(f"sampler.name={name!r} is unknown; use 'full' or 'kshot'.")
    shots = int(sampler.get("shots", 0))
    if shots < 1:
        raise DatasetError(f"sampler.shots={shots} must be a positive number of images.")
    rng = random.Random(first_seed(sampler))
    chosen: list[Sample] = []
    for category in sorted({s.category for s in samples}):
        pool = sorted((s for s in samples if s.category == category), key=lambda s: s.path)
        if len(pool) < shots:
            raise DatasetError(
                f"sampler.shots={shots} but category {category!r} has only {len(pool)} normal "
                "training images; lower sampler.shots."
            )
        chosen.extend(rng.sample(pool, shots))
    return sorted(chosen, key=lambda s: s.path)


def seeds_of(sampler: Mapping[str, Any]) -> list[int]:
    """sampler.seeds as a list of ints (configs before it had one `seed`)."""
    seeds = sampler.get("seeds", [sampler.get("seed", 0)])
    seeds = [seeds] if isinstance(seeds, int | str) else list(seeds)
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        out = []
    if not out:
        raise DatasetError(f"sampler.seeds={seeds!r} must be a non-empty list of integers.")
    return out


def first_seed(sampler: Mapping[str, Any]) -> int:
    return seeds_of(sampler)[0]


def carve_validation(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split training normals into (train, valid) by a seeded draw of `fraction` of them."""
    if not 0 <= fraction < 1:
        raise DatasetError(f"dataset.val_fraction={fraction} must be in [0, 1).")
    if fraction == 0:
        return list(samples), []
    ordered = sorted(samples, key=lambda s: s.path)
    count = max(1, round(len(ordered) * fraction))
    picked = set(random.Random(seed).sample(range(len(ordered)), count))
    valid = [_with_split(s, "valid") for i, s in enumerate(ordered) if i in picked]
    train = [s for i, s in enumerate(ordered) if i not in picked]
    return train, valid


def _with_split(sample: Sample, split: str) -> Sample:
    return Sample(sample.path, sample.label, split, sample.category, sample.mask)
