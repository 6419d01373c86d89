"""A trained model without Lightning or Hydra in the caller's code: `adlab.load_model(ckpt)`.

The returned network maps normalised images to anomaly maps and scores; its `transform` is the
run's preprocessing (resize, crop, resampling, normalisation), so new images need no config.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adlab.data.io import read_image
from adlab.data.transforms import Transform
from adlab.models.networks.base import AnomalyNetwork


def transform_of(config: dict) -> Transform:
    """The preprocessing a run used, from its stored config."""
    data = config["data"]
    return Transform(
        int(config["image_size"]), data.get("crop_size"), data["resample"], data["normalize"]
    )


def load_model(ckpt: str | Path, device: str | torch.device = "cpu") -> AnomalyNetwork:
    """The network of an adlab checkpoint, in eval mode on `device`, weights loaded strictly
    (reference sets of few-shot methods included), with `.transform` attached."""
    from adlab.compose import load_checkpoint, method_from_checkpoint

    checkpoint = load_checkpoint(ckpt)
    network = method_from_checkpoint(checkpoint).model
    network.transform = transform_of(checkpoint["adlab_config"])
    network.config = checkpoint["adlab_config"]
    return network.eval().to(device)


def preprocess(network: AnomalyNetwork, paths: list[str | Path]) -> torch.Tensor:
    """Read and preprocess image files into the batch `network` expects."""
    transform = network.transform
    return torch.stack([transform.finish(transform.resize(read_image(p))) for p in paths])
