"""Bad data is found at setup, before training, in every cache mode: truncated and corrupt files,
masks of another size than their image, one-class test splits, unread image files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from adlab.data import AnomalyDataModule, DatasetError
from tests.data_trees import mvtec_tree, write_jpeg, write_mask, write_png


def make_dm(root: Path, **dataset) -> AnomalyDataModule:
    config = {"name": "mvtec", "root": str(root), "category": "bottle", **dataset}
    one_class = {"allow_one_class": True} if config.pop("allow_one_class", False) else {}
    return AnomalyDataModule(
        dataset=config,
        image_size=16,
        normalize="none",
        batch_size=8,
        eval_batch_size=8,
        **one_class,
    )


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut at 60%: its header reads fine, decoding its pixels fails."""
    data = write_jpeg(path, size=64).read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_truncated_jpeg_fails_or_is_skipped_at_setup(tmp_path, cache):
    mvtec_tree(tmp_path)
    bad = truncated_jpeg(tmp_path / "bottle/train/good/010.jpg")
    with pytest.raises(DatasetError, match="010.jpg: cannot decode.*on_bad_image=skip"):
        make_dm(tmp_path, cache=cache).setup()
    dm = make_dm(tmp_path, cache=cache, on_bad_image="skip")
    dm.setup()
    assert dm.skipped == [str(bad)]
    assert dm.summary()["train"] == {"normal": 3} and dm.summary()["skipped"] == 1


def test_corrupt_mask_fails_or_skips_its_image_at_setup_with_cache_none(tmp_path):
    mvtec_tree(tmp_path)
    mask = tmp_path / "bottle/ground_truth/crack/001_mask.png"
    mask.write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="001_mask.png: cannot decode this mask"):
        make_dm(tmp_path, cache="none").setup()
    dm = make_dm(tmp_path, cache="none", on_bad_image="skip")
    dm.setup()
    assert dm.skipped == [str(tmp_path / "bottle/test/crack/001.png")]
    assert dm.summary()["test"] == {"normal": 2, "anomalous": 2}


def test_several_bad_files_are_named_in_one_message(tmp_path):
    mvtec_tree(tmp_path)
    for name in ("010.png", "011.png"):
        (tmp_path / "bottle/train/good" / name).write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="2 bad files: .*010.png.*011.png.*Replace these"):
        make_dm(tmp_path, cache="none").setup()


def test_late_decode_failure_follows_on_bad_image(tmp_path, caplog):
    """verify=header leaves a truncated file to training: skip drops it from its batch."""
    mvtec_tree(tmp_path)
    bad = truncated_jpeg(tmp_path / "bottle/train/good/010.jpg")
    dm = make_dm(tmp_path, cache="none", verify="header")
    dm.setup()  # headers pass
    with pytest.raises(DatasetError, match="010.jpg: cannot decode.*on_bad_image=skip"):
        list(dm.train_dataloader())
    dm = make_dm(tmp_path, cache="none", verify="header", on_bad_image="skip")
    dm.setup()
    with caplog.at_level(logging.WARNING, logger="adlab"):
        batches = list(dm.train_dataloader())
    assert sum(len(b["path"]) for b in batches) == 3
    assert dm.skipped_while_loading() == [str(bad)]
    assert "010.jpg" in caplog.text and "set dataset.on_bad_image" not in caplog.text


def test_mask_of_another_size_is_an_error_unless_mask_resize(tmp_path):
    mvtec_tree(tmp_path)
    mask = write_mask(
        tmp_path / "bottle/ground_truth/hole/000_mask.png", size=20, box=(5, 5, 10, 10)
    )
    for cache in ("none", "memory"):
        for on_bad in ("error", "skip"):  # never skipped: pixel metrics would be misaligned
            with pytest.raises(DatasetError, match="000_mask.png: mask is 20x20 .* is 16x16"):
                make_dm(tmp_path, cache=cache, on_bad_image=on_bad).setup()
    with pytest.raises(DatasetError, match="dataset.mask_resize=true"):
        make_dm(tmp_path).setup()
    out = []
    for cache in ("none", "memory"):
        dm = make_dm(tmp_path, cache=cache, mask_resize=True)
        dm.setup()
        batch = next(iter(dm.test_dataloader()))
        assert batch["mask"].shape == (5, 1, 16, 16)  # every mask at its image's size
        out.append(batch["mask"])
    assert torch.equal(out[0], out[1])
    hole = out[0][[p.endswith("hole/000.png") for p in batch["path"]].index(True), 0]
    expected = np.asarray(Image.open(mask).resize((16, 16), Image.Resampling.NEAREST)) > 0
    assert np.array_equal(hole.numpy(), expected)


def test_skipped_files_change_the_fingerprint(tmp_path):
    prints = {}
    for name in ("bad", "good", "absent"):
        mvtec_tree(tmp_path / name)
        extra = tmp_path / name / "bottle/train/good/009.png"
        if name == "bad":
            extra.write_bytes(b"garbage")
        elif name == "good":
            write_png(extra)
        dm = make_dm(tmp_path / name, on_bad_image="skip")
        dm.setup()
        prints[name] = dm.fingerprint
    assert prints["bad"] != prints["good"]
    assert prints["bad"] == prints["absent"]  # the files actually read


def test_one_class_test_split_fails_unless_allowed(tmp_path):
    mvtec_tree(tmp_path)
    for defect in ("crack", "hole"):
        shutil.rmtree(tmp_path / "bottle/test" / defect)
    with pytest.raises(DatasetError, match="test split has 2 normal and 0 anomalous.*allow_one"):
        make_dm(tmp_path).setup()
    dm = make_dm(tmp_path, allow_one_class=True)
    dm.setup()
    assert dm.summary()["test"] == {"normal": 2, "anomalous": 0}


def test_one_class_category_is_named(tmp_path):
    mvtec_tree(tmp_path, "bottle")
    mvtec_tree(tmp_path, "cable")
    for p in (tmp_path / "cable/test/good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="category 'cable' has 0 normal and 3 anomalous"):
        make_dm(tmp_path, category=["bottle", "cable"]).setup()


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow cannot decode WebP")
def test_webp_is_read(tmp_path):
    mvtec_tree(tmp_path)
    Image.open(write_png(tmp_path / "x.png", mode="RGB")).save(
        tmp_path / "bottle/train/good/w.webp"
    )
    dm = make_dm(tmp_path)
    dm.setup()
    assert dm.summary()["train"] == {"normal": 4}
    assert dm.unsupported == []


def test_unread_image_files_are_listed_in_a_warning(tmp_path, caplog):
    mvtec_tree(tmp_path)
    folder = tmp_path / "bottle/train/good"
    Image.open(write_png(tmp_path / "x.png")).save(folder / "a.gif")
    shutil.copy(folder / "000.png", folder / "b.dat")  # a PNG behind another extension
    (folder / "notes.txt").write_text("not an image")
    dm = make_dm(tmp_path)
    with caplog.at_level(logging.WARNING, logger="adlab"):
        dm.setup()
    assert dm.unsupported == [str(folder / "a.gif"), str(folder / "b.dat")]
    assert dm.summary()["unsupported"] == 2 and dm.summary()["train"] == {"normal": 3}
    assert "2 files in the dataset folders look like images but are not read" in caplog.text
    assert "a.gif" in caplog.text and "notes.txt" not in caplog.text
