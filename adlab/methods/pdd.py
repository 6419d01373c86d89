"""PDD (Lu et al., CVPR 2026): two frozen teachers fused by InA/MMU, manifold priors (MPA), and
two students sharing decoder stages, trained with distillation + diversity losses."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from adlab.methods.base import DistillationMethod, complete
from adlab.models.fusion.pdd_fusion import PDDFeatures
from adlab.models.pdd_loss import COS_SIGNS, pdd_loss
from adlab.models.students.dual_prior import StudentOutputs

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
    """teacher: DualTeacher; fusion/student: factories completed with the teacher's widths.

    Scoring sums 1 - cos(S, f_b) over the three scales of every built student (both for full
    PDD), as the official evaluation does, but for every image of a batch.
    """

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        optimizer: Mapping,
        loss: Mapping | None = None,
        scheduler: Mapping | None = None,
        scoring: Mapping | None = None,
        evaluation: Mapping | None = None,
        teacher_cache_gib: float | None = None,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            scheduler=scheduler,
            scoring=scoring,
            evaluation=evaluation,
            teacher_cache_gib=teacher_cache_gib,
        )
        if not hasattr(teacher, "vmamba_channels"):
            raise TypeError(
                "PDD needs teacher=vmamba_wrn50 (adlab.models.teachers.dual.DualTeacher), got "
                f"{type(teacher).__name__}"
            )
        unknown = set(loss or {}) - set(LOSS_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown method.loss keys {sorted(unknown)}; valid: {sorted(LOSS_DEFAULTS)}"
            )
        self.loss_cfg = {**LOSS_DEFAULTS, **dict(loss or {})}
        sign = self.loss_cfg["cos_sign"]
        if sign not in COS_SIGNS:
            raise ValueError(f"method.loss.cos_sign must be one of {COS_SIGNS}, got {sign!r}")
        self.teacher = self.freeze(teacher)
        self.input_divisor = max(teacher.strides[-1], 32)
        self.fusion = complete(
            fusion, cnn_channels=teacher.channels, vmamba_channels=teacher.vmamba_channels
        )
        self.student = complete(student, out_channels=teacher.channels[:3])
        if getattr(self.student, "needs_priors", False) and self.fusion.mpa is None:
            raise ValueError(
                f"student.students={self.student.students!r} adds manifold priors: set "
                "fusion.mpa=true (or student.students=plain)"
            )

    def _forward(self, images: Tensor, keys=None) -> tuple[PDDFeatures, StudentOutputs]:
        teacher = self.teacher_features(images, keys)
        fused = self.fusion(teacher.cnn, teacher.vmamba)
        return fused, self.student(fused.manifold, fused.priors)

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        fused, out = self._forward(batch["image"], batch.get("path"))
        return pdd_loss(fused.targets, out.prior, out.plain, **self.loss_cfg)

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        fused, out = self._forward(images)
        pairs = []
        for preds in (out.prior, out.plain):
            if preds is not None:
                pairs += list(zip(fused.targets, preds))
        return pairs

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.fusion.parameters()) + list(self.student.parameters())}]
