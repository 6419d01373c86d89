"""Each reader on a miniature tree in its published layout, and each broken variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from adlab.data import AnomalyDataModule, DatasetError
from adlab.data.readers import READERS, get_reader
from tests.data_trees import (
    bmad_liver_release_tree,
    bmad_tree,
    brats2021_tree,
    chexpert_tree,
    goodbad_tree,
    isic2018_tree,
    medianomaly_tree,
    meta_json_tree,
    mvtec_tree,
    visa_pytorch_tree,
    visa_tree,
    write_mask,
    write_png,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


def config(name: str, root: Path, **overrides) -> dict:
    """The shipped conf/dataset/<name>.yaml with root (and overrides) replaced."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    cfg.update(root=str(root), **overrides)
    return cfg


def read(name: str, root: Path, **overrides) -> AnomalyDataModule:
    dm = AnomalyDataModule(dataset=config(name, root, **overrides), image_size=16,
                           normalize="none", batch_size=8, eval_batch_size=8)  # fmt: skip
    dm.setup()
    return dm


def counts(dm: AnomalyDataModule) -> tuple:
    s = dm.summary()
    return s["train"]["normal"], s["test"]["normal"], s["test"]["anomalous"], s["masks"]


def test_every_shipped_config_names_a_known_reader():
    for path in sorted(CONF.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        assert cfg.name == path.stem, path
        assert "root" in cfg or OmegaConf.is_missing(cfg, "root"), path  # ???: required
        assert get_reader(cfg) in READERS.values()


def test_mvtec_counts_labels_masks_and_modes(tmp_path):
    n = mvtec_tree(tmp_path)
    dm = read("mvtec", tmp_path)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], n["test_anomalous"])
    assert dm.has_masks
    for sample in dm.splits["test"]:
        assert (sample.mask is not None) == (sample.label == 1)
        if sample.mask:
            assert Path(sample.mask).stem == Path(sample.path).stem + "_mask"
            assert Path(sample.mask).parent.name == Path(sample.path).parent.name
    batch = next(iter(dm.train_dataloader()))  # 8-bit L, 16-bit and RGBA decode together
    assert batch["image"].shape == (3, 3, 16, 16)
    assert {s.category for s in dm.splits["test"]} == {"bottle"}


def test_mvtec_missing_mask_and_missing_folders(tmp_path):
    mvtec_tree(tmp_path)
    with pytest.raises(DatasetError, match="not a mvtec category"):
        read("mvtec", tmp_path, category="bottel")
    (tmp_path / "bottle/ground_truth/hole/000_mask.png").unlink()
    with pytest.raises(DatasetError, match="hole/000.png: anomalous test image without a mask"):
        read("mvtec", tmp_path)
    shutil.rmtree(tmp_path / "bottle/train")
    with pytest.raises(DatasetError, match="missing folder .*bottle/train/good; expected layout"):
        read("mvtec", tmp_path)


def test_mvtec_all_categories_and_mpdd(tmp_path):
    mvtec_tree(tmp_path, "bottle")
    mvtec_tree(tmp_path, "cable")
    dm = read("mvtec", tmp_path, category=["bottle", "cable"])
    assert counts(dm) == (6, 4, 6, 6)
    assert {s.category for s in dm.splits["train"]} == {"bottle", "cable"}
    mvtec_tree(tmp_path / "mpdd", "tubes")
    assert counts(read("mpdd", tmp_path / "mpdd", category="tubes")) == (3, 2, 3, 3)


