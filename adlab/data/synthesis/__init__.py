"""Synthetic anomalies for training (DRAEM style): Perlin masks, textures, foreground masks and
the per-item seeding that keeps them reproducible with any number of workers."""

from adlab.data.synthesis.anomalies import PerlinAnomalies, build_anomalies, enabled
from adlab.data.synthesis.seeding import EpochSampler, checkpoint_epoch, item_rng

__all__ = [
    "EpochSampler",
    "PerlinAnomalies",
    "build_anomalies",
    "checkpoint_epoch",
    "enabled",
    "item_rng",
]
