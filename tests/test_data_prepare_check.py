"""`python -m adlab.data.prepare` on fake Kaggle downloads and `python -m adlab.data.check`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adlab.data import DatasetError
from adlab.data.check import main as check_main
from adlab.data.prepare import SPLITS_DIR, assign_split, prepare, read_split_file
from tests.data_trees import mvtec_tree, write_jpeg, write_mask, write_png

REPO = Path(__file__).resolve().parents[1]


def fake_headct(raw: Path) -> None:
    """The Kaggle layout: head_ct/head_ct/000.png..199.png and labels.csv 'id, hemorrhage'."""
    rows = ["id, hemorrhage"]
    for i in range(200):
        write_png(raw / "head_ct" / "head_ct" / f"{i:03d}.png", size=8, value=i)
        rows.append(f"{i}, {1 if i < 100 else 0}")
    (raw / "labels.csv").write_text("\n".join(rows) + "\n")


def test_headct_prepare_reproduces_the_committed_split(tmp_path):
    fake_headct(tmp_path / "raw")
    written = prepare("headct", tmp_path / "raw", tmp_path / "out")
    committed = read_split_file(SPLITS_DIR / "headct.csv")
    expected = {"train/good": 0, "test/good": 0, "test/bad": 0}
    for name, (label, split) in committed.items():
        folder = "test/bad" if label else f"{split}/good"
        assert (tmp_path / "out" / folder / name).is_file(), name
        expected[folder] += 1
    assert written == expected == {"train/good": 70, "test/good": 30, "test/bad": 100}
    assert read_split_file(tmp_path / "out" / "split.csv") == committed
    with pytest.raises(DatasetError, match="not empty"):
        prepare("headct", tmp_path / "raw", tmp_path / "out")


def test_headct_prepare_rejects_a_different_download(tmp_path):
    fake_headct(tmp_path / "raw")
    (tmp_path / "raw" / "head_ct" / "head_ct" / "150.png").unlink()
    with pytest.raises(DatasetError, match="150"):
        prepare("headct", tmp_path / "raw", tmp_path / "out")
    labels = (tmp_path / "raw" / "labels.csv").read_text().replace("150, 0", "150, 1")
    write_png(tmp_path / "raw" / "head_ct" / "head_ct" / "150.png", size=8)
    (tmp_path / "raw" / "labels.csv").write_text(labels)
    with pytest.raises(DatasetError, match="found 99 normal and 101 anomalous"):
        prepare("headct", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_brainmri_prepare_counts_and_rule(tmp_path):
    raw = tmp_path / "raw"
    names = [f"{i} no.jpeg" if i % 3 else f"No{i}.jpg" for i in range(98)]
    for name in names:
        write_jpeg(raw / "no" / name, size=8)
    for i in range(155):
        write_jpeg(raw / "yes" / (f"Y{i}.JPG" if i % 2 else f"Y{i}.jpg"), size=8)
    written = prepare("brainmri", raw, tmp_path / "out", split_file=tmp_path / "none.csv")
    assert written == {"train/good": 69, "test/good": 29, "test/bad": 155}
    rows = list(csv.DictReader((tmp_path / "out" / "split.csv").open()))
    rule = assign_split([(r["file"], int(r["label"])) for r in rows])
    assert all(rule[r["file"]] == r["split"] for r in rows)
    (raw / "yes" / "Y3.JPG").unlink()
    with pytest.raises(DatasetError, match="found 98 normal and 154 anomalous"):
        prepare("brainmri", raw, tmp_path / "out2", split_file=tmp_path / "none.csv")


def fake_brainmri(raw: Path, names: list[str], duplicate: bool = True) -> None:
    """The Kaggle layout: yes/ and no/ at the top, plus the same images in brain_tumor_dataset/."""
    for base in (raw, raw / "brain_tumor_dataset") if duplicate else (raw,):
        for name in names:
            if name.lower().endswith(".png"):
                write_png(base / name, size=8)
            else:
                write_jpeg(base / name, size=8)


def brainmri_names() -> list[str]:
    return sorted(read_split_file(SPLITS_DIR / "brainmri.csv"))


def test_brainmri_split_file_lists_the_kaggle_set_split_by_the_rule():
    committed = read_split_file(SPLITS_DIR / "brainmri.csv")
    labels = {name: label for name, (label, _) in committed.items()}
    assert sum(1 for n in committed if n.startswith("no/")) == 98
    assert sum(1 for n in committed if n.startswith("yes/")) == 155
    assert all(label == (name.startswith("yes/")) for name, label in labels.items())
    # names as the Kaggle folders spell them (spaces, case and extension kept)
    for name in ("no/1 no.jpeg", "no/No22.jpg", "no/N1.JPG", "no/no 9.png", "no/44no.jpg",
                 "yes/Y1.jpg", "yes/Y109.JPG", "yes/Y92.jpg", "yes/Y92.png"):  # fmt: skip
        assert name in committed, name
    rule = assign_split(list(labels.items()))
    assert {name: split for name, (_, split) in committed.items()} == rule
    tally = {}
    for label, split in committed.values():
        tally[label, split] = tally.get((label, split), 0) + 1
    assert tally == {(0, "train"): 69, (0, "test"): 29, (1, "test"): 155}


def test_brainmri_prepare_reproduces_the_committed_split(tmp_path):
    fake_brainmri(tmp_path / "raw", brainmri_names())
    written = prepare("brainmri", tmp_path / "raw", tmp_path / "out")
    assert written == {"train/good": 69, "test/good": 29, "test/bad": 155}
    committed = read_split_file(SPLITS_DIR / "brainmri.csv")
    for name, (label, split) in committed.items():
        folder = "test/bad" if label else f"{split}/good"
        assert (tmp_path / "out" / folder / name.replace("/", "_")).is_file(), name
    assert sum(1 for p in (tmp_path / "out").rglob("*") if p.is_file()) == 253 + 1
    assert read_split_file(tmp_path / "out" / "split.csv") == committed


def test_brainmri_prepare_names_missing_and_unexpected_files(tmp_path):
    raw = tmp_path / "raw"
    names = [n for n in brainmri_names() if n != "yes/Y101.jpg"] + ["yes/Y73-Kian.jpg"]
    fake_brainmri(raw, names, duplicate=False)
    with pytest.raises(DatasetError, match=r"1 missing \('yes/Y101.jpg'\); 1 unexpected"
                                           r" \('yes/Y73-Kian.jpg'\)"):  # fmt: skip
        prepare("brainmri", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (raw / "yes" / "Y73-Kian.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 missing \('yes/Y101.jpg'\)\. Use"):
        prepare("brainmri", raw, tmp_path / "out")
    # a known partial copy (154 tumour images) can still be split by the same rule on request
    written = prepare("brainmri", raw, tmp_path / "out", check_counts=False)
    assert written == {"train/good": 69, "test/good": 29, "test/bad": 154}


def test_check_prints_a_summary_and_a_json_last_line(tmp_path, capsys):
    args = [f"dataset.root={tmp_path}", "dataset.n_train=5", "dataset.n_test_normal=2",
            "dataset.n_test_anomalous=3"]  # fmt: skip
    assert check_main(["dataset=synthetic", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["train"] == {"normal": 5}
    assert summary["test"] == {"normal": 2, "anomalous": 3} and summary["masks"] == 3
    assert any("image sizes: 128x128 x10" in line for line in lines)
    assert check_main(["dataset=mvtec", f"dataset.root={tmp_path / 'nope'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_decode_lists_every_problem(tmp_path, capsys):
    mvtec_tree(tmp_path)
    base = tmp_path / "bottle"
    (base / "train/good/007.png").write_bytes(b"garbage")
    jpeg = write_jpeg(base / "train/good/008.jpg", size=64)
    jpeg.write_bytes(jpeg.read_bytes()[:600])  # truncated: the header still reads
    (base / "ground_truth/crack/000_mask.png").write_bytes(b"\x89PNG broken")
    write_mask(base / "ground_truth/hole/000_mask.png", size=20)
    args = ["dataset=mvtec", f"dataset.root={tmp_path}", "dataset.category=bottle"]
    assert check_main(["--decode", *args]) == 1
    err = capsys.readouterr().err
    for name in ("007.png", "008.jpg", "crack/000_mask.png", "hole/000_mask.png: mask is 20x20"):
        assert name in err, name
    assert "4 problems" in err and "mask_resize=true" in err and "on_bad_image=skip" in err
    assert check_main(args) == 2  # without --decode: the header check stops at the masks
    capsys.readouterr()
    assert check_main(["--decode", *args, "dataset.on_bad_image=skip"]) == 1
    assert "set dataset.on_bad_image" not in capsys.readouterr().err  # no advice already taken
    for path in (base / "train/good/007.png", jpeg):
        path.unlink()
    write_mask(base / "ground_truth/crack/000_mask.png")
    assert check_main(["--decode", *args, "dataset.mask_resize=true"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["masks"] == 3


@pytest.mark.e2e
def test_check_runs_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "adlab.data.check",
        "dataset=synthetic",
        f"dataset.root={tmp_path}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["test"]["anomalous"] == 24