def test_mvtec_layout_reads_own_categories_and_defect_folders(tmp_path):
    for category in ("gizmo", "widget"):
        mvtec_tree(tmp_path, category)  # 3 train, 2 good + 3 defects (crack x2, hole) with masks
    dm = read("mvtec_layout", tmp_path)
    assert counts(dm) == (6, 4, 6, 6)
    assert {s.category for s in dm.splits["train"]} == {"gizmo", "widget"}
    defects = set()
    for sample in dm.splits["test"]:
        image = Path(sample.path)
        assert sample.label == (image.parent.name != "good")
        if sample.label:
            defects.add((sample.category, image.parent.name))
            gt = tmp_path / sample.category / "ground_truth" / image.parent.name
            assert sample.mask == str(gt / f"{image.stem}_mask.png")
    assert defects == {(c, d) for c in ("gizmo", "widget") for d in ("crack", "hole")}
    labels = [int(v) for batch in dm.test_dataloader() for v in batch["label"]]
    assert sorted(labels) == [0] * 4 + [1] * 6
    assert counts(read("mvtec_layout", tmp_path, category="widget")) == (3, 2, 3, 3)
    assert counts(read("mvtec_layout", tmp_path, category=["widget"])) == (3, 2, 3, 3)
    assert counts(read("mvtec_layout", tmp_path / "gizmo")) == (3, 2, 3, 3)  # one category
    with pytest.raises(DatasetError, match="'nope': no folder .*found in .*: gizmo, widget"):
        read("mvtec_layout", tmp_path, category=["gizmo", "nope"])
    shutil.rmtree(tmp_path / "widget/ground_truth")  # masks: auto -> image labels only
    assert counts(read("mvtec_layout", tmp_path, category="widget")) == (3, 2, 3, 0)


def test_mvtec_unknown_category_points_to_mvtec_layout(tmp_path):
    mvtec_tree(tmp_path, "mypart")
    with pytest.raises(DatasetError, match="not a mvtec category.*dataset=mvtec_layout"):
        read("mvtec", tmp_path, category="mypart")
    with pytest.raises(DatasetError, match="no category folder in"):
        read("mvtec_layout", tmp_path / "mypart" / "test")


def test_btad_bmp_masks_without_suffix(tmp_path):
    n = mvtec_tree(tmp_path, "03", mask_ext=".bmp", good="ok", suffix="")
    for defect in ("crack", "hole"):  # BTAD has a single 'ko' defect folder
        for p in (tmp_path / f"03/test/{defect}").iterdir():
            (tmp_path / "03/test/ko").mkdir(exist_ok=True)
            p.rename(tmp_path / "03/test/ko" / f"{defect}{p.name}")
        for p in (tmp_path / f"03/ground_truth/{defect}").iterdir():
            (tmp_path / "03/ground_truth/ko").mkdir(exist_ok=True)
            p.rename(tmp_path / "03/ground_truth/ko" / f"{defect}{p.name}")
    dm = read("btad", tmp_path, category="03")
    assert counts(dm) == (n["train"], n["test_normal"], 3, 3)
    assert all(s.mask.endswith(".bmp") for s in dm.splits["test"] if s.label)
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape[1:] == (1, 16, 16) and int(batch["mask"].max()) == 1


def test_mvtec2_test_public_and_validation(tmp_path):
    base = tmp_path / "can"
    for i in range(3):
        write_png(base / "train/good" / f"{i}.png")
    write_png(base / "validation/good/0.png")
    write_png(base / "test_public/good/0.png")
    for i in range(2):
        write_png(base / "test_public/bad" / f"{i}.png")
        write_mask(base / "test_public/ground_truth/bad" / f"{i}_mask.png")
    dm = read("mvtec2", tmp_path)
    assert counts(dm) == (3, 1, 2, 2)
    assert dm.summary()["valid"] == {"normal": 1, "anomalous": 0}


def test_visa_official_split_file(tmp_path):
    n = visa_tree(tmp_path)
    dm = read("visa", tmp_path, category="pcb1")
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 2)
    assert {s.category for s in dm.splits["test"]} == {"pcb1"}
    assert counts(read("visa", tmp_path, category="all")) == (4, 2, 4, 4)
    (tmp_path / "pcb1/Data/Masks/Anomaly/001.png").unlink()
    with pytest.raises(DatasetError, match="1cls.csv:.*no mask file"):
        read("visa", tmp_path, category="pcb1")
    (tmp_path / "split_csv/1cls.csv").unlink()
    with pytest.raises(DatasetError, match="missing file .*1cls.csv"):
        read("visa", tmp_path, category="pcb1")


@pytest.mark.parametrize("resc,img_sub", [(False, True), (False, False), (True, False)])
def test_bmad_uses_its_own_validation_split(tmp_path, resc, img_sub):
    n = bmad_tree(tmp_path, resc=resc, img_sub=img_sub)
    dm = read("bmad_resc" if resc else "bmad_brain", tmp_path)
    assert counts(dm) == (n["train"], *n["test"], n["test"][1] + n["valid"][1])
    assert dm.summary()["valid"] == {"normal": n["valid"][0], "anomalous": n["valid"][1]}
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [1, 1, 0] and "mask" in val
    with pytest.raises(DatasetError, match="own validation split"):
        read("bmad_brain", tmp_path, val_fraction=0.2) if not resc else read(
            "bmad_resc", tmp_path, val_fraction=0.2)  # fmt: skip


