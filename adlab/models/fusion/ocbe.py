"""RD4AD's one-class bottleneck embedding (OCBE): multi-scale feature fusion + one-class encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adlab.models.blocks import EXPANSION, conv3x3, init_resnet_weights, make_stage
from adlab.models.features import CompositionError, Features, merged


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(cin, cout, 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class OCBE(nn.Module):
    """Fuse three teacher scales (c1@4s, c2@2s, c3@s) into one compact code (2*c3 @ s/2).

    MFF brings the two finer maps down to the coarsest scale with stride-2 3x3 convolutions and
    concatenates them with it (3*c3 channels); OCE is a stage of `layers` residual blocks, the first
    halving the resolution. For WRN50 this is 3072@16 -> 2048@8 at 256 px.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        block: str = "bottleneck",
        layers: int = 3,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"OCBE fuses exactly 3 teacher scales, got channels {in_channels}")
        c1, c2, c3 = in_channels
        self.fine = nn.Sequential(_down(c1, c2), _down(c2, c3))
        self.mid = _down(c2, c3)
        self.out_channels = 2 * c3
        planes = self.out_channels // EXPANSION[block]
        self.oce = make_stage(
            block, 3 * c3, planes, layers, stride=2, up=False, base_width=base_width
        )
        init_resnet_weights(self)

    @classmethod
    def from_features(cls, features: Features, **given) -> OCBE:
        """Three ResNet taps; the OCE depth is the first stage's (the official per-backbone
        tables: 3 for WRN50, 2 for ResNet18)."""
        taps = features.first(3, "the OCBE (fusion=ocbe)").resnet("the OCBE (fusion=ocbe)")
        if len(taps.taps) != len(features.taps):
            raise CompositionError(
                f"the OCBE (fusion=ocbe) fuses exactly 3 teacher taps, {features.source} gives "
                f"{len(features.taps)} (channels {features.channels})"
            )
        derived = {
            "in_channels": taps.channels,
            "block": taps.block,
            "layers": taps.depths[0],
            "base_width": taps.base_width,
        }
        return cls(**merged(derived, given))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        f1, f2, f3 = feats
        return self.oce(torch.cat([self.fine(f1), self.mid(f2), f3], dim=1))
