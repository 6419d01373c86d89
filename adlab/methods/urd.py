"""URD (Liu et al., AAAI 2025): a teacher fine-tuned against a frozen expert on normal and
synthetically damaged images, and a skip-fused reverse-distillation student, two steps a batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from adlab.methods.base import DistillationMethod
from adlab.models.losses import flat_cos_loss
from adlab.models.networks.urd import URDNetwork
from adlab.models.urd_loss import student_losses, teacher_losses


class URD(DistillationMethod):
    """Per batch (image x, damaged image x~, synthetic mask): the teacher step (teacher in train
    mode, three losses against the expert), then the student step (teacher in eval mode, its
    features recomputed without gradient by the updated teacher), each with its own Adam.

    teacher_optimizer: the teacher's Adam ({lr, betas, ...}); `optimizer` is the student's
    (fusion + skip decoder). The teacher optimiser holds the tapped encoder only (the official
    one also holds layer4 and fc, which never get gradients, so Adam skips them anyway).
    """

    bf16_training = False  # bf16 training moved image AUROC by 4.3 points
    bf16_testing = True  # bf16 testing of a float32 model: within 0.01 points
    bf16_note = (
        "CPU, synthetic 64 px, random ResNet18 expert, 12 iterations, seed 0: bf16-mixed "
        "training changed image AUROC by 4.34 and pixel AUROC by 0.24 points; testing the float32 "
        "model in bf16 by 0.00 and 0.01"
    )

    automatic_optimization = False
    optimizers_per_batch = 2
    required_batch_keys = ("image", "label", "path", "augmented", "synthetic_mask")

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        teacher_optimizer: Mapping,
        **common,
    ) -> None:
        if common.get("teacher_cache_gib") not in (None, 0, "auto"):  # auto refuses by itself
            raise ValueError(
                "method.teacher_cache_gib: URD trains its teacher and damages images anew each "
                "epoch, so teacher features cannot be cached; set method.teacher_cache_gib=0"
            )
        if common.get("scheduler"):
            raise ValueError(
                "method.scheduler: URD uses constant learning rates (as the official code); "
                "set method.scheduler=null"
            )
        super().__init__(URDNetwork(teacher, fusion, student), **common)
        self.teacher_optimizer_cfg = dict(teacher_optimizer)

    # --- optimisers: index 0 the teacher, 1 the student --------------------------------------
    def configure_optimizers(self):
        net = self.model
        student = [*net.fusion.parameters(), *net.student.parameters()]
        return [
            self.make_optimizer(self.teacher_optimizer_cfg, net.teacher.parameters()),
            self.make_optimizer(self.optimizer_cfg, student),
        ]

    # --- the two steps -----------------------------------------------------------------------
    @torch.no_grad()
    def expert_features(self, images: Tensor) -> list[Tensor]:
        return self.model.expert(images)

    def teacher_losses(self, batch: dict, e_normal: list[Tensor]) -> dict[str, Tensor]:
        """Teacher in train mode (batch statistics), two separate forwards as the official code."""
        teacher = self.model.teacher.train()
        e_damaged = self.expert_features(batch["augmented"])
        t_normal, t_damaged = teacher(batch["image"]), teacher(batch["augmented"])
        mask = synthetic_mask(batch)
        return teacher_losses(t_normal, t_damaged, e_normal, e_damaged, mask)

    def student_losses(self, batch: dict, e_normal: list[Tensor]) -> dict[str, Tensor]:
        """Teacher in eval mode; its features of the updated weights are constants here."""
        teacher = self.model.teacher.eval()
        with torch.no_grad():
            t_normal, t_damaged = teacher(batch["image"]), teacher(batch["augmented"])
        s_normal = self.model.distill(t_normal)
        s_damaged = self.model.distill(t_damaged)
        return student_losses(s_normal, s_damaged, t_normal, e_normal)

    def _optimise(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_teacher, opt_student = self.optimizers()
        e_normal = self.expert_features(batch["image"])
        parts = self.teacher_losses(batch, e_normal)
        self._optimise(opt_teacher, parts["teacher"])
        parts.update(self.student_losses(batch, e_normal))
        self._optimise(opt_student, parts["student"])
        parts["loss"] = parts["teacher"].detach() + parts["student"].detach()
        self.log_losses(parts, batch["image"].shape[0])

    def validation_loss(self, batch: dict) -> Tensor:
        """The student loss on normal images (its normal half: S(T(x)) vs T(x) and vs E(x)),
        with the teacher in eval mode; validation splits carry no damaged images."""
        images = batch["image"]
        targets = self.model.teacher.eval()(images)
        recon = self.model.distill(targets)
        return flat_cos_loss(targets, recon) + flat_cos_loss(self.expert_features(images), recon)


def synthetic_mask(batch: dict) -> Tensor:
    """The batch's synthetic mask as (B, 1, H, W) float, checked against the damaged images."""
    mask, damaged = batch["synthetic_mask"], batch["augmented"]
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != damaged.shape[0]:
        raise ValueError(
            f"batch['synthetic_mask'] must be (B, 1, H, W) for {damaged.shape[0]} damaged "
            f"images, got {tuple(mask.shape)}: check the synthesis component"
        )
    return mask.float()
