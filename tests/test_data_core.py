"""Decoding, transforms, samplers, the synthetic benchmark and the datamodule contract."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adlab.data import AnomalyDataModule, DatasetError
from adlab.data.batch import collate
from adlab.data.io import read_image, read_mask
from adlab.data.records import Sample
from adlab.data.samplers import carve_validation, select_train
from adlab.data.synthetic import add_defect, ensure_tree, normal_image
from adlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform
from tests.data_trees import mvtec_tree, write_mask, write_png


def make_dm(dataset: dict, **kwargs) -> AnomalyDataModule:
    args = dict(
        sampler={"name": "full"},
        image_size=32,
        crop_size=None,
        resample="bilinear",
        normalize="none",
        batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        seed=0,
    )
    args.update(kwargs)
    return AnomalyDataModule(dataset=dataset, **args)


# --- decoding -------------------------------------------------------------------------------


def test_16bit_png_is_scaled_by_its_real_range(tmp_path):
    values = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    image = np.asarray(read_image(tmp_path / "a.png"))
    np.testing.assert_allclose(image, (values - 1000.0) / 4000.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_modes_decode_to_l_or_rgb_with_the_same_pixels(tmp_path, mode):
    path = write_png(tmp_path / "x.png", mode=mode)
    image = read_image(path)
    assert image.mode in ("L", "RGB")
    gray = write_png(tmp_path / "ref.png", mode="L")
    ref = np.asarray(Image.open(gray), np.float32)
    got = np.asarray(image.convert("RGB"), np.float32)[..., 0]
    np.testing.assert_allclose(got, ref, atol=1)  # RGB's red channel is the ramp too


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_other_formats_decode(tmp_path, fmt, ext):
    array = np.full((8, 10), 77, np.uint8)
    Image.fromarray(array).save(tmp_path / f"a{ext}", fmt)
    image = read_image(tmp_path / f"a{ext}")
    assert image.size == (10, 8)
    assert abs(float(np.asarray(image).mean()) - 77) < 2


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="broken.png: cannot decode"):
        read_image(bad)  # the datamodule adds the fix that fits dataset.on_bad_image


def test_mask_any_nonzero_is_anomalous(tmp_path):
    array = np.array([[0, 1], [254, 0]], np.uint8)
    Image.fromarray(array).save(tmp_path / "m.png")
    Image.fromarray(array).save(tmp_path / "m.bmp")
    for name in ("m.png", "m.bmp"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), [[0, 1], [1, 0]])


# --- transforms -----------------------------------------------------------------------------


def test_transform_resize_crop_and_normalise():
    image = Image.fromarray(np.full((40, 20), 255, np.uint8))
    t = Transform(image_size=16, crop_size=8, resample="lanczos", normalize="imagenet")
    out = t.finish(t.resize(image))
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)


def test_mask_crop_keeps_the_same_fraction_at_ground_truth_resolution():
    t = Transform(image_size=256, crop_size=224)
    mask = np.zeros((100, 100), np.uint8)
    mask[0, 0] = 1  # the corner is cut away by a centre crop
    mask[50, 50] = 1
    out = t.crop_mask(mask)
    assert out.shape == (1, 88, 88)  # round(100 * 224 / 256)
    assert int(out.sum()) == 1 and out[0, 44, 44] == 1


@pytest.mark.parametrize("bad", [dict(resample="cubic"), dict(normalize="z"), dict(crop_size=64)])
def test_transform_rejects_bad_options(bad):
    with pytest.raises(ValueError, match="data.|crop"):
        Transform(**{"image_size": 32, **bad})


# --- samplers -------------------------------------------------------------------------------


def samples(n: int, category: str = "a") -> list[Sample]:
    return [Sample(f"/x/{category}/{i:03d}.png", 0, "train", category) for i in range(n)]


def test_kshot_is_reproducible_per_category_and_seed():
    pool = samples(20, "a") + samples(20, "b")
    one = select_train(pool, {"name": "kshot", "shots": 4, "seed": 3})
    assert one == select_train(list(reversed(pool)), {"name": "kshot", "shots": 4, "seed": 3})
    assert sorted(s.category for s in one) == ["a"] * 4 + ["b"] * 4
    other = select_train(pool, {"name": "kshot", "shots": 4, "seed": 4})
    assert {s.path for s in one} != {s.path for s in other}
    with pytest.raises(DatasetError, match="sampler.shots"):
        select_train(samples(3), {"name": "kshot", "shots": 4, "seed": 0})


def test_validation_is_carved_from_training_normals():
    train, valid = carve_validation(samples(10), 0.2, seed=1)
    assert len(valid) == 2 and len(train) == 8
    assert all(s.split == "valid" for s in valid)
    assert not {s.path for s in train} & {s.path for s in valid}


# --- synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["ct", "texture"])
def test_synthetic_defects_are_visible_in_their_mask(style):
    rng = np.random.default_rng(0)
    image, region = normal_image(style, 128, rng)
    for defect in ("blob", "ellipse", "scratch", "small"):
        changed, mask = add_defect(image, region, defect, np.random.default_rng(1))
        diff = np.abs(changed - image)
        assert mask.sum() > 0
        assert diff[mask == 1].mean() > 0.1  # clearly changed inside
        assert diff[(mask == 0) & (diff > 0)].mean() < diff[mask == 1].mean()


def test_synthetic_tree_is_deterministic_and_keyed_by_parameters(tmp_path):
    started = time.perf_counter()
    tree, category = ensure_tree(tmp_path / "a", {})
    assert time.perf_counter() - started < 2.0  # the default set
    again, _ = ensure_tree(tmp_path / "b", {})
    for path in sorted(tree.rglob("*.png"))[::7]:
        twin = again / path.relative_to(tree)
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(twin)))
    changed, _ = ensure_tree(tmp_path / "a", {"n_train": 5})
    assert changed != tree and len(list((changed / category / "train/good").iterdir())) == 5
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp")]


def test_synthetic_datamodule_end_to_end(tmp_path):
    dm = make_dm(
        {
            "name": "synthetic",
            "reader": "synthetic",
            "root": str(tmp_path),
            "n_train": 6,
            "n_test_normal": 3,
            "n_test_anomalous": 5,
        },
        normalize="imagenet",
        crop_size=28,
    )
    dm.setup()
    assert dm.summary()["train"] == {"normal": 6}
    assert dm.summary()["test"] == {"normal": 3, "anomalous": 5}
    assert dm.has_masks and dm.summary()["masks"] == 5
    assert dm.val_dataloader() is None
    batches = list(dm.test_dataloader())
    labels = torch.cat([b["label"] for b in batches])
    assert int(labels.sum()) == 5 and labels.dtype == torch.long
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 28, 28) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 112, 112)  # 128 * 28/32 at ground-truth resolution
    assert batch["mask"].dtype == torch.uint8
    paths = [p for b in batches for p in b["path"]]
    assert paths == sorted(paths)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(8))  # test order
    assert "index" in dm.batch_keys("test") and "index" not in dm.batch_keys("train")
    assert "index" not in next(iter(dm.train_dataloader()))
    for b in batches:  # masks agree with labels: anomalous have pixels, normals none
        for label, mask in zip(b["label"], b["mask"]):
            assert bool(mask.any()) == bool(label)


def test_train_loader_shuffles_reproducibly_by_seed(tmp_path):
    mvtec_tree(tmp_path)
    config = {"name": "mvtec", "root": str(tmp_path), "category": "bottle"}
    orders = []
    for seed in (0, 0, 5):
        dm = make_dm(config, seed=seed, batch_size=1)
        dm.setup()
        orders.append([b["path"][0] for b in dm.train_dataloader()])
    assert orders[0] == orders[1] and sorted(orders[0]) == sorted(orders[2])
    assert len(orders[0]) == 3
    loader = make_dm(config, seed=0, batch_size=1)
    loader.setup()
    train = loader.train_dataloader()
    epochs = {tuple(b["path"][0] for b in train) for _ in range(6)}
    assert len(epochs) > 1  # each epoch is reshuffled


def test_memory_cache_gives_the_same_batches_as_no_cache(tmp_path):
    mvtec_tree(tmp_path)
    out = []
    for cache in ("memory", "none"):
        dm = make_dm(
            {"name": "mvtec", "root": str(tmp_path), "category": "bottle", "cache": cache},
            resample="bicubic",
        )
        dm.setup()
        assert bool(dm._cache.images) == (cache == "memory")
        out.append(next(iter(dm.test_dataloader())))
    assert torch.equal(out[0]["image"], out[1]["image"])
    assert torch.equal(out[0]["mask"], out[1]["mask"])


def test_mixed_mask_sizes_come_as_a_list(tmp_path):
    mvtec_tree(tmp_path)
    write_png(tmp_path / "bottle/test/crack/000.png", size=24)
    write_mask(tmp_path / "bottle/ground_truth/crack/000_mask.png", size=24)
    dm = make_dm({"name": "mvtec", "root": str(tmp_path), "category": "bottle"}, eval_batch_size=10)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch["mask"], list)
    assert sorted(m.shape[-1] for m in batch["mask"]) == [16, 16, 16, 16, 24]
    assert batch["image"].shape == (5, 3, 32, 32)


def test_bad_image_errors_or_is_skipped_and_listed(tmp_path):
    mvtec_tree(tmp_path)
    bad = tmp_path / "bottle/train/good/009.png"
    bad.write_bytes(b"garbage")
    config = {"name": "mvtec", "root": str(tmp_path), "category": "bottle"}
    with pytest.raises(DatasetError, match="009.png"):
        make_dm(config).setup()
    for cache in ("memory", "none"):
        dm = make_dm({**config, "on_bad_image": "skip", "cache": cache})
        dm.setup()
        assert dm.skipped == [str(bad)]
        assert dm.summary()["train"] == {"normal": 3}


def test_val_fraction_and_missing_root_and_zero_train(tmp_path):
    mvtec_tree(tmp_path)
    config = {"name": "mvtec", "root": str(tmp_path), "category": "bottle"}
    dm = make_dm({**config, "val_fraction": 0.34})
    dm.setup()
    assert dm.summary()["valid"] == {"normal": 1, "anomalous": 0}
    assert dm.summary()["train"] == {"normal": 2}
    assert len(next(iter(dm.val_dataloader()))["path"]) == 1
    with pytest.raises(DatasetError, match="does not exist.*dataset.root"):
        make_dm({**config, "root": str(tmp_path / "nope")}).setup()
    for p in (tmp_path / "bottle/train/good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="zero normal training images"):
        make_dm(config).setup()


def test_fingerprint_depends_on_the_file_list_not_the_location(tmp_path):
    mvtec_tree(tmp_path / "a")
    mvtec_tree(tmp_path / "b")
    prints = []
    for name in ("a", "b"):
        dm = make_dm({"name": "mvtec", "root": str(tmp_path / name), "category": "bottle"})
        dm.setup()
        prints.append(dm.fingerprint)
    assert prints[0] == prints[1]
    write_png(tmp_path / "b/bottle/train/good/extra.png")
    dm = make_dm({"name": "mvtec", "root": str(tmp_path / "b"), "category": "bottle"})
    dm.setup()
    assert dm.fingerprint != prints[0]
    assert dm.fingerprint.split("-")[0] == str(int(prints[0].split("-")[0]) + 1)


def test_elpv_split_from_the_package():
    dm = make_dm(
        {"name": "elpv", "reader": "elpv", "root": None, "cell_type": "mono", "cache": "none"},
        batch_size=2,
    )
    dm.setup()
    labels = Path(dm.root) / "labels.csv"
    rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
    normals = sum(1 for r in rows if r[2] == "mono" and float(r[1]) == 0)
    anomalous = sum(1 for r in rows if r[2] == "mono" and float(r[1]) == 1)
    summary = dm.summary()
    assert summary["test"]["anomalous"] == anomalous
    assert summary["train"]["normal"] + summary["test"]["normal"] == normals
    assert summary["test"]["normal"] == round(normals * 0.3)
    assert not dm.has_masks
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and "mask" not in batch
    train = {s.path for s in dm.splits["train"]}
    assert not train & {s.path for s in dm.splits["test"]}


def test_collate_stacks_labels_and_keeps_strings():
    items = [
        {"image": torch.zeros(3, 2, 2), "label": i, "path": f"p{i}", "category": "c"}
        for i in range(2)
    ]
    batch = collate(items)
    assert batch["label"].tolist() == [0, 1] and batch["path"] == ["p0", "p1"]


def test_dicom_needs_pydicom_or_decodes(tmp_path):
    path = tmp_path / "slice.dcm"
    try:
        import pydicom  # noqa: F401
    except ImportError:
        path.write_bytes(b"\0" * 132)
        with pytest.raises(DatasetError, match="pip install adlab\\[dicom\\]"):
            read_image(path)
        return
    pytest.skip("pydicom installed: covered by its own decoding")
