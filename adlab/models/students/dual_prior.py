"""PDD's dual students: one set of de-bottleneck decoder stages run twice, with and without the
manifold priors, so the two students differ only by the priors (the official PDDDecoder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from adlab.models.blocks import EXPANSION, init_resnet_weights, make_stage
from adlab.models.features import Features, merged

STUDENTS = ("dual", "prior", "plain")


class StudentOutputs(NamedTuple):
    """Per-scale reconstructions, finest first; None for a student that is not built."""

    prior: list[Tensor] | None  # S_p: priors added after stages 1 and 2
    plain: list[Tensor] | None  # S_n: the same stages without priors


class DualPriorStudent(nn.Module):
    """Decode the unified manifold f_t (2*c3 @ s/2) into [c1@4s, c2@2s, c3@s], twice.

    out_channels: the targets' widths, finest first (WRN50: 256, 512, 1024). depths: blocks per
    stage (official 2, 2, 2); base_width 128 = the official width_per_group (WRN-style). students:
    "dual" (full PDD), "prior" (only S_p) or "plain" (only S_n, the ablation rows without MPA).
    share_first_stage: run stage 1 once for both students (their inputs are identical); the
    official code runs it twice, which updates BatchNorm running statistics twice per step.
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        in_channels: int | None = None,
        depths: Sequence[int] = (2, 2, 2),
        block: str = "bottleneck",
        base_width: int = 128,
        students: str = "dual",
        share_first_stage: bool = False,
    ) -> None:
        super().__init__()
        if students not in STUDENTS:
            raise ValueError(f"student.students must be one of {STUDENTS}, got {students!r}")
        if len(out_channels) != 3 or len(depths) != 3:
            raise ValueError(
                f"DualPriorStudent decodes 3 scales: got out_channels {list(out_channels)} and "
                f"depths {list(depths)} (student.depths needs 3 entries)"
            )
        if block not in EXPANSION:
            raise ValueError(f"student.block must be one of {sorted(EXPANSION)}, got {block!r}")
        c1, c2, c3 = (int(c) for c in out_channels)
        exp = EXPANSION[block]
        for c in (c1, c2, c3):
            if c % exp:
                raise ValueError(f"{block} stages need widths divisible by {exp}, got {c}")
        self.students = students
        self.share_first_stage = share_first_stage
        cin = int(in_channels) if in_channels is not None else 2 * c3
        stages = []
        for cout, depth in zip((c3, c2, c1), depths):
            stages.append(make_stage(block, cin, cout // exp, int(depth), 2, True, base_width))
            cin = cout
        self.stages = nn.ModuleList(stages)
        init_resnet_weights(self)

    @classmethod
    def from_features(cls, features: Features, **given) -> DualPriorStudent:
        """Decode into the widths of the teacher's three finest taps."""
        taps = features.first(3, "PDD's dual students (student=dual_prior)")
        return cls(**merged({"out_channels": taps.channels[:3]}, given))

    @property
    def needs_priors(self) -> bool:
        return self.students in ("dual", "prior")

    def _decode(self, x: Tensor, priors: Sequence[Tensor] | None, first: Tensor | None) -> list:
        outs = []
        for i, stage in enumerate(self.stages):
            x = first if (i == 0 and first is not None) else stage(x)
            outs.append(x)
            if priors is not None and i < len(priors):
                x = x + priors[i]  # the prior enters the next stage, the output stays as decoded
        return outs[::-1]

    def forward(self, manifold: Tensor, priors: Sequence[Tensor] | None = None) -> StudentOutputs:
        if self.needs_priors and (priors is None or len(priors) != len(self.stages) - 1):
            raise ValueError(
                f"students={self.students!r} needs {len(self.stages) - 1} priors from the MPA "
                "(fusion.mpa=true)"
            )
        first = self.stages[0](manifold) if self.share_first_stage else None
        prior = self._decode(manifold, priors, first) if self.needs_priors else None
        plain = self._decode(manifold, None, first) if self.students != "prior" else None
        return StudentOutputs(prior, plain)
