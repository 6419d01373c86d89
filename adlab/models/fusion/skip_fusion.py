"""URD's skip fusion: teacher features injected into the reverse decoder between its stages.

The decoder alone reconstructs from a compact code and loses detail; URD hands it the teacher's
features at the scale it just decoded, optionally weighted by Guided Information Injection (GII)
so that where the decoder already agrees with the teacher it keeps its own feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlab.models.blocks import conv_bn_relu


def guided_injection(decoded: Tensor, injected: Tensor, teacher: Tensor) -> Tensor:
    """GII: injected * s + decoded * (1 - s), s = cos over channels of (decoded, teacher).

    s is a constant (computed without gradient, as the official code): the blend routes
    gradients into both inputs but never through the similarity. It is not clamped, so
    1 - s lies in [0, 2].
    """
    with torch.no_grad():
        sim = F.cosine_similarity(decoded.detach(), teacher, dim=1).unsqueeze(1)
    return injected * sim + decoded * (1 - sim)


class SkipFusion(nn.Module):
    """Fuse a decoder stage's output (c @ s) with the teacher's features at that scale.

    The teacher feature gets the finer teacher tap added (bilinear x0.5, 1x1 conv to c, BN, ReLU)
    and a conv3x3-BN-ReLU (`encoder`); with gii, GII blends it with the decoded feature and a
    conv3x3-BN-ReLU (`guide`) follows; `merge` (conv3x3 2c -> c, BN, ReLU) takes
    cat(decoded, injected) and feeds the next decoder stage.
    """

    def __init__(self, fine_channels: int, channels: int, gii: bool = True) -> None:
        super().__init__()
        self.down = conv_bn_relu(fine_channels, channels, kernel=1)
        self.encoder = conv_bn_relu(channels, channels)
        self.guide = conv_bn_relu(channels, channels) if gii else None
        self.merge = conv_bn_relu(2 * channels, channels)

    @property
    def gii(self) -> bool:
        return self.guide is not None

    def forward(self, decoded: Tensor, fine_teacher: Tensor, teacher: Tensor) -> Tensor:
        # Bilinear x0.5 (align_corners False) as the official nn.Upsample: a 2x2 mean.
        fine = F.interpolate(fine_teacher, scale_factor=0.5, mode="bilinear", align_corners=False)
        injected = self.encoder(teacher + self.down(fine))
        if self.guide is not None:
            injected = self.guide(guided_injection(decoded, injected, teacher))
        return self.merge(torch.cat([decoded, injected], dim=1))
