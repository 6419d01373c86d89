"""No fusion: the teacher's deepest tap goes to the student as it is (D24FAD feeds WRN50's layer4
straight into the reverse decoder, without RD4AD's OCBE)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adlab.models.features import CompositionError, Features


class LastTap(nn.Module):
    """Pass the last teacher tap through; the taps before it are the distillation targets."""

    @classmethod
    def from_features(cls, features: Features) -> LastTap:
        """The last tap must be the code a reverse decoder expects after three target taps:
        twice the channels of the tap before it at half its resolution (a ResNet's layer4)."""
        taps = features.taps
        if (
            len(taps) < 4  # three distillation targets and the code
            or taps[-1].channels != 2 * taps[-2].channels
            or (taps[-1].stride != 2 * taps[-2].stride)
        ):
            raise CompositionError(
                "fusion=none passes the teacher's last tap to the student, which needs it to be "
                "one more ResNet stage than the targets (2x channels, half resolution): set "
                f"teacher.layers=[1,2,3,4]; {features.source or 'the teacher'} gives channels "
                f"{features.channels}, strides {features.strides}"
            )
        return cls()

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return feats[-1]
