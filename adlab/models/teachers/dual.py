"""PDD's two frozen teachers: a CNN (local structure) and VMamba (global context)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from adlab.models.features import Features


class TeacherFeatures(NamedTuple):
    cnn: list[Tensor]  # WRN50 layer1..4: 256@64, 512@32, 1024@16, 2048@8 at 256 px
    vmamba: list[Tensor] | None  # VMamba stage outputs: 192@32, 384@16, 768@8, 768@8, or None


class DualTeacher(nn.Module):
    """Run a CNN encoder and (optionally) a VMamba encoder on the same images.

    vmamba=None gives the single-teacher ablation. `.channels`/`.strides` are the CNN's (the
    distillation targets' widths), `.vmamba_channels` is None or VMamba's stage widths.
    """

    def __init__(self, cnn: nn.Module, vmamba: nn.Module | None = None) -> None:
        super().__init__()
        for name, enc in (("cnn", cnn), ("vmamba", vmamba)):
            if enc is not None and not hasattr(enc, "features"):
                raise TypeError(
                    f"teacher.{name} must be an encoder with .features (e.g. TimmEncoder or "
                    f"VMambaEncoder), got {type(enc).__name__}"
                )
        if len(cnn.channels) != 4:
            raise ValueError(
                f"PDD's CNN teacher needs 4 taps, got channels {list(cnn.channels)}; set "
                "teacher.cnn.layers=[1,2,3,4]"
            )
        self.cnn = cnn
        self.vmamba = vmamba
        self.channels: list[int] = list(cnn.channels)
        self.strides: list[int] = list(cnn.strides)
        self.vmamba_channels: list[int] | None = None if vmamba is None else list(vmamba.channels)
        self.features = Features(
            cnn.features.taps,
            cnn.features.base_width,
            aux={} if vmamba is None else {"vmamba": vmamba.features},
            source="the dual teacher (CNN + VMamba)" if vmamba else "the single CNN teacher",
        )
        if vmamba is not None:
            ratios = [v / c for v, c in zip(vmamba.strides, cnn.strides)]
            if any(r < 1 for r in ratios):
                raise ValueError(
                    f"VMamba strides {list(vmamba.strides)} must not be finer than the CNN's "
                    f"{list(cnn.strides)} (its levels are upsampled onto the CNN levels)"
                )

    def forward(self, images: Tensor) -> TeacherFeatures:
        cnn = list(self.cnn(images))
        vmamba = None if self.vmamba is None else list(self.vmamba(images))
        return TeacherFeatures(cnn, vmamba)
