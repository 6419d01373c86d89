"""RD4AD (Deng & Li, CVPR 2022): frozen teacher -> OCBE -> reverse decoder, cosine distillation."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from adlab.methods.base import DistillationMethod
from adlab.models.losses import get_loss
from adlab.models.networks.rd4ad import RD4ADNetwork


class RD4AD(DistillationMethod):
    """Reverse distillation: the student reconstructs the frozen teacher's three taps.

    loss: flat_cos (official) or pixel_cos. Shared options (optimizer, scoring, ...) go to
    DistillationMethod.
    """

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        loss: str = "flat_cos",
        **common,
    ) -> None:
        super().__init__(RD4ADNetwork(teacher, fusion, student), **common)
        self.loss_name = loss
        self.loss_fn = get_loss(loss)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        targets = self.teacher_features(batch["image"], batch.get("path"))
        return {"loss": self.loss_fn(targets, self.model.distill(targets))}

    def parameter_groups(self) -> list[dict]:
        trained = [*self.model.fusion.parameters(), *self.model.student.parameters()]
        return [{"params": trained}]
