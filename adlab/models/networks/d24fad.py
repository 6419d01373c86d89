"""D24FAD's network: frozen teacher -> (layer4 as is) -> reverse decoder on the query and on each
support; the map compares the query's decoder output with its learn-to-weight mix of the
supports' decoder outputs (the teacher is not compared at test time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from adlab.models.fewshot.learn_to_weight import LearnToWeight, MeanOfSupports
from adlab.models.networks.base import AnomalyNetwork


class D24FADNetwork(AnomalyNetwork):
    """teacher: an encoder whose last tap is the decoder's input (WRN50 layer1..4); fusion,
    student: factories completed with its taps (fusion=none, student=rd_decoder).

    The support decoder outputs (eval mode, one (k, C, h, w) tensor per scale) are reference
    buffers `support_<scale>`, so a checkpoint written after testing scores new images alone.
    """

    references_needed = True
    reference_names = ("support_0", "support_1", "support_2")  # one per decoder scale

    def __init__(
        self,
        teacher: nn.Module,
        fusion: Callable[..., nn.Module],
        student: Callable[..., nn.Module],
        learn_to_weight: bool = True,
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scoring)
        self.assemble(teacher, fusion, student)
        self.input_divisor = teacher.features.strides[-1]
        channels = teacher.features.channels[:3]
        self.weigh = LearnToWeight(channels) if learn_to_weight else MeanOfSupports()
        self.n_scales = len(channels)

    def distill(self, taps: list[Tensor]) -> list[Tensor]:
        """The decoder's outputs (finest first) from the teacher's taps of the same images."""
        return self.student(self.fusion(taps))

    def decode(self, images: Tensor) -> list[Tensor]:
        with torch.no_grad():
            taps = self.teacher(images)
        return self.distill(taps)

    @torch.no_grad()
    def set_references(self, images: Tensor) -> None:
        """Keep the decoder outputs of the k support images (in the current train/eval mode)."""
        for i, out in enumerate(self.decode(images)):
            self.register_reference(f"support_{i}", out.detach().clone())

    def supports(self) -> list[Tensor]:
        refs = [getattr(self, f"support_{i}") for i in range(self.n_scales)]
        if any(r is None or r.numel() == 0 for r in refs):
            raise RuntimeError(
                "D24FAD scores against a support set, and none is stored: call "
                "set_references(support images) first (adlab.run/evaluate do with sampler=kshot)"
            )
        return refs

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        query = self.decode(images)
        return list(zip(self.weigh(query, self.supports()), query))
