"""URD's network: frozen expert, trained teacher, and a student (OCBE + skip decoder) that
reconstructs the teacher; anomaly maps from the trained teacher vs the student."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from adlab.models.blocks import init_xavier_convs
from adlab.models.features import CompositionError, build
from adlab.models.networks.base import AnomalyNetwork
from adlab.models.teachers.expert import ExpertTeacher


class URDNetwork(AnomalyNetwork):
    """teacher: an ExpertTeacher pair, or one encoder (the expert; the teacher starts as a copy).

    fusion, student: factories completed from the teacher's taps; the student is called as
    student(code, teacher_taps) so it can inject teacher features between decoder stages. Every
    Conv2d of fusion and student is Xavier-normal initialised, as the official Student (the
    transposed convolutions keep PyTorch's default init there too).
    """

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scoring)
        pair = ExpertTeacher.of(teacher)
        self.expert = pair.expert
        self.freeze("expert")
        self.teacher = pair.teacher
        features = pair.features
        self.fusion = build(fusion, features, "fusion")
        self.student = build(student, features, "student")
        if not hasattr(self.student, "skips"):
            raise CompositionError(
                f"URD's student injects teacher features between decoder stages: use "
                f"student=skip_decoder, got {type(self.student).__name__}"
            )
        init_xavier_convs(self.fusion)
        init_xavier_convs(self.student)
        self.input_divisor = features.strides[-1] * 2  # the OCBE halves the coarsest tap

    def distill(self, targets: list[Tensor]) -> list[Tensor]:
        """The student's reconstruction of the teacher's taps (teacher features injected)."""
        return self.student(self.fusion(targets), targets)

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            targets = self.teacher(images)
        return list(zip(targets, self.distill(targets)))
