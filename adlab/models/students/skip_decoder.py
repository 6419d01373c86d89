"""URD's student decoder: the reverse decoder run stage by stage with teacher skip fusion."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adlab.models.features import CompositionError, Features, merged
from adlab.models.fusion.skip_fusion import SkipFusion
from adlab.models.students.rd_decoder import ReverseDecoder


class SkipDecoder(nn.Module):
    """A ReverseDecoder whose stage outputs, except the last, are fused with the teacher's
    features at the same scale (`skips[i]` after stage i) before the next stage.

    For WRN50 at 256 px: 2048@8 -> stage 0 -> 1024@16, fused with teacher 1024@16 (+ 512@32)
    -> stage 1 -> 512@32, fused with teacher 512@32 (+ 256@64) -> stage 2 -> 256@64. The
    returned maps are the raw stage outputs, finest first. gii: Guided Information Injection
    (the paper's method); false is the path the released training script runs.
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        block: str = "bottleneck",
        depths: Sequence[int] = (3, 4, 6),
        base_width: int = 64,
        gii: bool = True,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in out_channels]
        self.decoder = ReverseDecoder(channels, block, depths, base_width)
        # Stage i decodes teacher level n-1-i; its skip takes that level and the next finer one.
        levels = range(len(channels) - 1, 0, -1)
        self.skips = nn.ModuleList(SkipFusion(channels[j - 1], channels[j], gii) for j in levels)
        self.gii = bool(gii)

    @classmethod
    def from_features(cls, features: Features, **given) -> SkipDecoder:
        """Mirror the teacher's three ResNet stages; each tap must halve the previous one's
        resolution (the finer tap is brought down by bilinear x0.5)."""
        name = "the skip decoder (student=skip_decoder)"
        taps = features.first(3, name).resnet(name)
        strides = taps.strides
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise CompositionError(
                f"{name} needs teacher taps whose strides double, {features.source} gives {strides}"
            )
        derived = {
            "out_channels": taps.channels,
            "block": taps.block,
            "depths": taps.depths,
            "base_width": taps.base_width,
        }
        return cls(**merged(derived, given))

    def forward(self, code: Tensor, teacher: Sequence[Tensor]) -> list[Tensor]:
        """code: the fusion's output; teacher: the teacher's taps, finest first."""
        outs = []
        x = code
        n = len(self.decoder.stages)
        for i, stage in enumerate(self.decoder.stages):
            decoded = stage(x)
            outs.append(decoded)
            if i < n - 1:
                level = n - 1 - i
                x = self.skips[i](decoded, teacher[level - 1], teacher[level])
        return outs[::-1]
