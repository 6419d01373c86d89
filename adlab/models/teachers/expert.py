"""URD's two encoders: a frozen expert and a teacher of the same taps that is trained against it."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from adlab.models.features import CompositionError


class ExpertTeacher(nn.Module):
    """The expert (kept frozen by the network) and the teacher (fine-tuned).

    teacher=None makes the teacher a copy of the expert: the official code loads the same
    ImageNet weights into both, so one download serves both. Both must describe the same taps
    (`.features` channels and strides), since the teacher's losses compare them pixel by pixel.
    """

    def __init__(self, expert: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        teacher = copy.deepcopy(expert) if teacher is None else teacher
        for name, enc in (("expert", expert), ("teacher", teacher)):
            if not hasattr(enc, "features"):
                raise CompositionError(
                    f"teacher.{name} must be an encoder with .features (e.g. TimmEncoder), got "
                    f"{type(enc).__name__}"
                )
        e, t = expert.features, teacher.features
        if e.channels != t.channels or e.strides != t.strides:
            raise CompositionError(
                f"teacher.expert and teacher.teacher must have the same taps: expert channels "
                f"{e.channels} strides {e.strides}, teacher channels {t.channels} strides "
                f"{t.strides}; use the same architecture and layers for both"
            )
        self.expert = expert
        self.teacher = teacher
        self.features = t

    @classmethod
    def of(cls, teacher: nn.Module) -> ExpertTeacher:
        """A pair as given, or from a single encoder (the expert; the teacher a copy of it)."""
        return teacher if isinstance(teacher, ExpertTeacher) else cls(teacher)

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return self.expert(images), self.teacher(images)
