"""RD4AD's network: frozen teacher -> OCBE -> reverse decoder; maps from teacher vs student."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from adlab.models.networks.base import AnomalyNetwork


class RD4ADNetwork(AnomalyNetwork):
    """teacher: an encoder with `.features` (3 ResNet taps); fusion, student: factories that
    derive their shapes from them, so `teacher=resnet18` gives the official ResNet18 variant."""

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scoring)
        self.assemble(teacher, fusion, student)
        self.input_divisor = teacher.features.strides[-1] * 2  # OCBE halves the coarsest tap

    def distill(self, targets: list[Tensor]) -> list[Tensor]:
        """The student's reconstruction of the teacher's taps."""
        return self.student(self.fusion(targets))

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            targets = self.teacher(images)
        return list(zip(targets, self.distill(targets)))
