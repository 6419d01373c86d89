"""VMamba's four-direction cross scan and its merge, vectorised.

Directions, as in VMamba v0 (k = 0..3): row-major (h, w), column-major (w, h), and both reversed.
`cross_merge` is the adjoint of `cross_scan`: it maps every direction back to row-major order and
sums them, which is what SS2D does with the four scanned outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cross_scan(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, reversed row, reversed column."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    rows_cols = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], dim=1)  # (B, 2, C, L)
    return torch.cat([rows_cols, rows_cols.flip(-1)], dim=1)


def cross_merge(y: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W) in row-major order: the sum of the four directions."""
    if y.dim() != 4 or y.shape[1] != 4 or y.shape[-1] != height * width:
        raise ValueError(
            f"cross_merge expects (B, 4, C, {height}*{width}), got shape {tuple(y.shape)}"
        )
    b, _, c, length = y.shape
    pair = y[:, :2] + y[:, 2:].flip(-1)  # undo the reversal: (B, 2, C, L)
    cols = pair[:, 1].reshape(b, c, width, height).transpose(2, 3).reshape(b, c, length)
    return pair[:, 0] + cols
