"""URD's two losses: the teacher's against the frozen expert, the student's against both.

Features are lists of per-scale maps, finest first. Every weight is 1, as the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adlab.models.losses import flat_cos_loss, pixel_cos_loss


@torch.no_grad()
def cascaded_masks(mask: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """The synthetic mask at each feature size, finest first: resized (bilinear,
    align_corners=True) from the previous level's binarised mask and thresholded at 0.5.

    Cascading (256 -> 64 -> 32 -> 16) is what the official code does; resizing each level from
    the full mask differs on a few percent of the coarse pixels.
    """
    out, m = [], mask.float()
    for size in sizes:
        m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=True)
        m = (m >= 0.5).to(m.dtype)
        out.append(m)
    return out


def masked_orthogonality_loss(
    damaged: Sequence[Tensor], normal: Sequence[Tensor], mask: Tensor
) -> Tensor:
    """Sum over scales of the L1 distance between 1 - cos over channels (per pixel) and the
    mask: matching the expert's normal features off the anomaly, orthogonal to them on it."""
    masks = cascaded_masks(mask, [tuple(f.shape[-2:]) for f in damaged])
    terms = [
        F.l1_loss((1 - F.cosine_similarity(d, n, dim=1)).unsqueeze(1), m)
        for d, n, m in zip(damaged, normal, masks)
    ]
    return torch.stack(terms).sum()


def teacher_losses(
    t_normal: Sequence[Tensor],
    t_damaged: Sequence[Tensor],
    e_normal: Sequence[Tensor],
    e_damaged: Sequence[Tensor],
    mask: Tensor,
) -> dict[str, Tensor]:
    """The teacher step: T(x) ~ E(x) per pixel; T(x~) ~ E(x) off the mask and orthogonal on it;
    T(x~) ~ E(x~) as whole maps. "teacher" is their sum, the loss optimised."""
    parts = {
        "teacher_pixel": pixel_cos_loss(e_normal, t_normal),
        "teacher_mask": masked_orthogonality_loss(t_damaged, e_normal, mask),
        "teacher_flat": flat_cos_loss(e_damaged, t_damaged),
    }
    return {**parts, "teacher": sum(parts.values())}


def student_losses(
    s_normal: Sequence[Tensor],
    s_damaged: Sequence[Tensor],
    t_normal: Sequence[Tensor],
    e_normal: Sequence[Tensor],
) -> dict[str, Tensor]:
    """The student step: its reconstructions of the normal and the damaged image, both against
    the teacher's and the expert's features of the NORMAL image (flat cosine). "student" is the
    sum, the loss optimised."""
    parts = {
        "student_t_normal": flat_cos_loss(t_normal, s_normal),
        "student_t_damaged": flat_cos_loss(t_normal, s_damaged),
        "student_e_normal": flat_cos_loss(e_normal, s_normal),
        "student_e_damaged": flat_cos_loss(e_normal, s_damaged),
    }
    return {**parts, "student": sum(parts.values())}
