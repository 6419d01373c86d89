"""Feature discrepancies -> anomaly maps -> image scores, shared by every method.

Per scale the map is 1 - cosine similarity over channels between target and prediction, upsampled
bilinearly (align_corners=True, as RD4AD) to the image size, combined over scales (sum or product),
smoothed with a Gaussian (sigma 4, scipy's default truncation and 'reflect' border) and reduced to
an image score by its maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter (radius truncate*sigma+0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _reflect_index(n: int, radius: int, device: torch.device) -> Tensor:
    # scipy 'reflect' (d c b a | a b c d | d c b a), valid for any radius via the period 2n.
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _blur_rows(rows: Tensor, kernel: Tensor) -> Tensor:
    """Convolve (B, N, L) rows along N (reflect-padded): the L signals at each position are the
    channels of one depthwise channels-last convolution, which oneDNN vectorises across them and
    which sums the taps in the same order as a single-channel convolution (the same bits, ~15x
    faster on CPU for batches of maps). Returns (B, N, L)."""
    n, channels = int(rows.shape[1]), int(rows.shape[2])  # constants when traced (export)
    padded = rows.index_select(1, _reflect_index(n, kernel.numel() // 2, rows.device))
    weight = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    weight = weight.contiguous(memory_format=torch.channels_last)
    out = F.conv2d(padded.permute(0, 2, 1).unsqueeze(2), weight, groups=channels)
    return out.squeeze(2).permute(0, 2, 1)  # the NHWC output's memory is (B, N, L)


def gaussian_blur(maps: Tensor, sigma: float = 4.0) -> Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps matching scipy's gaussian_filter."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(device=maps.device, dtype=maps.dtype)
    x = _blur_rows(maps.transpose(1, 2).contiguous(), kernel)  # along W: (B, W, H)
    return _blur_rows(x.transpose(1, 2).contiguous(), kernel)  # along H: (B, H, W)


def one_minus_cos(target: Tensor, pred: Tensor, eps: float = 1e-8) -> Tensor:
    """1 - cosine similarity over dim 1: the operations of F.cosine_similarity (so the same
    bits), writing the product into the first quotient where no gradient is recorded."""
    if torch.is_grad_enabled() and (target.requires_grad or pred.requires_grad):
        return 1 - F.cosine_similarity(target, pred, dim=1, eps=eps)
    norm_t = torch.linalg.vector_norm(target, 2, dim=1, keepdim=True).clamp_min_(eps)
    norm_p = torch.linalg.vector_norm(pred, 2, dim=1, keepdim=True).clamp_min_(eps)
    product = target / norm_t
    product.mul_(pred / norm_p)
    return 1 - product.sum(1)


def scale_maps(pairs: Sequence[tuple[Tensor, Tensor]], out_size: tuple[int, int]) -> list[Tensor]:
    """One (B, H, W) map of 1 - cos over channels per (target, prediction) pair, at out_size."""
    maps = []
    for target, pred in pairs:
        m = one_minus_cos(target.float(), pred.float())
        m = F.interpolate(m.unsqueeze(1), size=out_size, mode="bilinear", align_corners=True)
        maps.append(m.squeeze(1))
    return maps


def anomaly_maps(
    pairs: Sequence[tuple[Tensor, Tensor]],
    out_size: tuple[int, int],
    combine: str = "sum",
    sigma: float = 4.0,
) -> Tensor:
    """Anomaly maps (B, H, W) from feature pairs: per-scale maps combined, then smoothed."""
    maps = scale_maps(pairs, tuple(out_size))
    if combine == "sum":
        total = torch.stack(maps).sum(0)
    elif combine == "product":
        total = torch.stack(maps).prod(0)
    else:
        raise ValueError(f"scoring.combine must be 'sum' or 'product', got {combine!r}")
    return gaussian_blur(total, sigma)


def image_scores(maps: Tensor) -> Tensor:
    """Image-level anomaly score: the maximum of each map."""
    return maps.flatten(1).amax(1)
