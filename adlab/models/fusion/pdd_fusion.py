"""PDD's fusion of two teachers: InA (injection into the CNN levels), MMU (unified manifold) and
MPA (manifold priors for the prior student).

The CNN teacher (WRN50 layer1..4) gives the skeleton; each VMamba level is lifted by a
ChannelAdapter to the CNN width, resized to the CNN level and added. Levels 0..2 become the three
distillation targets f_b, level 3 the unified manifold f_t fed to the students (no OCBE). Nothing
is detached: the adapters learn through the distillation loss, as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from adlab.models.blocks import init_resnet_weights
from adlab.models.features import CompositionError, Features, merged
from adlab.models.fusion.adapter import ChannelAdapter


class PDDFeatures(NamedTuple):
    """What the fusion hands to the students and the loss."""

    targets: list[Tensor]  # f_b per scale, finest first (256@64, 512@32, 1024@16 for WRN50)
    manifold: Tensor  # f_t, the students' input (2048@8)
    priors: list[Tensor] | None  # MPA priors in decoder order (1024@16, 512@32), or None


def resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize (align_corners=True, as nn.UpsamplingBilinear2d) to ref's spatial size."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


class InA(nn.Module):
    """Injection adapters: target_i = CNN_i + resize(adapter_i(VMamba_i)) for every level."""

    def __init__(
        self, cnn_channels: Sequence[int], vmamba_channels: Sequence[int], reduction: int = 4
    ) -> None:
        super().__init__()
        if len(cnn_channels) != len(vmamba_channels):
            raise ValueError(
                f"InA pairs levels one to one, got CNN {list(cnn_channels)} and VMamba "
                f"{list(vmamba_channels)}"
            )
        self.adapters = nn.ModuleList(
            ChannelAdapter(v, c, reduction) for c, v in zip(cnn_channels, vmamba_channels)
        )

    def forward(self, cnn: Sequence[Tensor], vmamba: Sequence[Tensor]) -> list[Tensor]:
        return [c + resize_to(a(v), c) for a, c, v in zip(self.adapters, cnn, vmamba)]


class MMU(nn.Module):
    """Manifold unification: f_t = CNN top level + adapter(VMamba top level)."""

    def __init__(self, cnn_channels: int, vmamba_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.adapter = ChannelAdapter(vmamba_channels, cnn_channels, reduction)

    def forward(self, cnn_top: Tensor, vmamba_top: Tensor) -> Tensor:
        return cnn_top + resize_to(self.adapter(vmamba_top), cnn_top)


class MPA(nn.Module):
    """Manifold prior adapter: shared 1x1 conv-BN-GELU trunk, one 1x1 head per prior.

    Each prior is resized (bilinear, align_corners=False as the official LightweightMLP) to the
    resolution of the decoder stage it is added to.
    """

    def __init__(self, in_channels: int, out_channels: Sequence[int], reduction: int = 2) -> None:
        super().__init__()
        mid = max(in_channels // reduction, 1)
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.GELU()
        )
        self.heads = nn.ModuleList(nn.Conv2d(mid, c, 1, bias=False) for c in out_channels)

    def forward(self, manifold: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        shared = self.trunk(manifold)
        return [
            F.interpolate(head(shared), size=tuple(size), mode="bilinear", align_corners=False)
            for head, size in zip(self.heads, sizes)
        ]


class PDDFusion(nn.Module):
    """Two teachers -> (targets f_b, manifold f_t, priors).

    cnn_channels: the CNN's 4 taps (WRN50: 256, 512, 1024, 2048). vmamba_channels: VMamba's 4 taps
    (192, 384, 768, 768), or None for the single-teacher ablation (targets = CNN taps, f_t = CNN
    top). mpa: build the manifold prior adapter (the prior student needs it).
    """

    def __init__(
        self,
        cnn_channels: Sequence[int],
        vmamba_channels: Sequence[int] | None = None,
        reduction: int = 4,
        mpa: bool = True,
        mpa_reduction: int = 2,
    ) -> None:
        super().__init__()
        cnn_channels = [int(c) for c in cnn_channels]
        if len(cnn_channels) != 4:
            raise ValueError(
                f"PDD fusion needs the CNN teacher's 4 taps (teacher.cnn.layers=[1,2,3,4]), got "
                f"channels {cnn_channels}"
            )
        if vmamba_channels is not None and len(vmamba_channels) != 4:
            raise ValueError(
                f"PDD fusion needs VMamba's 4 stage outputs, got channels {list(vmamba_channels)}"
            )
        self.cnn_channels = cnn_channels
        self.dual = vmamba_channels is not None
        if self.dual:
            v = [int(c) for c in vmamba_channels]
            self.ina = InA(cnn_channels[:3], v[:3], reduction)
            self.mmu = MMU(cnn_channels[3], v[3], reduction)
        # Priors for the outputs of decoder stages 1 and 2 (coarse to fine): widths c3, c2.
        self.prior_channels = cnn_channels[2:0:-1]
        self.mpa = MPA(cnn_channels[3], self.prior_channels, mpa_reduction) if mpa else None
        init_resnet_weights(self)

    @classmethod
    def from_features(cls, features: Features, **given) -> PDDFusion:
        """The CNN's 4 taps and, when the teacher has one, VMamba's (features.aux["vmamba"])."""
        if len(features.taps) != 4:
            raise CompositionError(
                f"PDD's fusion (fusion=mmu_ina) needs a CNN teacher with 4 taps (layer1..4, "
                f"teacher=vmamba_wrn50), {features.source} gives {len(features.taps)}"
            )
        vmamba = features.aux.get("vmamba")
        derived = {
            "cnn_channels": features.channels,
            "vmamba_channels": None if vmamba is None else vmamba.channels,
        }
        return cls(**merged(derived, given))

    def forward(self, cnn: Sequence[Tensor], vmamba: Sequence[Tensor] | None = None) -> PDDFeatures:
        if len(cnn) != 4:
            raise ValueError(f"PDDFusion expects 4 CNN feature maps, got {len(cnn)}")
        if self.dual:
            if vmamba is None or len(vmamba) != 4:
                raise ValueError("PDDFusion was built for two teachers but got no VMamba features")
            targets = self.ina(cnn[:3], vmamba[:3])
            manifold = self.mmu(cnn[3], vmamba[3])
        else:
            targets, manifold = list(cnn[:3]), cnn[3]
        priors = None
        if self.mpa is not None:
            sizes = [tuple(t.shape[-2:]) for t in targets[2:0:-1]]
            priors = self.mpa(manifold, sizes)
        return PDDFeatures(targets, manifold, priors)
