"""One description of a teacher's feature taps, read by every fusion and student factory.

Teachers of different kinds (timm CNNs, VMamba, the dual teacher) describe their outputs the same
way, so a fusion or student block derives its shapes from that description alone and a block that
cannot take a teacher says so at build time (CompositionError) instead of failing with a
TypeError or a shape mismatch in the first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class CompositionError(ValueError):
    """Config groups that cannot be combined; the entry point adds the group choices."""


@dataclass(frozen=True)
class Tap:
    """One feature map a teacher returns: its width and stride, and for ResNet stages the block
    type and the number of blocks (the OCBE and the mirrored decoder copy them)."""

    channels: int
    stride: int
    depth: int = 0
    block: str | None = None  # "basic" | "bottleneck" for ResNet stages, None otherwise


@dataclass(frozen=True)
class Features:
    """The taps of a teacher, finest first; `aux` holds a second teacher's taps by name."""

    taps: tuple[Tap, ...]
    base_width: int = 64  # ResNet width_per_group (128 for wide ResNets)
    aux: Mapping[str, Features] = field(default_factory=dict)
    source: str = ""  # the teacher's name, for messages

    @property
    def channels(self) -> list[int]:
        return [t.channels for t in self.taps]

    @property
    def strides(self) -> list[int]:
        return [t.stride for t in self.taps]

    @property
    def depths(self) -> list[int]:
        return [t.depth for t in self.taps]

    @property
    def block(self) -> str | None:
        return self.taps[0].block if self.taps else None

    def first(self, n: int, needed_by: str) -> Features:
        """The n finest taps; CompositionError when the teacher has fewer."""
        if len(self.taps) < n:
            raise CompositionError(
                f"{needed_by} needs {n} teacher taps, {self.source or 'the teacher'} gives "
                f"{len(self.taps)} (channels {self.channels})"
            )
        return Features(self.taps[:n], self.base_width, self.aux, self.source)

    def resnet(self, needed_by: str) -> Features:
        """These taps, checked to be ResNet stages (block type and depth known)."""
        if any(t.block is None for t in self.taps):
            raise CompositionError(
                f"{needed_by} mirrors ResNet stages, but {self.source or 'the teacher'}'s taps "
                "are not ResNet stages"
            )
        return self


def build(factory: Callable[..., Any], features: Features, group: str) -> Any:
    """Build a fusion or student block from its (Hydra `_partial_`) factory and the teacher's
    features. The block class derives its shapes in `from_features`; keywords set in the config
    (e.g. `fusion.layers=2`) win over derived ones."""
    cls = getattr(factory, "func", factory)
    given = dict(getattr(factory, "keywords", {}) or {})
    from_features = getattr(cls, "from_features", None)
    if from_features is None:
        raise CompositionError(
            f"{group}: {getattr(cls, '__name__', cls)} has no from_features(features, ...) "
            "classmethod, so it cannot be composed from a teacher description"
        )
    return from_features(features, **given)


def merged(derived: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Derived shapes overridden by what the config set explicitly."""
    return {**derived, **given}


def resnet_taps(
    channels: Sequence[int], strides: Sequence[int], depths: Sequence[int], block: str
) -> tuple[Tap, ...]:
    return tuple(Tap(int(c), int(s), int(d), block) for c, s, d in zip(channels, strides, depths))