@pytest.mark.parametrize("name", ["bmad_oct2017", "bmad_rsna", "bmad_camelyon16"])
@pytest.mark.parametrize("val", ["val", "valid"])
def test_bmad_val_or_valid_folder(tmp_path, name, val):
    bmad_tree(tmp_path, masks=False, img_sub=False, val=val)
    dm = read(name, tmp_path)
    assert counts(dm) == (3, 2, 3, 0)
    assert dm.summary()["valid"] == {"normal": 1, "anomalous": 2}
    assert {Path(s.path).parts[-3] for s in dm.splits["valid"]} == {val}


def test_bmad_missing_validation_split_is_an_error(tmp_path):
    bmad_tree(tmp_path, masks=False, val="val")
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(
        DatasetError, match=r"validation split: expected .*/valid or .*/val "
    ) as err:
        read("bmad_rsna", tmp_path)
    assert "dataset.require_valid=false" in str(err.value)
    dm = read("bmad_rsna", tmp_path, require_valid=False, val_fraction=0.34)
    assert dm.summary()["valid"] == {"normal": 1, "anomalous": 0}  # carved from the 3 normals
    assert counts(dm) == (2, 2, 3, 0)


def test_bmad_liver_release_layout(tmp_path):
    n = bmad_liver_release_tree(tmp_path)
    dm = read("bmad_liver", n["root"])
    assert counts(dm) == (3, 2, 3, 3 + 2)  # masks of the test and the validation anomalies
    assert dm.summary()["valid"] == {"normal": 1, "anomalous": 2}
    for sample in dm.splits["valid"] + dm.splits["test"]:
        assert (sample.mask is not None) == (sample.label == 1)
        if sample.mask:
            mask, image = Path(sample.mask), Path(sample.path)
            assert mask.name == image.name and mask.parent.parts[-2:] == ("label", "Ungood")
            assert image.parts[-3:-1] == ("img", "Ungood")
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == (5, 1, 16, 16) and int(batch["mask"].sum()) == 3 * 16
    for above in ("Liver", "Liver/Train"):
        with pytest.raises(DatasetError, match=r"dataset.root=.*Liver/Train/hist_DIY \("):
            read("bmad_liver", tmp_path / above)
    (n["root"] / "test/label/Ungood/b2.png").unlink()
    with pytest.raises(DatasetError, match=r"b2.png: anomalous image without a mask"):
        read("bmad_liver", n["root"])


def test_bmad_liver_anomalib_repack_and_mvfa_copy(tmp_path):
    bmad_tree(tmp_path / "repack")  # train/good/img, Ungood/img + Ungood/anomaly_mask
    assert counts(read("bmad_liver", tmp_path / "repack")) == (3, 2, 3, 5)
    bmad_tree(tmp_path / "mvfa", bad="ungood", mask_dir="label")
    dm = read("bmad_liver", tmp_path / "mvfa")
    assert counts(dm) == (3, 2, 3, 5) and dm.summary()["valid"] == {"normal": 1, "anomalous": 2}


def test_bmad_image_level_sets_and_missing_masks(tmp_path):
    bmad_tree(tmp_path / "oct", masks=False)
    dm = read("bmad_oct2017", tmp_path / "oct")
    assert counts(dm) == (3, 2, 3, 0) and not dm.has_masks
    with pytest.raises(DatasetError, match="anomaly_mask"):
        read("bmad_liver", tmp_path / "oct")


@pytest.mark.parametrize("name", ["medianomaly_rsna", "medianomaly_vincxr"])
def test_medianomaly_data_json(tmp_path, name):
    n = medianomaly_tree(tmp_path)
    dm = read(name, tmp_path)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 0) == (3, 2, 2, 0)
    listing = json.loads((tmp_path / "data.json").read_text())
    listing["test"]["1"].append("missing.png")
    (tmp_path / "data.json").write_text(json.dumps(listing))
    with pytest.raises(DatasetError, match="lists missing.png"):
        read(name, tmp_path)


