"""data.high_bit_depth: 16-bit and float images scaled by their own range (minmax) or saturated at
255 as the official codes' PIL convert("RGB") does (clip), from the config to the batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from adlab.compose import build_datamodule
from adlab.data.io import read_image

REPO = Path(__file__).resolve().parents[1]
# 12-bit CT-like values in a 16-bit PNG: air, soft tissue, bone, the 16-bit maximum
VALUES = np.array([[0, 100, 255, 256], [1000, 4095, 65535, 128]], dtype=np.uint16)
CLIPPED = np.array([[0, 100, 255, 255], [255, 255, 255, 128]], dtype=np.uint8)  # by hand


def test_16bit_png_minmax_and_clip_by_hand(tmp_path):
    path = tmp_path / "ct.png"
    Image.fromarray(VALUES).save(path)
    minmax = read_image(path, "minmax")
    assert minmax.mode == "F"
    np.testing.assert_allclose(np.asarray(minmax), VALUES / 65535.0, rtol=1e-6)
    clip = read_image(path, "clip")
    assert clip.mode == "L"
    np.testing.assert_array_equal(np.asarray(clip), CLIPPED)
    # what the official loaders see: Image.open(path).convert("RGB")
    with Image.open(path) as official:
        np.testing.assert_array_equal(np.asarray(official.convert("RGB"))[..., 0], CLIPPED)
    assert np.asarray(read_image(path)).dtype == np.float32  # minmax stays the default


def test_float_tiff_clip_saturates_and_truncates_like_pil(tmp_path):
    values = np.array([[-3.2, 0.4, 1.5, 2.5], [127.9, 254.6, 255.4, 300.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    hand = np.array([[0, 0, 1, 2], [127, 254, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(read_image(path, "clip")), hand)
    with Image.open(path) as official:
        np.testing.assert_array_equal(np.asarray(official.convert("RGB"))[..., 0], hand)
    low, high = values.min(), values.max()
    np.testing.assert_allclose(
        np.asarray(read_image(path, "minmax")), (values - low) / (high - low), rtol=1e-6
    )


def test_eight_bit_images_are_the_same_either_way(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(CLIPPED).save(path)
    np.testing.assert_array_equal(np.asarray(read_image(path, "clip")), CLIPPED)
    np.testing.assert_array_equal(np.asarray(read_image(path, "minmax")), CLIPPED)


def _tree(root: Path) -> None:
    for split, folder, n in (("train", "good", 2), ("test", "good", 1), ("test", "bad", 1)):
        (root / split / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(VALUES // (i + 1)).save(root / split / folder / f"{i}.png")


def _datamodule(root: Path, mode: str):
    overrides = [
        "dataset=headct",
        f"dataset.root={root}",
        "image_size=4",  # the files' own width: no resampling
        "data.resample=nearest",
        "data.normalize=none",
        f"data.high_bit_depth={mode}",
        "method_name=x",
        "run_name=x",
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    return build_datamodule(cfg)


@pytest.mark.parametrize("mode", ["minmax", "clip"])
def test_the_config_key_reaches_the_batches(tmp_path, mode):
    """data.high_bit_depth -> build_datamodule -> the image cache -> the test batches."""
    _tree(tmp_path)
    dm = _datamodule(tmp_path, mode)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert dm.high_bit_depth == mode
    # 4x2 images are resized to 4x4 (nearest): rows 0-1 from the first row, 2-3 from the second
    got = batch["image"][0, 0]
    want = VALUES / 65535.0 if mode == "minmax" else CLIPPED / 255.0
    torch.testing.assert_close(got[[0, 2]], torch.tensor(want, dtype=torch.float32))
    assert torch.equal(batch["image"][0, 0], batch["image"][0, 2])  # grey to 3 channels


def test_an_unknown_mode_names_the_key(tmp_path):
    _tree(tmp_path)
    with pytest.raises(ValueError, match=r"data.high_bit_depth='saturate'.*'minmax'.*'clip'"):
        _datamodule(tmp_path, "saturate")
