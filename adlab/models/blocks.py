"""ResNet-style residual blocks shared by the OCBE bottleneck and the reverse decoders.

Encoder blocks (stride-2 convolution) build the one-class embedding; decoder blocks mirror them
with a 2x2 transposed convolution wherever the encoder halved the resolution.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def deconv2x2(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)


EXPANSION = {"basic": 1, "bottleneck": 4}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with identity (or projected) shortcut; `up` mirrors it for decoders."""

    def __init__(self, cin: int, planes: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        first = deconv2x2(cin, planes) if up and stride == 2 else conv3x3(cin, planes, stride)
        self.conv1, self.bn1 = first, nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, planes, stride, up)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (or 2x2 transposed when decoding with stride 2), 1x1 expand by 4."""

    def __init__(
        self, cin: int, planes: int, stride: int = 1, up: bool = False, base_width: int = 64
    ) -> None:
        super().__init__()
        width = planes * base_width // 64
        cout = planes * 4
        self.conv1, self.bn1 = conv1x1(cin, width), nn.BatchNorm2d(width)
        mid = deconv2x2(width, width) if up and stride == 2 else conv3x3(width, width, stride)
        self.conv2, self.bn2 = mid, nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride, up)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _shortcut(cin: int, cout: int, stride: int, up: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if up and stride == 2:
        return nn.Sequential(deconv2x2(cin, cout), nn.BatchNorm2d(cout))
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


def make_stage(
    block: str, cin: int, planes: int, depth: int, stride: int, up: bool, base_width: int = 64
) -> nn.Sequential:
    """`depth` blocks, the first one changing resolution (stride) and width."""
    cout = planes * EXPANSION[block]
    layers = []
    for i in range(depth):
        args = (cin if i == 0 else cout, planes, stride if i == 0 else 1, up)
        if block == "bottleneck":
            layers.append(Bottleneck(*args, base_width=base_width))
        elif block == "basic":
            layers.append(BasicBlock(*args))
        else:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions and unit BatchNorm, as the official RD4AD code initialises."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """A same-size convolution (no bias), BatchNorm and ReLU: the fusion layers' unit."""
    conv = conv3x3(cin, cout) if kernel == 3 else conv1x1(cin, cout)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def init_xavier_convs(module: nn.Module) -> None:
    """Xavier-normal weights on every Conv2d and Linear, as URD's official student is initialised.

    ConvTranspose2d is not a Conv2d subclass, so transposed convolutions keep PyTorch's default
    initialisation there too."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight)