@pytest.mark.parametrize("name", ["d24fad_his", "d24fad_braintumor", "headct", "brainmri"])
def test_good_bad_layouts_with_bmp_and_tiff(tmp_path, name):
    n = goodbad_tree(tmp_path)
    dm = read(name, tmp_path, sampler=None)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 0)
    shutil.rmtree(tmp_path / "test/bad")
    with pytest.raises(DatasetError, match="test/bad"):
        read(name, tmp_path)


def test_zhanglab_folders_and_missing_val(tmp_path):
    for split in ("train", "val", "test"):
        for cls, n in (("normal_256", 3), ("pneumonia_256", 2)):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.jpeg")
    dm = read("zhanglab", tmp_path)
    assert counts(dm) == (3, 3, 2, 0)  # training pneumonia images are never used
    assert dm.summary()["valid"] == {"normal": 3, "anomalous": 2}
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DatasetError, match=r"validation folder .*val/normal_256 .*require_valid"):
        read("zhanglab", tmp_path)


def test_chexpert_squid_copy_with_validation_split(tmp_path):
    n = chexpert_tree(tmp_path)
    dm = read("chexpert", tmp_path)
    assert counts(dm) == (n["train"], *n["test"], 0) == (3, 2, 3, 0)
    assert dm.summary()["valid"] == {"normal": 2, "anomalous": 1}
    assert {Path(s.path).parent.name for s in dm.splits["test"] if s.label} == {"abnormal_256"}
    assert all("our_test_256_pa" in s.path for s in dm.splits["test"])
    shutil.rmtree(tmp_path / "val_256_pa")
    with pytest.raises(DatasetError, match=r"validation folder .*val_256_pa/normal_256"):
        read("chexpert", tmp_path)
    dm = read("chexpert", tmp_path, require_valid=False)
    assert counts(dm) == (3, 2, 3, 0) and dm.summary()["valid"] == {"normal": 0, "anomalous": 0}


def test_folder_like_anomalib(tmp_path):
    for i in range(10):
        write_png(tmp_path / "good" / f"{i}.png")
    for i in range(2):
        write_png(tmp_path / "bad" / f"{i}.png")
        write_mask(tmp_path / "masks" / f"{i}.png")
    dm = read("folder", tmp_path, mask_dir="masks")
    assert counts(dm) == (8, 2, 2, 2)
    dm2 = read("folder", tmp_path, mask_dir="masks")
    assert [s.path for s in dm.splits["test"]] == [s.path for s in dm2.splits["test"]]
    (tmp_path / "masks/1.png").unlink()
    with pytest.raises(DatasetError, match="no mask named 1"):
        read("folder", tmp_path, mask_dir="masks")


def test_unimedical_meta_json_multiclass(tmp_path):
    n = meta_json_tree(tmp_path)
    dm = read("unimedical", tmp_path)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 2)
    assert {s.category for s in dm.splits["test"]} == {"brain", "liver"}
    assert counts(read("unimedical", tmp_path, category="liver")) == (2, 1, 1, 1)
    assert len(read("unimedical", tmp_path, category="liver")._loader(
        "train", False, False).dataset) == 2  # fmt: skip


def test_kshot_on_a_reader(tmp_path):
    goodbad_tree(tmp_path)
    sampler = {"name": "kshot", "shots": 2, "seed": 1}
    dm = AnomalyDataModule(dataset=config("d24fad_lag", tmp_path), sampler=sampler, image_size=16)
    dm.setup()
    assert dm.summary()["train"] == {"normal": 2}
    assert dm.summary()["test"] == {"normal": 2, "anomalous": 2}


def test_medianomaly_camelyon16_folders(tmp_path):
    for folder, n in (("train/good", 3), ("test/good", 2), ("test/Ungood", 4)):
        for i in range(n):
            write_png(tmp_path / folder / f"{i}.png", mode="RGB")
    dm = read("medianomaly_camelyon16", tmp_path)
    assert counts(dm) == (3, 2, 4, 0) and dm.summary()["valid"]["normal"] == 0


