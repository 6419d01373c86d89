"""The trained model as one plain nn.Module: normalised images in, anomaly maps and scores out.

Each method's network holds its teacher(s), fusion, student(s), scoring settings and, for few-shot
methods, the stored reference features, so a checkpoint is usable without Lightning or Hydra
(`adlab.load_model`, `adlab.predict`, export). The LightningModule adds only losses, optimisers
and logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from adlab.models.features import build
from adlab.scoring import anomaly_maps, image_scores

DEFAULT_SCORING = {"combine": "sum", "sigma": 4.0}


class AnomalyOutput(NamedTuple):
    maps: Tensor  # (B, H, W) at the input resolution
    scores: Tensor  # (B,) image scores, the maximum of each map


class AnomalyNetwork(nn.Module):
    """Base of every method's network: subclasses implement `feature_pairs(images)`.

    Frozen parts (`freeze`) take no gradients and stay in eval mode whatever `train()` is called
    with. A few-shot network sets `references_needed`, names its reference buffers in
    `reference_names` and fills them in `set_references` (`register_reference`); checkpoints
    carry them at any shape (k supports of any size).
    """

    references_needed: bool = False
    reference_names: tuple[str, ...] = ()
    input_divisor: int = 32  # image sizes must be multiples of this (the total stride)
    not_exportable: str = ""  # why adlab.export refuses this network ("" = it exports)

    def __init__(self, scoring: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.scoring = {**DEFAULT_SCORING, **dict(scoring or {})}
        self._frozen: list[str] = []
        for name in self.reference_names:
            self.register_buffer(name, None, persistent=True)
        self.transform = None  # the preprocessing, attached by adlab.load_model

    # --- what a network defines ------------------------------------------------------------
    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(target, prediction) feature maps per scale whose disagreement is the anomaly."""
        raise NotImplementedError

    def set_references(self, images: Tensor) -> None:
        """Compute and keep what test images are scored against (few-shot support sets)."""
        raise NotImplementedError(f"{type(self).__name__} scores without reference images")

    # --- shared behaviour ------------------------------------------------------------------
    def forward(self, images: Tensor) -> AnomalyOutput:
        pairs = self.feature_pairs(images)
        # Maps in float32 under bf16 autocast too: its Gaussian conv would otherwise run in bf16.
        with torch.autocast(images.device.type, enabled=False):
            maps = anomaly_maps(pairs, tuple(images.shape[-2:]), **self.scoring)
        return AnomalyOutput(maps, image_scores(maps))

    def assemble(self, teacher: nn.Module, fusion, student) -> None:
        """The usual parts: a frozen `teacher`, and `fusion` and `student` built from its feature
        description (adlab.models.features.build: a composition error names the group)."""
        self.teacher = teacher
        self.freeze("teacher")
        self.fusion = build(fusion, teacher.features, "fusion")
        self.student = build(student, teacher.features, "student")

    def freeze(self, name: str) -> None:
        """Stop gradients into the child `name` and keep it in eval mode (fixed BatchNorm)."""
        module = getattr(self, name)
        module.requires_grad_(False)
        module.eval()
        self._frozen.append(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen:
            getattr(self, name).eval()
        return self

    def register_reference(self, name: str, value: Tensor) -> None:
        """Keep `value` in the reference buffer `name` (one of `reference_names`)."""
        if name not in self.reference_names:
            raise KeyError(f"{type(self).__name__}.reference_names has no {name!r}")
        self.register_buffer(name, value, persistent=True)

    def references(self) -> dict[str, Tensor]:
        """The stored reference buffers by name (what a checkpoint carries of the support set)."""
        return {
            name: value
            for name in self.reference_names
            if (value := getattr(self, name)) is not None and value.numel() > 0
        }

    def has_references(self) -> bool:
        """Whether reference tensors are stored (set_references ran or a checkpoint held them)."""
        return bool(self.references())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Reference buffers take the stored shape (k supports of any size) before loading.
        for name in self.reference_names:
            stored = state_dict.get(prefix + name)
            if stored is not None:
                self.register_buffer(name, stored.new_empty(stored.shape), persistent=True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weights_sources(self) -> dict[str, str]:
        """Where each pretrained part's weights came from (file, hub name or "random")."""
        return {
            name or "model": m.weights_source
            for name, m in self.named_modules()
            if isinstance(getattr(m, "weights_source", None), str)
        }
