"""Distillation losses between lists of teacher targets and student predictions (one per scale)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(targets: Sequence[Tensor], preds: Sequence[Tensor]) -> None:
    if len(targets) != len(preds):
        raise ValueError(f"{len(targets)} target scales but {len(preds)} predicted scales")
    for i, (t, p) in enumerate(zip(targets, preds)):
        if t.shape != p.shape:
            raise ValueError(
                f"scale {i}: target shape {tuple(t.shape)} != prediction {tuple(p.shape)}"
            )


def flat_cos_loss(targets: Sequence[Tensor], preds: Sequence[Tensor]) -> Tensor:
    """Sum over scales of mean over the batch of 1 - cos(flatten(target), flatten(prediction)).

    This is the loss every official code uses: each sample's whole feature map is one vector.
    """
    _check(targets, preds)
    terms = [
        (1 - F.cosine_similarity(t.flatten(1), p.flatten(1), dim=1)).mean()
        for t, p in zip(targets, preds)
    ]
    return torch.stack(terms).sum()


def pixel_cos_loss(targets: Sequence[Tensor], preds: Sequence[Tensor]) -> Tensor:
    """Sum over scales of mean over pixels of 1 - cos over channels (the paper's formulation)."""
    _check(targets, preds)
    terms = [(1 - F.cosine_similarity(t, p, dim=1)).mean() for t, p in zip(targets, preds)]
    return torch.stack(terms).sum()


LOSSES = {"flat_cos": flat_cos_loss, "pixel_cos": pixel_cos_loss}


def get_loss(name: str):
    """Look a distillation loss up by its config name."""
    if name not in LOSSES:
        raise ValueError(f"method.loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
