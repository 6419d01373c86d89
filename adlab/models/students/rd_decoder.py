"""The reverse-distillation student: a de-ResNet that mirrors the teacher from the bottleneck up."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adlab.models.blocks import EXPANSION, init_resnet_weights, make_stage
from adlab.models.features import Features, merged


class ReverseDecoder(nn.Module):
    """Decode a 2*c3 @ s/2 code back into the teacher's scales [c1@4s, c2@2s, c3@s].

    Each stage doubles the resolution with a 2x2 transposed convolution in its first block; depths
    follow the teacher's own stage depths, as the official de_resnet definitions do
    (WRN50: 3, 4, 6 blocks; ResNet18: 2, 2, 2).
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        block: str = "bottleneck",
        depths: Sequence[int] = (3, 4, 6),
        base_width: int = 64,
    ) -> None:
        super().__init__()
        c1, c2, c3 = out_channels
        exp = EXPANSION[block]
        stages, cin = [], 2 * c3
        for cout, depth in zip((c3, c2, c1), depths):
            stages.append(make_stage(block, cin, cout // exp, depth, 2, True, base_width))
            cin = cout
        self.stages = nn.ModuleList(stages)
        init_resnet_weights(self)

    @classmethod
    def from_features(cls, features: Features, **given) -> ReverseDecoder:
        """Mirror the teacher's three finest ResNet stages (widths, depths, block type)."""
        taps = features.first(3, "the reverse decoder (student=rd_decoder)")
        taps = taps.resnet("the reverse decoder (student=rd_decoder)")
        derived = {
            "out_channels": taps.channels,
            "block": taps.block,
            "depths": taps.depths,
            "base_width": taps.base_width,
        }
        return cls(**merged(derived, given))

    def forward(self, code: Tensor) -> list[Tensor]:
        outs = []
        x = code
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[::-1]  # finest first, matching the teacher's tap order
