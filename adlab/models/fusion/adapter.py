"""PDD's channel adapter: lifts a VMamba level to the width of the CNN level it is fused with."""

from __future__ import annotations

from torch import Tensor, nn


class ChannelAdapter(nn.Module):
    """conv1x1-BN-GELU -> dilated conv3x3-BN-GELU -> conv1x1-BN, plus a 1x1 residual projection.

    The dilated 3x3 (dilation 2) widens the receptive field at no extra cost; the mid width is
    max(in, out) // reduction as in the official EfficientChannelAdapter (192->256 uses 64).
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or reduction < 1:
            raise ValueError(
                f"ChannelAdapter needs positive widths and reduction, got in={in_channels}, "
                f"out={out_channels}, reduction={reduction} (fusion.reduction)"
            )
        mid = max(in_channels // reduction, out_channels // reduction, 1)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=2, dilation=2, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()
        self.residual = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.residual(x))
