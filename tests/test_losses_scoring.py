"""Distillation losses and anomaly scoring against independent numpy/scipy computations."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from adlab.models.losses import flat_cos_loss, get_loss, pixel_cos_loss
from adlab.scoring import anomaly_maps, gaussian_blur, image_scores


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 4, 8, 8), (2, 6, 4, 4), (2, 8, 2, 2)]
    t = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    p = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    return t, p


def test_flat_cos_matches_hand_computation():
    t, p = _pairs()
    expected = 0.0
    for a, b in zip(t, p):
        per_sample = [1 - _cos(a[i].numpy().ravel(), b[i].numpy().ravel()) for i in range(2)]
        expected += float(np.mean(per_sample))
    assert flat_cos_loss(t, p).item() == pytest.approx(expected, abs=1e-12)


def test_pixel_cos_matches_hand_computation():
    t, p = _pairs(1)
    expected = 0.0
    for a, b in zip(t, p):
        a, b = a.numpy(), b.numpy()
        vals = [
            1 - _cos(a[n, :, y, x], b[n, :, y, x])
            for n in range(a.shape[0])
            for y in range(a.shape[2])
            for x in range(a.shape[3])
        ]
        expected += float(np.mean(vals))
    assert pixel_cos_loss(t, p).item() == pytest.approx(expected, abs=1e-12)


def test_losses_are_zero_for_identical_features_and_reject_bad_input():
    t, _ = _pairs()
    assert flat_cos_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    scaled = [2.5 * x for x in t]  # cosine ignores scale
    assert pixel_cos_loss(t, scaled).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="scale 1"):
        flat_cos_loss(t, [t[0], t[0], t[2]])
    with pytest.raises(ValueError, match="method.loss"):
        get_loss("l2")


@pytest.mark.parametrize("sigma,size", [(4.0, (40, 37)), (1.5, (9, 12)), (4.0, (10, 10))])
def test_gaussian_blur_matches_scipy(sigma, size):
    maps = torch.rand(3, *size, dtype=torch.float64)
    ours = gaussian_blur(maps, sigma).numpy()
    ref = np.stack(
        [gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0) for m in maps.numpy()]
    )
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def _upsample_align_corners(m, out):
    """Bilinear resize with align_corners=True, written with np.interp per axis."""
    h, w = m.shape
    ys, xs = np.linspace(0, h - 1, out[0]), np.linspace(0, w - 1, out[1])
    rows = np.stack([np.interp(xs, np.arange(w), r) for r in m])
    return np.stack([np.interp(ys, np.arange(h), c) for c in rows.T]).T


@pytest.mark.parametrize("combine", ["sum", "product"])
def test_anomaly_maps_match_hand_computation(combine):
    t, p = _pairs(2)
    maps = anomaly_maps(list(zip(t, p)), (16, 16), combine=combine, sigma=2.0)
    assert maps.shape == (2, 16, 16)
    for n in range(2):
        per_scale = []
        for a, b in zip(t, p):
            a, b = a[n].numpy(), b[n].numpy()
            cos = np.einsum("chw,chw->hw", a, b) / (
                np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
            )
            per_scale.append(_upsample_align_corners(1 - cos, (16, 16)))
        total = np.sum(per_scale, 0) if combine == "sum" else np.prod(per_scale, 0)
        expected = gaussian_filter(total, sigma=2.0, mode="reflect")
        np.testing.assert_allclose(maps[n].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(image_scores(maps).numpy(), maps.flatten(1).max(1).values.numpy())


def test_unknown_combine_is_a_config_error():
    t, p = _pairs()
    with pytest.raises(ValueError, match="scoring.combine"):
        anomaly_maps(list(zip(t, p)), (8, 8), combine="max")
