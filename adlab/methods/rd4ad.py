"""RD4AD (Deng & Li, CVPR 2022): frozen teacher -> OCBE -> reverse decoder, cosine distillation."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from adlab.methods.base import DistillationMethod, complete
from adlab.models.losses import get_loss


class RD4AD(DistillationMethod):
    """Reverse distillation; `fusion` and `student` are factories completed with teacher shapes.

    The teacher's stage depths and block type decide the OCBE depth and the mirrored decoder, so
    `teacher=resnet18` gives the official ResNet18 variant with no other change.
    """

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        optimizer: Mapping,
        loss: str = "flat_cos",
        scheduler: Mapping | None = None,
        scoring: Mapping | None = None,
        evaluation: Mapping | None = None,
        channels_last: bool = False,
        teacher_cache_gib: float | None = None,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            scheduler=scheduler,
            scoring=scoring,
            evaluation=evaluation,
            channels_last=channels_last,
            teacher_cache_gib=teacher_cache_gib,
        )
        if len(teacher.channels) != 3:
            raise ValueError(
                f"RD4AD needs a teacher with 3 taps (teacher.layers), got {teacher.channels}"
            )
        self.teacher = self.freeze(teacher)
        self.input_divisor = teacher.strides[-1] * 2  # OCBE halves the coarsest tap once more
        shape = {"block": teacher.block, "base_width": teacher.base_width}
        self.fusion = complete(
            fusion, in_channels=teacher.channels, layers=teacher.depths[0], **shape
        )
        self.student = complete(
            student, out_channels=teacher.channels, depths=teacher.depths, **shape
        )
        self.loss_name = loss
        self.loss_fn = get_loss(loss)

    def _features(self, images: Tensor, keys=None) -> tuple[list[Tensor], list[Tensor]]:
        targets = self.teacher_features(images, keys)
        return targets, self.student(self.fusion(targets))

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        targets, preds = self._features(batch["image"], batch.get("path"))
        return {"loss": self.loss_fn(targets, preds)}

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        targets, preds = self._features(images)
        return list(zip(targets, preds))

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.fusion.parameters()) + list(self.student.parameters())}]
