"""AUPRO / PRO curve against a plain float64 reference: every threshold, a loop, a flood fill."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from adlab.metrics import aupro, label_regions, pro_curve


def flood_fill_8(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected regions of one (H, W) mask as boolean arrays, by breadth-first search."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            region = np.zeros_like(mask, dtype=bool)
            queue = [(i, j)]
            seen[i, j] = True
            while queue:
                y, x = queue.pop()
                region[y, x] = True
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        v, u = y + dy, x + dx
                        if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                            seen[v, u] = True
                            queue.append((v, u))
            regions.append(region)
    return regions


def reference_aupro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """The published definition, written plainly in float64."""
    maps = maps.astype(np.float64)
    region_scores = [maps[i][r] for i in range(len(maps)) for r in flood_fill_8(masks[i])]
    normal = maps[~masks]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:  # every distinct threshold, descending
        fpr.append(np.count_nonzero(normal >= t) / normal.size)
        pro.append(np.mean([np.count_nonzero(s >= t) / s.size for s in region_scores]))
    total = 0.0
    for k in range(1, len(fpr)):
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        if x0 >= limit:
            break
        if x1 > limit:  # linear interpolation at the limit
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        total += (x1 - x0) * (y0 + y1) / 2
    return total / limit


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small maps/masks with the hard cases: ties, one-pixel regions, borders, diagonal contact."""
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(1, 5)), int(rng.integers(4, 17)), int(rng.integers(4, 17))
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i > 0 and rng.random() < 0.3:
            continue  # an anomaly-free image
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(0, 4)
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            if kind == 0:  # one pixel
                masks[i, y, x] = True
            elif kind == 1:  # rectangle, may touch a border
                masks[i, y : y + int(rng.integers(1, 6)), x : x + int(rng.integers(1, 6))] = True
            elif kind == 2:  # diagonal staircase: pixels touching only at corners
                for k in range(int(rng.integers(2, 5))):
                    if y + k < h and x + k < w:
                        masks[i, y + k, x + k] = True
            else:  # two blocks touching diagonally at one corner
                masks[i, y : y + 2, x : x + 2] = True
                masks[i, y + 2 : y + 4, x + 2 : x + 4] = True
    style = rng.integers(0, 4)
    maps = rng.random((n, h, w)).astype(np.float32)
    if style == 0:  # quantised: many ties, including between normal and anomalous pixels
        maps = (np.round(maps * 4) / 4).astype(np.float32)
    elif style == 1:  # informative continuous maps
        maps = (maps + 0.7 * masks).astype(np.float32)
    elif style == 2:  # informative and quantised
        maps = (np.round((maps + masks) * 3) / 3).astype(np.float32)
    else:  # constant per image
        maps = np.broadcast_to(rng.integers(0, 3, (n, 1, 1)), maps.shape).astype(np.float32)
    if not masks.any():
        masks[0, 0, 0] = True
    if masks.all():
        masks[0, 0, 0] = False
    return maps, masks


@pytest.mark.parametrize("seed", range(80))
def test_aupro_matches_reference(seed: int) -> None:
    maps, masks = random_case(seed)
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, limit) == pytest.approx(
            reference_aupro(maps, masks, limit), abs=1e-6
        )


def test_aupro_torch_input_equals_numpy() -> None:
    torch = pytest.importorskip("torch")
    maps, masks = random_case(3)
    assert aupro(torch.from_numpy(maps), torch.from_numpy(masks)) == aupro(maps, masks)


def test_constant_maps_give_the_diagonal() -> None:
    maps = np.full((2, 6, 6), 0.5, dtype=np.float32)
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 1:3, 1:3] = True
    # one threshold: (0,0) -> (1,1); at FPR 0.3 the PRO is 0.3, area 0.045, / 0.3 = 0.15
    assert aupro(maps, masks) == pytest.approx(0.15, abs=1e-12)
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0.0, 0.3])
    np.testing.assert_allclose(pro, [0.0, 0.3])


def test_perfect_and_inverted_maps() -> None:
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, 2:5, 2:5] = True
    masks[2, 0, 7] = True
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0, abs=1e-12)
    assert aupro((~masks).astype(np.float32), masks) == pytest.approx(0.0, abs=1e-12)


def test_pro_curve_is_monotone_and_ends_at_limit() -> None:
    maps, masks = random_case(7)
    for limit in (0.3, 0.1):
        fpr, pro = pro_curve(maps, masks, fpr_limit=limit)
        assert fpr.dtype == np.float64 and pro.dtype == np.float64
        assert (fpr[0], pro[0]) == (0.0, 0.0)
        assert fpr[-1] == pytest.approx(limit)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-15)
        assert np.trapezoid(pro, fpr) / limit == pytest.approx(aupro(maps, masks, limit))


def test_regions_weigh_equally_whatever_their_size() -> None:
    # a 1-pixel region fully found and a 99-pixel region not found at all: PRO 0.5, not 0.01
    masks = np.zeros((1, 20, 20), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 10:19, 9:20] = True
    maps = np.zeros((1, 20, 20), dtype=np.float32)
    maps[0, 0, 0] = 1.0
    fpr, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0


def test_label_regions_is_8_connected_per_image() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((3, 12, 12)) < 0.35
    labels, n = label_regions(masks)
    regions = [(i, r) for i, m in enumerate(masks) for r in flood_fill_8(m)]
    assert n == len(regions)
    for i, region in regions:  # every reference region is exactly one label, in its image only
        ids = np.unique(labels[i][region])
        assert ids.size == 1 and ids[0] > 0
        expected = np.zeros_like(masks)
        expected[i] = region
        assert np.array_equal(labels == ids[0], expected)


def test_degenerate_sets_give_nan_and_a_warning() -> None:
    maps = np.random.default_rng(0).random((2, 5, 5)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="aupro"):
        assert np.isnan(aupro(maps, np.zeros((2, 5, 5), dtype=bool)))
    with pytest.warns(RuntimeWarning, match="aupro"):
        assert np.isnan(aupro(maps, np.ones((2, 5, 5), dtype=bool)))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fpr, pro = pro_curve(maps, np.zeros((2, 5, 5), dtype=bool))
    assert fpr.size == 0 and pro.size == 0


@pytest.mark.parametrize(
    ("maps_shape", "masks_shape", "limit", "match"),
    [
        ((2, 5, 5), (2, 5, 6), 0.3, "maps and masks"),
        ((2, 5, 5), (3, 5, 5), 0.3, "maps and masks"),
        ((2, 5, 5), (2, 5, 5), 0.0, "fpr_limit"),
        ((2, 5, 5), (2, 5, 5), 1.5, "fpr_limit"),
    ],
)
def test_bad_input_raises(maps_shape, masks_shape, limit, match) -> None:
    maps = np.zeros(maps_shape, dtype=np.float32)
    masks = np.zeros(masks_shape, dtype=bool)
    masks[..., 0, 0] = True
    with pytest.raises(ValueError, match=match):
        aupro(maps, masks, limit)


def test_nan_in_maps_raises_naming_maps() -> None:
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 1, 1] = np.nan
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="maps contains NaN"):
        aupro(maps, masks)
