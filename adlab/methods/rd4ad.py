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

    # experiments/bench/gpu.py measures it on a GPU; README "Speed options" has the CPU figures.
    bf16_training = False  # bf16 training moved image AUROC by 2.6-3.0 points
    bf16_testing = True  # bf16 testing of a float32 model: within 0.17 points
    bf16_note = (
        "CPU, synthetic 64 px, random ResNet18, seed 0: bf16-mixed training changed image AUROC "
        "by 2.9 (3 epochs) and 2.6 points (12 epochs, pixel_cos), pixel AUROC by 0.5; testing "
        "the float32 models in bf16 by at most 0.17 (a seed change moves image AUROC 4.7)"
    )

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
