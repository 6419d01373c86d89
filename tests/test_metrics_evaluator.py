"""AnomalyEvaluator: streaming equals whole-set, resolutions, mask formats, files, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from adlab.metrics import AnomalyEvaluator, aupro, pixel_ap, pixel_auroc, pixel_f1_max


def make_set(n: int = 10, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Maps (n, size, size), scores, labels and masks (n, 1, size, size) with blob regions."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    labels = torch.zeros(n, dtype=torch.long)
    for i in range(1, n, 2):
        y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
        masks[i, 0, y : y + 4, x : x + 3] = True
        masks[i, 0, (y + 7) % size, (x + 9) % size] = True
        labels[i] = 1
    maps = torch.rand(n, size, size, generator=g) + 0.6 * masks[:, 0]
    scores = maps.flatten(1).amax(1)
    return maps, scores, labels, masks


def run(ev: AnomalyEvaluator, maps, scores, labels, masks, batch: int = 3) -> dict[str, float]:
    for a in range(0, len(scores), batch):
        m = None if masks is None else masks[a : a + batch]
        ev.update(maps[a : a + batch], scores[a : a + batch], labels[a : a + batch], m)
    return ev.compute()


def test_streaming_equals_whole_set_functions() -> None:
    maps, scores, labels, masks = make_set()
    res = run(AnomalyEvaluator(), maps, scores, labels, masks)
    g = masks[:, 0]
    assert set(res) == {
        "image_auroc",
        "image_ap",
        "image_f1_max",
        "pixel_auroc",
        "pixel_ap",
        "pixel_f1_max",
        "aupro",
    }
    assert res["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert res["pixel_auroc"] == pytest.approx(pixel_auroc(maps, g), abs=1e-12)
    assert res["pixel_ap"] == pytest.approx(pixel_ap(maps, g), abs=1e-12)
    assert res["pixel_f1_max"] == pytest.approx(pixel_f1_max(maps, g), abs=1e-12)
    assert res["aupro"] == pytest.approx(aupro(maps, g), abs=1e-12)
    assert 0.5 < res["aupro"] < 1.0


def test_regions_do_not_merge_across_batches_or_images() -> None:
    # the same region position in consecutive images must count as two regions
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = 1.0  # image 0's region found, image 1's not
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 0, 0] = True
    for batch in (1, 2):
        ev = AnomalyEvaluator()
        run(ev, maps, torch.tensor([1.0, 0.0]), torch.tensor([1, 0]), masks, batch=batch)
        fpr, pro = ev.pro_curve()
        assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0


def test_gt_resolution_resizes_maps_bilinearly() -> None:
    maps, scores, labels, masks = make_set(size=32)
    small = F.interpolate(maps[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    res = run(AnomalyEvaluator(eval_resolution="gt"), small, scores, labels, masks)
    up = F.interpolate(small[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert res["aupro"] == pytest.approx(aupro(up, masks[:, 0]), abs=1e-12)
    assert res["pixel_auroc"] == pytest.approx(pixel_auroc(up, masks[:, 0]), abs=1e-12)


def test_model_resolution_resizes_masks_nearest() -> None:
    maps, scores, labels, masks = make_set(size=32)
    small = maps[:, ::4, ::4].contiguous()
    res = run(AnomalyEvaluator(eval_resolution="model"), small, scores, labels, masks)
    down = F.interpolate(masks.float(), size=(8, 8), mode="nearest")[:, 0] > 0.5
    assert res["aupro"] == pytest.approx(aupro(small, down), abs=1e-12)


def test_masks_as_list_of_different_sizes() -> None:
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (16, 16), (24, 12)]
    masks = [rng.random(s) < 0.1 for s in sizes]
    masks[1] = masks[1][None]  # (1, H, W) is accepted too
    maps = torch.rand(3, 8, 8)
    ev = AnomalyEvaluator()
    ev.update(maps, torch.rand(3), torch.tensor([1, 0, 1]), masks)
    res = ev.compute()
    ups = [
        F.interpolate(maps[i][None, None], size=s, mode="bilinear", align_corners=False)
        for i, s in enumerate(sizes)
    ]
    flat_maps = torch.cat([u.flatten() for u in ups]).numpy().astype(np.float64)
    flat_masks = np.concatenate([np.asarray(m).ravel() for m in masks])
    assert res["pixel_auroc"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-9)


def test_image_level_only_datasets_and_pixel_switch() -> None:
    maps, scores, labels, masks = make_set()
    res = run(AnomalyEvaluator(), maps, scores, labels, None)
    assert set(res) == {"image_auroc", "image_ap", "image_f1_max"}
    ev = AnomalyEvaluator(pixel_metrics=False)
    assert set(run(ev, maps, scores, labels, masks)) == {"image_auroc", "image_ap", "image_f1_max"}
    with pytest.raises(RuntimeError, match="compute"):
        ev.pro_curve()


def test_reset_and_repeated_compute() -> None:
    maps, scores, labels, masks = make_set()
    ev = AnomalyEvaluator()
    first = run(ev, maps, scores, labels, masks)
    assert ev.compute() == first  # a second compute gives the same numbers
    ev.update(maps[:2], scores[:2], labels[:2], masks[:2])  # more data after a compute
    both = ev.compute()
    assert both["aupro"] == pytest.approx(
        aupro(torch.cat([maps, maps[:2]]), torch.cat([masks, masks[:2]])[:, 0]), abs=1e-12
    )
    ev.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        ev.compute()


def test_save_pro_curve_writes_csv_and_png(tmp_path) -> None:
    maps, scores, labels, masks = make_set()
    ev = AnomalyEvaluator()
    res = run(ev, maps, scores, labels, masks)
    csv_path, png_path = ev.save_pro_curve(tmp_path / "run")
    data = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    fpr, pro = ev.pro_curve()
    np.testing.assert_array_equal(data[:, 0], fpr)
    np.testing.assert_array_equal(data[:, 1], pro)
    assert np.trapezoid(data[:, 1], data[:, 0]) / 0.3 == pytest.approx(res["aupro"], abs=1e-12)
    with Image.open(png_path) as img:
        assert img.size[0] > 100 and img.size[1] > 100
        assert len(img.getcolors(maxcolors=1 << 16) or []) > 2  # axes and a curve were drawn
    ev.save_pro_curve(tmp_path / "thin", max_points=10)
    thin = np.loadtxt(tmp_path / "thin" / "pro_curve.csv", delimiter=",", skiprows=1)
    assert len(thin) <= 10 and thin[0, 0] == 0.0 and thin[-1, 0] == pytest.approx(0.3)


def test_degenerate_pixel_set_gives_nan_with_warning() -> None:
    maps, scores, labels, _ = make_set()
    ev = AnomalyEvaluator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(ev, maps, scores, labels, torch.zeros(10, 1, 16, 16))
    messages = " ".join(str(w.message) for w in caught)
    for name in ("aupro", "pixel_auroc", "pixel_ap", "pixel_f1_max"):
        assert np.isnan(res[name]) and f"{name}: no anomalous" in messages
    assert not np.isnan(res["image_auroc"]) and "image_auroc" not in messages


def test_bad_inputs_raise() -> None:
    maps, scores, labels, masks = make_set()
    with pytest.raises(ValueError, match="eval_resolution"):
        AnomalyEvaluator(eval_resolution="full")
    with pytest.raises(ValueError, match="fpr_limit"):
        AnomalyEvaluator(fpr_limit=0)
    ev = AnomalyEvaluator()
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps contains NaN"):
        ev.update(bad, scores, labels, masks)
    with pytest.raises(ValueError, match="maps must be"):
        ev.update(maps[:3], scores[:4], labels[:4], masks[:4])
    with pytest.raises(ValueError, match="masks holds 3"):
        ev.update(maps[:4], scores[:4], labels[:4], list(masks[:3, 0]))
    with pytest.raises(ValueError, match="labels must be 0"):
        ev.update(maps[:2], scores[:2], torch.tensor([0, 3]), masks[:2])
    ev.update(maps[:2], scores[:2], labels[:2], masks[:2])
    with pytest.raises(ValueError, match="masks was given for some batches"):
        ev.update(maps[2:4], scores[2:4], labels[2:4], None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the batches that were accepted still compute cleanly
        assert ev.compute()["image_auroc"] == 1.0


def test_per_category_metrics_equal_each_category_evaluated_alone() -> None:
    """compute_by_category() on a mixed stream == a fresh evaluator per category; the pooled
    compute() is unchanged by passing categories."""
    maps, scores, labels, masks = make_set(n=18, seed=3)
    cats = ["brain", "liver", "retinal"] * 6  # mixed inside every batch
    ev, plain = AnomalyEvaluator(), AnomalyEvaluator()
    for a in range(0, 18, 4):
        sl = slice(a, a + 4)
        ev.update(maps[sl], scores[sl], labels[sl], masks[sl], cats[sl])
        plain.update(maps[sl], scores[sl], labels[sl], masks[sl])
    by_cat = ev.compute_by_category()
    assert list(by_cat) == ev.categories == ["brain", "liver", "retinal"]
    for cat in by_cat:
        keep = torch.tensor([c == cat for c in cats])
        alone = AnomalyEvaluator()
        alone.update(maps[keep], scores[keep], labels[keep], masks[keep])
        assert by_cat[cat] == pytest.approx(alone.compute(), abs=1e-12)
        assert by_cat[cat]["aupro"] == pytest.approx(aupro(maps[keep], masks[keep, 0]), abs=1e-12)
    pooled = ev.compute()
    assert pooled == pytest.approx(plain.compute(), abs=1e-12)
    assert pooled["aupro"] == pytest.approx(aupro(maps, masks[:, 0]), abs=1e-12)
    assert ev.compute_by_category() == by_cat  # computing the pooled set changed nothing


def test_per_category_without_masks_and_bad_category_list() -> None:
    maps, scores, labels, _ = make_set(n=8)
    ev = AnomalyEvaluator()
    ev.update(maps, scores, labels, None, ["a"] * 4 + ["b"] * 4)
    by_cat = ev.compute_by_category()
    assert set(by_cat["b"]) == {"image_auroc", "image_ap", "image_f1_max"}
    assert by_cat["b"]["image_auroc"] == pytest.approx(roc_auc_score(labels[4:], scores[4:]))
    with pytest.raises(ValueError, match="categories holds 3 names for a batch of 8"):
        ev.update(maps, scores, labels, None, ["a", "b", "c"])
