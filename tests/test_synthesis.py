"""Synthetic anomalies: Perlin masks, the blend, textures, foreground masks, per-item seeding and
the datamodule integration (real DataLoaders with 0 and 2 workers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adlab.data import AnomalyDataModule, DatasetError
from adlab.data.synthesis import EpochSampler, build_anomalies, item_rng
from adlab.data.synthesis.foreground import (
    approximate_object_mask,
    foreground_mask,
    grabcut_mask,
    gray,
    method_for,
    otsu_threshold,
)
from adlab.data.synthesis.perlin import perlin_mask, perlin_noise, rotate
from adlab.data.synthesis.textures import FAMILIES, GeneratedTextures, TextureFolder
from adlab.data.transforms import Transform
from tests.data_trees import mvtec_tree, write_mask, write_png

HAS_CV2 = importlib.util.find_spec("cv2") is not None


def rng(*words: int) -> np.random.Generator:
    return item_rng(*(words + (0, 0, 0))[:3])


def dm_for(root: Path, **synthesis) -> AnomalyDataModule:
    dataset = {"name": "mvtec", "root": str(root), "category": synthesis.pop("category", "bottle")}
    dataset["foreground"] = synthesis.pop("fg_rule", None)
    return AnomalyDataModule(
        dataset,
        image_size=32,
        normalize="imagenet",
        batch_size=synthesis.pop("batch_size", 3),
        num_workers=synthesis.pop("num_workers", 0),
        seed=synthesis.pop("seed", 7),
        synthesis={"name": "perlin", **synthesis},
    )


def train_tree(root: Path, extra: int = 5) -> Path:
    """MVTec tree with 3 + `extra` training images of different content."""
    mvtec_tree(root)
    for i in range(extra):
        write_png(root / "bottle/train/good" / f"x{i}.png", size=20, value=30 * i, mode="RGB")
    return root


# --- Perlin noise and mask ----------------------------------------------------------------------


def test_perlin_noise_is_zero_on_the_lattice_and_bounded():
    noise = perlin_noise((64, 48), (4, 8), rng(1))
    assert noise.shape == (64, 48)
    np.testing.assert_allclose(noise[::16, ::6], 0.0, atol=1e-12)  # lattice points
    assert np.abs(noise).max() <= np.sqrt(2) and noise.std() > 0.05
    odd = perlin_noise((17, 5), (32, 2), rng(2))  # more cells than pixels: still defined
    assert odd.shape == (17, 5) and np.isfinite(odd).all()


def test_rotation_is_about_the_centre_with_zero_outside():
    ones = np.ones((33, 33))
    turned = rotate(ones, 45.0)
    assert turned[0, 0] == 0 and turned[16, 16] == pytest.approx(1.0)
    ramp = np.arange(33 * 33, dtype=np.float64).reshape(33, 33)
    quarter = rotate(ramp, 90.0)
    np.testing.assert_allclose(quarter, np.rot90(ramp), atol=1e-6)


def test_perlin_mask_coverage_is_plausible_and_follows_threshold_and_rotation():
    draws = [perlin_mask((64, 64), rng(3, i)) for i in range(300)]
    coverage = np.array([m.mean() for m in draws])
    assert 0.02 < coverage.mean() < 0.12  # URD-style masks cover a few percent on average
    assert np.percentile(coverage, 95) < 0.35 and (coverage == 0).mean() < 0.3
    lower = np.mean([perlin_mask((64, 64), rng(3, i), threshold=0.3).mean() for i in range(300)])
    assert lower > coverage.mean() * 1.5
    # threshold 0 without rotation: about half the pixels; rotation blanks the corners
    half = np.mean([perlin_mask((64, 64), rng(4, i), rotation=0, threshold=0.0).mean()
                    for i in range(100)])  # fmt: skip
    assert 0.35 < half < 0.65
    turned = [perlin_mask((64, 64), rng(5, i), rotation=90, threshold=0.0) for i in range(100)]
    assert np.mean([m[0, 0] for m in turned]) < np.mean([m[32, 32] for m in turned])
    # scale exponents: 2^5 cells per axis give many small regions, 2^0 one or two large ones
    from scipy import ndimage

    fine = np.mean([ndimage.label(perlin_mask((64, 64), rng(6, i), (5, 6), 0, 0.3))[1]
                    for i in range(30)])  # fmt: skip
    coarse = np.mean([ndimage.label(perlin_mask((64, 64), rng(6, i), (0, 1), 0, 0.3))[1]
                      for i in range(30)])  # fmt: skip
    assert fine > 5 * max(coarse, 1)


# --- the blend ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_mask_marks_exactly_the_changed_pixels(channels):
    anomalies = build_anomalies({"name": "perlin"})
    nonempty = 0
    for i in range(40):
        image = torch.rand(channels, 48, 40, generator=torch.Generator().manual_seed(i))
        out = anomalies.synthesize(image, rng(9, i))
        m = out.mask[0].bool()
        assert out.mask.shape == (1, 48, 40) and out.damaged.shape == image.shape
        assert set(out.mask.unique().tolist()) <= {0.0, 1.0} and 0 <= out.beta < 0.8
        blend = (1 - out.beta) * out.texture + out.beta * image
        assert torch.equal(out.damaged[:, ~m], image[:, ~m])  # outside: the image, bit for bit
        assert torch.equal(out.damaged[:, m], blend[:, m])  # inside: the blend, bit for bit
        changed = (out.damaged != image).any(0)
        assert torch.equal(changed, m & (blend != image).any(0))
        official = image * (1 - out.mask) + (1 - out.beta) * out.texture * out.mask
        official = official + out.beta * image * out.mask
        torch.testing.assert_close(out.damaged, official, rtol=0, atol=1e-6)
        assert 0 <= out.damaged.min() and out.damaged.max() <= 1
        nonempty += bool(m.any())
    assert nonempty > 25


def test_foreground_restricts_the_mask():
    anomalies = build_anomalies({"name": "perlin"})
    foreground = np.zeros((32, 32), bool)
    foreground[:, 16:] = True
    union = np.zeros((32, 32), bool)
    for i in range(60):
        out = anomalies.synthesize(torch.rand(3, 32, 32), rng(11, i), foreground)
        mask = out.mask[0].numpy() > 0
        assert not (mask & ~foreground).any()
        union |= mask
    assert union[:, 16:].mean() > 0.3


# --- textures ----------------------------------------------------------------------------------


def test_generated_textures_every_family():
    for family in FAMILIES:
        source = GeneratedTextures([family])
        a = source.sample(rng(12), (40, 24), 3)
        b = source.sample(rng(12), (40, 24), 3)
        assert a.shape == (3, 40, 24) and a.dtype == torch.float32
        assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
        assert a.std() > 0.01, family  # not a flat colour
        gray_texture = source.sample(rng(12), (40, 24), 1)
        expected = (a * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
        torch.testing.assert_close(gray_texture, expected, rtol=0, atol=1e-5)
    with pytest.raises(DatasetError, match="synthesis.families"):
        GeneratedTextures(["plaid"])


def test_texture_folder_draws_every_image_resized(tmp_path):
    colours = {"a/red.png": (255, 0, 0), "b/deep/green.jpg": (0, 255, 0), "blue.bmp": (0, 0, 255)}
    for name, colour in colours.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (37, 23), colour).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    source = TextureFolder(tmp_path)
    assert len(source) == 3
    seen = set()
    for i in range(30):
        texture = source.sample(rng(13, i), (16, 20), 3)
        assert texture.shape == (3, 16, 20)
        seen.add(int(texture.mean(dim=(1, 2)).argmax()))
    assert seen == {0, 1, 2}
    anomalies = build_anomalies({"name": "perlin", "textures": str(tmp_path)})
    assert isinstance(anomalies.textures, TextureFolder)


def test_empty_or_unreadable_texture_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "dtd"
    with pytest.raises(DatasetError, match=r"synthesis.textures=.*dtd: not a folder.*null"):
        build_anomalies({"name": "perlin", "textures": str(missing)})
    missing.mkdir()
    (missing / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"dtd: no image files.*dtd/images"):
        build_anomalies({"name": "perlin", "textures": str(missing)})
    (missing / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"dtd: .*broken.jpg.*Remove the file"):
        build_anomalies({"name": "perlin", "textures": str(missing)})
    file = tmp_path / "file.png"
    write_png(file)
    with pytest.raises(DatasetError, match="file.png: not a folder"):
        build_anomalies({"name": "perlin", "textures": str(file)})


def test_bad_synthesis_config_names_the_key():
    with pytest.raises(DatasetError, match="synthesis.beta"):
        build_anomalies({"name": "perlin", "beta": [0.9, 0.1]})
    with pytest.raises(DatasetError, match=r"synthesis.beta=\[0.0, 1.5\]: the range must lie"):
        build_anomalies({"name": "perlin", "beta": [0.0, 1.5]})
    with pytest.raises(DatasetError, match="synthesis.perlin_scale"):
        build_anomalies({"name": "perlin", "perlin_scale": [3, 3]})
    with pytest.raises(DatasetError, match="unknown keys.*texture"):
        build_anomalies({"name": "perlin", "texture": "/x"})
    with pytest.raises(DatasetError, match="synthesis.name='draem'"):
        AnomalyDataModule({"name": "mvtec"}, synthesis={"name": "draem"})


# --- foreground masks --------------------------------------------------------------------------


def disc_image(size: int = 64, dark: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8: a disc on a plain background with mild noise, and the disc mask."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2.2) ** 2 < (size / 4) ** 2
    noise = np.random.default_rng(seed).normal(0, 6, (size, size, 3))
    base = np.where(disc[..., None], (40, 50, 60) if dark else (220, 180, 90), (200, 205, 210))
    return np.clip(base + noise, 0, 255).astype(np.uint8), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_otsu_inverted_finds_a_dark_object():
    rgb, disc = disc_image()
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    mask = foreground_mask(tensor, "otsu_inv")
    assert iou(mask, disc) > 0.95
    assert iou(foreground_mask(tensor, "otsu"), ~disc) > 0.95
    assert foreground_mask(tensor, "none") is None


@pytest.mark.skipif(not HAS_CV2, reason="OpenCV not installed (optional extra adlab[synthesis])")
def test_numpy_otsu_and_gray_match_opencv():
    import cv2

    for seed in range(5):
        rgb, _ = disc_image(seed=seed)
        rgb = np.clip(rgb.astype(int) + np.random.default_rng(seed).integers(-60, 60, rgb.shape),
                      0, 255).astype(np.uint8)  # fmt: skip
        np.testing.assert_array_equal(gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        values = gray(rgb)
        threshold, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
        assert otsu_threshold(values) == int(threshold)


def test_grabcut_and_its_fallback_find_a_coloured_object():
    rgb, disc = disc_image(dark=False)
    assert iou(approximate_object_mask(rgb), disc) > 0.9  # the path without OpenCV
    assert iou(grabcut_mask(rgb), disc) > 0.85  # OpenCV's GrabCut when installed
    np.testing.assert_array_equal(grabcut_mask(rgb), grabcut_mask(rgb))  # reproducible


def test_foreground_rule_per_category():
    rule = {"capsule": "otsu_inv", "bottle": "grabcut"}
    assert method_for(rule, "capsule") == "otsu_inv" and method_for(rule, "carpet") == "none"
    assert method_for("grabcut", "candle") == "grabcut" and method_for(None, "x") == "none"
    with pytest.raises(DatasetError, match=r"dataset.foreground.bottle='snake'"):
        method_for({"bottle": "snake"}, "bottle")


def test_datamodule_keeps_anomalies_on_the_foreground(tmp_path):
    base = tmp_path / "capsule"
    for i in range(4):
        rgb, _ = disc_image(48, seed=i)
        (base / "train/good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(base / "train/good" / f"{i}.png")
    write_png(base / "test/good/0.png")
    write_png(base / "test/crack/0.png")
    write_mask(base / "ground_truth/crack/0_mask.png")
    dm = dm_for(tmp_path, category="capsule", fg_rule={"capsule": "otsu_inv"}, batch_size=4)
    dm.setup()
    assert len(dm.foreground) == 4
    union = 0.0
    for epoch in range(3):
        dm_loader = dm.train_dataloader()
        dm_loader.batch_sampler.sampler.set_epoch(epoch)
        for batch in dm_loader:
            for path, mask in zip(batch["path"], batch["synthetic_mask"]):
                fg = torch.from_numpy(dm.foreground[path])
                assert not (mask[0].bool() & ~fg).any()
                union += float(mask.sum())
    assert union > 0
    off = dm_for(tmp_path, category="capsule", fg_rule={"capsule": "otsu_inv"}, foreground=False)
    off.setup()
    assert off.foreground == {}


# --- seeding and the datamodule -----------------------------------------------------------------


def epochs_by_path(dm: AnomalyDataModule, epochs: int = 2) -> dict:
    """{(epoch, path): (augmented, synthetic_mask)} read through the real train loader."""
    loader = dm.train_dataloader()
    out = {}
    for epoch in range(epochs):
        loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning does before each epoch
        for batch in loader:
            for i, path in enumerate(batch["path"]):
                out[epoch, path] = (batch["augmented"][i], batch["synthetic_mask"][i])
    return out


def test_same_seed_same_anomalies_with_0_and_2_workers(tmp_path):
    train_tree(tmp_path)
    runs = []
    for workers in (0, 2):
        dm = dm_for(tmp_path, num_workers=workers)
        dm.setup()
        runs.append(epochs_by_path(dm))
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 16
    for key in runs[0]:
        assert torch.equal(runs[0][key][0], runs[1][key][0])
        assert torch.equal(runs[0][key][1], runs[1][key][1])
    # any order of access: the dataset alone, backwards, gives the same items
    dm = dm_for(tmp_path)
    dm.setup()
    dataset = dm.train_dataloader().dataset
    for index in reversed(range(len(dataset))):
        item = dataset[index, 1]
        assert torch.equal(item["augmented"], runs[0][1, item["path"]][0])


def test_epoch_and_seed_change_the_anomalies_and_the_image_stays_normal(tmp_path):
    train_tree(tmp_path)
    dm = dm_for(tmp_path)
    dm.setup()
    items = epochs_by_path(dm, epochs=2)
    paths = sorted({path for _, path in items})
    differ = sum(not torch.equal(items[0, p][1], items[1, p][1]) for p in paths)
    assert differ >= len(paths) - 1  # a new epoch draws new anomalies (two empty masks may tie)
    other = dm_for(tmp_path, seed=8)
    other.setup()
    other_items = epochs_by_path(other, epochs=1)
    changed = sum(not torch.equal(items[0, p][0], other_items[0, p][0]) for p in paths)
    assert changed >= len(paths) - 1  # another seed, other anomalies
    # without set_epoch the sampler counts epochs itself
    loader = dm_for(tmp_path)
    loader.setup()
    counted = loader.train_dataloader()
    assert [e for _, e in list(counted.batch_sampler.sampler)[:1]] == [0]
    assert {e for _, e in counted.batch_sampler.sampler} == {1}
    # the normal image is untouched, and where the mask is 0 the damaged one equals it
    plain = AnomalyDataModule({"name": "mvtec", "root": str(tmp_path), "category": "bottle"},
                              image_size=32, batch_size=3, seed=7)  # fmt: skip
    plain.setup()
    assert plain.batch_keys("train") == {"image", "label", "path", "category"}
    normal = {p: img for b in plain.train_dataloader() for p, img in zip(b["path"], b["image"])}
    for batch in dm.train_dataloader():
        for path, image, damaged, mask in zip(batch["path"], batch["image"], batch["augmented"],
                                              batch["synthetic_mask"]):  # fmt: skip
            assert torch.equal(image, normal[path])
            keep = mask[0] == 0
            assert torch.equal(damaged[:, keep], image[:, keep])


def test_train_batches_carry_the_synthesis_keys(tmp_path):
    train_tree(tmp_path, extra=1)
    dm = dm_for(tmp_path)
    dm.setup()
    assert {"augmented", "synthetic_mask"} <= dm.batch_keys("train")
    assert not {"augmented", "synthetic_mask"} & dm.batch_keys("test")
    batch = next(iter(dm.train_dataloader()))
    assert batch["augmented"].shape == batch["image"].shape == (3, 3, 32, 32)
    assert batch["synthetic_mask"].shape == (3, 1, 32, 32)
    assert batch["synthetic_mask"].dtype == torch.float32
    assert "augmented" not in next(iter(dm.test_dataloader()))
    assert isinstance(dm.train_dataloader().batch_sampler.sampler, EpochSampler)


def test_unit_and_normalise_split_finish():
    transform = Transform(8, normalize="imagenet")
    resized = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    assert torch.equal(transform.finish(resized), transform.normalise(transform.unit(resized)))
    assert transform.unit(resized).shape == (1, 8, 8)


def test_hydra_group_reaches_the_datamodule(tmp_path):
    from hydra import compose, initialize_config_dir

    from adlab.compose import build_datamodule

    conf = Path(__file__).resolve().parents[1] / "conf"
    fixed = ["method_name=test", "run_name=test"]
    with initialize_config_dir(str(conf), version_base=None):
        default = compose("config", overrides=fixed)
        perlin = compose("config", overrides=[*fixed, "synthesis=perlin", "dataset=mvtec"])
        visa = compose("config", overrides=[*fixed, "dataset=visa"])
    assert default.synthesis.name == "none"
    assert "augmented" not in build_datamodule(default).batch_keys("train")
    dm = build_datamodule(perlin)
    assert {"augmented", "synthetic_mask"} <= dm.batch_keys("train")
    assert dm.synthesis["beta"] == [0.0, 0.8] and dm.synthesis["perlin_scale"] == [0, 6]
    rule = perlin.dataset.foreground
    assert method_for(rule, "screw") == "otsu_inv" and method_for(rule, "bottle") == "grabcut"
    assert method_for(rule, "transistor") == "none" and method_for(rule, "carpet") == "none"
    assert method_for(visa.dataset.foreground, "capsules") == "grabcut"
