"""The fast scoring and evaluator paths give the same bits as the plain formulations they
replace: the single-channel convolution blur, F.cosine_similarity, and labelling every mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adlab.metrics.evaluator import _region_ids
from adlab.metrics.pro import label_regions
from adlab.scoring import _reflect_index, gaussian_blur, gaussian_kernel1d, one_minus_cos


def plain_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """The previous formulation: gather-padded maps, one single-channel convolution per axis."""
    kernel = gaussian_kernel1d(sigma).to(dtype=maps.dtype)
    r = kernel.numel() // 2
    _, h, w = maps.shape
    x = maps[:, :, _reflect_index(w, r, maps.device)].unsqueeze(1)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x[:, :, _reflect_index(h, r, maps.device), :]
    return F.conv2d(x, kernel.view(1, 1, -1, 1)).squeeze(1)


@pytest.mark.parametrize(
    ("batch", "height", "width", "sigma"),
    [(8, 256, 256, 4.0), (2, 64, 64, 4.0), (3, 40, 24, 2.0), (2, 8, 12, 4.0)],  # r >= n: 8 < 16
)
def test_blur_gives_the_bits_of_single_channel_convolutions(batch, height, width, sigma):
    maps = torch.rand(batch, height, width, generator=torch.Generator().manual_seed(0)) * 3
    got = gaussian_blur(maps, sigma)
    assert got.shape == maps.shape and got.is_contiguous()
    assert torch.equal(got, plain_blur(maps, sigma))
    # each map alone gives the same bits (the single-channel convolution of a batch of one takes
    # another oneDNN kernel below 256 px and differs in the last bit)
    assert torch.equal(torch.cat([gaussian_blur(m[None], sigma) for m in maps]), got)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_minus_cos_gives_the_bits_of_cosine_similarity(channels_last):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 64, 8, 8, generator=g), torch.randn(4, 64, 8, 8, generator=g)
    a[0, :, 0, 0] = 0  # a zero vector: the eps clamp
    b[2] *= 1e20
    a[3] *= 1e-30
    if channels_last:
        a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    want = 1 - F.cosine_similarity(a, b, dim=1)
    with torch.no_grad():
        assert torch.equal(one_minus_cos(a, b), want)
    a.requires_grad_(True)
    got = one_minus_cos(a, b)  # with a gradient: F.cosine_similarity itself
    got.sum().backward()
    assert torch.equal(got.detach(), want) and a.grad is not None


def test_region_ids_skip_normal_images_and_match_labelling_the_whole_stack():
    masks = np.zeros((5, 16, 16), dtype=bool)
    masks[1, 2:5, 2:5] = masks[1, 10:12, 10:14] = True  # two regions
    masks[3, 0:16, 7] = True  # one region touching both borders
    masks[4, 15, 15] = True
    regions, n = label_regions(masks)
    ids, count = _region_ids(masks)
    assert count == n == 4 and ids.dtype == np.int32
    assert np.array_equal(ids, regions[masks])
    empty, none = _region_ids(np.zeros((2, 4, 4), dtype=bool))
    assert none == 0 and empty.size == 0 and empty.dtype == np.int32
