"""D24FAD's learn-to-weight: per scale, a query's weighted mix of its k support feature maps.

Per scale a 1x1 convolution (with bias) projects each support map to a key K; the query map Q is
used as it is; logits = <K, Q> over the whole flattened map times C^-0.5 (C = channels, as the
official code scales, not by the flattened length), softmax over the k supports, and the output
is sum_k w_k V_k with V the unprojected support maps. `MeanOfSupports` is the ablation without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _expand(support: Tensor, batch: int) -> Tensor:
    """(B, k, C, h, w) as given, or one shared (k, C, h, w) set viewed per query."""
    return support if support.dim() == 5 else support.unsqueeze(0).expand(batch, -1, -1, -1, -1)


class LearnToWeight(nn.Module):
    """Attention weights over the supports from a projected-key / raw-query dot product.

    Supports are (B, k, C, h, w), one set per query (training episodes), or (k, C, h, w), one set
    shared by every query (testing); the keys of a shared set are projected once.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.proj = nn.ModuleList(nn.Conv2d(c, c, kernel_size=1) for c in self.channels)

    def weights(self, index: int, query: Tensor, support: Tensor) -> Tensor:
        """(B, k) softmax weights of scale `index`."""
        proj, scale = self.proj[index], self.channels[index] ** -0.5
        if support.dim() == 5:
            b, k = support.shape[:2]
            keys = proj(support.flatten(0, 1)).reshape(b, k, -1)
            logits = torch.bmm(keys, query.reshape(b, -1, 1)).squeeze(2)
        else:
            keys = proj(support).flatten(1)  # (k, C*h*w), projected once for all queries
            logits = query.flatten(1) @ keys.t()
        return torch.softmax(logits * scale, dim=1)

    def forward(self, query: Sequence[Tensor], supports: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for i, (q, s) in enumerate(zip(query, supports)):
            w = self.weights(i, q, s)
            values = _expand(s, q.shape[0])
            out.append(torch.einsum("bk,bkchw->bchw", w, values))
        return out


class MeanOfSupports(nn.Module):
    """The ablation without learn-to-weight: every support counts 1/k."""

    def forward(self, query: Sequence[Tensor], supports: Sequence[Tensor]) -> list[Tensor]:
        return [_expand(s, q.shape[0]).mean(1) for q, s in zip(query, supports)]
