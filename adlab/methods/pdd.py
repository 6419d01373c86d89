"""PDD (Lu et al., CVPR 2026): two frozen teachers fused by InA/MMU, manifold priors (MPA), and
two students sharing decoder stages, trained with distillation + diversity losses."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from adlab.methods.base import DistillationMethod
from adlab.models.networks.pdd import PDDNetwork
from adlab.models.pdd_loss import COS_SIGNS, pdd_loss

LOSS_DEFAULTS = {
    "w_mse_prior": 0.02,
    "w_cos": 0.05,
    "w_mse_plain": 0.02,
    "w_div": 0.5,
    "cos_sign": "paper",
    "low_layers": 1,
    "tau_low": 0.75,
    "tau_high": 0.30,
}


class PDD(DistillationMethod):
    """PDD's training: distillation + diversity losses on the network's fused targets."""

    # experiments/bench/gpu.py measures it on a GPU; README "Speed options" has the CPU figures.
    bf16_training = False  # bf16 training moved image AUROC by 3.5 points, pixel by 2.9
    bf16_testing = True  # bf16 testing of a float32 model: within 0.17 points
    bf16_note = (
        "CPU, synthetic 64 px, random ResNet18 + width-8 VMamba, 3 epochs, seed 0: bf16-mixed "
        "training changed image AUROC by 3.5 and pixel AUROC by 2.9 points; testing the float32 "
        "model in bf16 by at most 0.17"
    )

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        loss: Mapping | None = None,
        **common,
    ) -> None:
        unknown = set(loss or {}) - set(LOSS_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown method.loss keys {sorted(unknown)}; valid: {sorted(LOSS_DEFAULTS)}"
            )
        loss_cfg = {**LOSS_DEFAULTS, **dict(loss or {})}
        if loss_cfg["cos_sign"] not in COS_SIGNS:
            raise ValueError(
                f"method.loss.cos_sign must be one of {COS_SIGNS}, got {loss_cfg['cos_sign']!r}"
            )
        super().__init__(PDDNetwork(teacher, fusion, student), **common)
        self.loss_cfg = loss_cfg

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        teacher = self.teacher_features(batch["image"], batch.get("path"))
        fused, out = self.model.distill(teacher)
        return pdd_loss(fused.targets, out.prior, out.plain, **self.loss_cfg)

    def parameter_groups(self) -> list[dict]:
        trained = [*self.model.fusion.parameters(), *self.model.student.parameters()]
        return [{"params": trained}]