def test_medianomaly_brats2021_mask_name_rule(tmp_path):
    n = brats2021_tree(tmp_path)
    dm = read("medianomaly_brats2021", tmp_path)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 3) == (3, 2, 3, 3)
    for sample in dm.splits["test"]:
        if sample.label:
            assert Path(sample.mask).name == Path(sample.path).name.replace("flair", "seg")
            assert Path(sample.mask).parent.name == "annotation"
        else:
            assert sample.mask is None
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == (5, 1, 16, 16) and int(batch["mask"].sum()) == 3 * 16
    (tmp_path / "test/annotation/BraTS2021_02001_seg_80.png").unlink()
    with pytest.raises(
        DatasetError, match=r"expected BraTS2021_02001_seg_80.png or .*mask_replace"
    ):
        read("medianomaly_brats2021", tmp_path)
    with pytest.raises(DatasetError, match=r"mask_replace=.* must map substrings"):
        read("medianomaly_brats2021", tmp_path, mask_replace=["flair", "seg"])


def test_folder_reader_takes_the_mask_name_rule(tmp_path):
    for i in range(4):
        write_png(tmp_path / "good" / f"{i}.png")
    write_png(tmp_path / "bad" / "case1_img.png")
    write_mask(tmp_path / "gt" / "case1_gt.png")
    dm = read(
        "folder", tmp_path, mask_dir="gt", mask_replace={"_img": "_gt"}, normal_split_ratio=0.25
    )
    assert counts(dm) == (3, 1, 1, 1)
    assert Path(dm.splits["test"][0].mask).name == "case1_gt.png"


def test_isic2018_labels_from_the_task3_csvs(tmp_path):
    n = isic2018_tree(tmp_path)
    dm = read("medianomaly_isic2018", tmp_path)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 0) == (4, 2, 3, 0)
    train = {Path(s.path).stem for s in dm.splits["train"]}
    assert train == {"ISIC_0000000", "ISIC_0000002", "ISIC_0000003", "ISIC_0000005"}  # NV only
    labels = {Path(s.path).stem: s.label for s in dm.splits["test"]}
    assert labels == {
        "ISIC_0000100": 0, "ISIC_0000101": 1, "ISIC_0000102": 1, "ISIC_0000103": 0,
        "ISIC_0000104": 1,
    }  # fmt: skip
    csv_file = tmp_path / "ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv"
    (tmp_path / "ISIC2018_Task3_Test_Input/ISIC_0000104.jpg").unlink()
    with pytest.raises(DatasetError, match=r"GroundTruth.csv:6: lists ISIC_0000104, but"):
        read("medianomaly_isic2018", tmp_path)
    csv_file.write_text("image,MEL,NV\nISIC_0000100,0.0,0.5\n")
    with pytest.raises(DatasetError, match=r"GroundTruth.csv:2: NV=0.5 is not 0 or 1"):
        read("medianomaly_isic2018", tmp_path)
    csv_file.write_text("image,MEL\n")
    with pytest.raises(DatasetError, match=r"missing columns \['NV'\]"):
        read("medianomaly_isic2018", tmp_path)


def test_mvtec2_private_test_and_missing_validation(tmp_path):
    base = tmp_path / "can"
    write_png(base / "train/good/0.png")
    write_png(base / "test_public/good/0.png")
    write_png(base / "test_public/bad/1.png")
    write_png(base / "test_public/ground_truth/bad/1_mask.png", value=255)
    write_png(base / "test_private/000.png")
    with pytest.raises(DatasetError, match="test_private.*without labels.*test_split=test_public"):
        read("mvtec2", tmp_path, test_split="test_private")
    with pytest.raises(DatasetError, match=r"validation folder .*can/validation/good"):
        read("mvtec2", tmp_path)
    assert counts(read("mvtec2", tmp_path, require_valid=False)) == (1, 1, 1, 1)


def test_anomalib_visa_pytorch_repack_reads_as_mvtec(tmp_path):
    n = visa_pytorch_tree(tmp_path)
    dm = read("mvtec", n["root"], category="candle", strict_categories=False)
    assert counts(dm) == (n["train"], n["test_normal"], n["test_anomalous"], 2) == (3, 1, 2, 2)
    for sample in dm.splits["test"]:
        if sample.label:
            assert Path(sample.mask).name == Path(sample.path).stem + ".png"


def test_d24fad_official_support_folder_through_train_normal(tmp_path):
    goodbad_tree(tmp_path / "data/LAG")
    support = tmp_path / "med-kshot/LAG/train/shot2/good2"
    for i in range(2):
        write_png(support / f"s{i}.png")
    dm = read("d24fad_lag", tmp_path / "data/LAG", train_normal=str(support))
    assert counts(dm) == (2, 2, 2, 0)
    assert {Path(s.path).parent for s in dm.splits["train"]} == {support}
