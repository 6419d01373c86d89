"""PDD's network: two frozen teachers fused by InA/MMU, manifold priors (MPA), dual students."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from adlab.models.features import CompositionError
from adlab.models.fusion.pdd_fusion import PDDFeatures
from adlab.models.networks.base import AnomalyNetwork
from adlab.models.students.dual_prior import StudentOutputs
from adlab.models.teachers.dual import DualTeacher, TeacherFeatures


class PDDNetwork(AnomalyNetwork):
    """teacher: DualTeacher; fusion/student: factories completed with the teacher's widths.

    Scoring sums 1 - cos(S, f_b) over the three scales of every built student (both for full
    PDD), as the official evaluation does, but for every image of a batch.
    """

    not_exportable = (
        "VMamba's selective scan is a Python loop over chunks: tracing unrolls it into a graph "
        "tied to one image size and far larger than the network; use adlab.load_model"
    )

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scoring)
        if not isinstance(teacher, DualTeacher):
            raise CompositionError(
                "PDD needs teacher=vmamba_wrn50 (adlab.models.teachers.dual.DualTeacher), got "
                f"{type(teacher).__name__}"
            )
        self.assemble(teacher, fusion, student)
        self.input_divisor = max(teacher.features.strides[-1], 32)
        if getattr(self.student, "needs_priors", False) and self.fusion.mpa is None:
            raise CompositionError(
                f"student.students={self.student.students!r} adds manifold priors: set "
                "fusion.mpa=true (or student.students=plain)"
            )

    def distill(self, teacher: TeacherFeatures) -> tuple[PDDFeatures, StudentOutputs]:
        """Fused targets and both students' reconstructions from the teachers' features."""
        fused = self.fusion(teacher.cnn, teacher.vmamba)
        return fused, self.student(fused.manifold, fused.priors)

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            teacher = self.teacher(images)
        fused, out = self.distill(teacher)
        pairs = []
        for preds in (out.prior, out.plain):
            if preds is not None:
                pairs += list(zip(fused.targets, preds))
        return pairs
