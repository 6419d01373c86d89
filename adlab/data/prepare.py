"""Turn a raw Kaggle download into adlab's standard layout with a fixed, committed split.

    python -m adlab.data.prepare headct   --raw <download dir> --out <root>
    python -m adlab.data.prepare brainmri --raw <download dir> --out <root>

Neither benchmark has an official split. adlab's rule, fixed forever (version "adlab-split-v1"):
every anomalous image goes to test; the normals are ordered by sha256("adlab-split-v1/" + file
name) and the first 30% (rounded) are test normals, the rest train. Hash order depends only on the
file names, so every user gets the same split from the same download without a random-number
generator whose behaviour could change between library versions; 30% keeps most normals for
training (these sets are small) while leaving about 30 test normals for a stable AUROC.
The split is recorded in adlab/data/splits/<name>.csv (file, label, split); prepare checks the
download against it and writes <out>/{train/good, test/good, test/bad} plus <out>/split.csv.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from adlab.data.io import is_image_file
from adlab.data.records import DatasetError

SPLITS_DIR = Path(__file__).parent / "splits"
SPLIT_VERSION = "adlab-split-v1"
TEST_NORMAL_FRACTION = 0.3


@dataclass(frozen=True)
class RawImage:
    """One file of the raw download: its path, its name as listed in the split, and its label."""

    path: Path
    name: str
    label: int


def assign_split(names_and_labels: list[tuple[str, int]]) -> dict[str, str]:
    """adlab-split-v1: anomalous -> test; normals in hash order, the first 30% -> test."""
    normals = sorted(
        (name for name, label in names_and_labels if label == 0),
        key=lambda n: hashlib.sha256(f"{SPLIT_VERSION}/{n}".encode()).hexdigest(),
    )
    n_test = round(len(normals) * TEST_NORMAL_FRACTION)
    split = {name: "test" for name, label in names_and_labels if label == 1}
    split.update({name: "test" if i < n_test else "train" for i, name in enumerate(normals)})
    return split


def _find_dir(raw: Path, candidates: list[str], what: str) -> Path:
    for candidate in candidates:
        if (raw / candidate).is_dir():
            return raw / candidate
    tried = ", ".join(str(raw / c) for c in candidates)
    raise DatasetError(f"no {what} folder in the download; looked for: {tried}")


def collect_headct(raw: Path) -> list[RawImage]:
    """Kaggle head-ct-hemorrhage: head_ct/head_ct/000.png..199.png, labels.csv (id, hemorrhage)."""
    labels_file = next((p for p in (raw / "labels.csv", raw / "head_ct" / "labels.csv")
                        if p.is_file()), None)  # fmt: skip
    if labels_file is None:
        raise DatasetError(
            f"missing {raw / 'labels.csv'} (columns: id, hemorrhage) in the download"
        )
    images = _find_dir(raw, ["head_ct/head_ct", "head_ct", "."], "head_ct image")
    out = []
    with labels_file.open(newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        fields = {f.strip(): f for f in reader.fieldnames or ()}
        if "id" not in fields or "hemorrhage" not in fields:
            raise DatasetError(f"{labels_file}: expected columns 'id, hemorrhage', got {fields}")
        for row in reader:
            name = f"{int(row[fields['id']]):03d}.png"
            path = images / name
            if not path.is_file():
                raise DatasetError(
                    f"{labels_file} lists id {row[fields['id']]}, but {path} is missing"
                )
            out.append(RawImage(path, name, int(row[fields["hemorrhage"]])))
    return out


def collect_brainmri(raw: Path) -> list[RawImage]:
    """Kaggle brain-mri-images-for-brain-tumor-detection: yes/ (155 tumour) and no/ (98 normal),
    mixed names and extensions ("no/1 no.jpeg", "no/No22.jpg", "yes/Y92.png" next to
    "yes/Y92.jpg"). The download also holds a duplicate copy in brain_tumor_dataset/: one is used.
    Names are kept as "<folder>/<file>" so the committed split can list both folders."""
    base = raw if (raw / "yes").is_dir() else raw / "brain_tumor_dataset"
    out = []
    for folder, label in (("no", 0), ("yes", 1)):
        directory = _find_dir(base, [folder], f"brain-mri {folder}/")
        for path in sorted(p for p in directory.iterdir() if p.is_file() and is_image_file(p)):
            out.append(RawImage(path, f"{folder}/{path.name}", label))
    return out


BENCHMARKS = {
    "headct": (collect_headct, {0: 100, 1: 100}),
    "brainmri": (collect_brainmri, {0: 98, 1: 155}),
}


def read_split_file(path: Path) -> dict[str, tuple[int, str]]:
    with path.open(newline="") as handle:
        return {row["file"]: (int(row["label"]), row["split"]) for row in csv.DictReader(handle)}


def write_split_file(path: Path, images: list[RawImage], split: dict[str, str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "split"])
        for image in sorted(images, key=lambda i: i.name):
            writer.writerow([image.name, image.label, split[image.name]])


def check_file_list(raw: Path, split_file: Path, found: set[str], listed: set[str]) -> None:
    """Name the files the download lacks or adds against the committed list, so a partial or
    extended copy (several circulate on GitHub) is caught before any image is written."""
    missing, unexpected = sorted(listed - found), sorted(found - listed)
    if not missing and not unexpected:
        return

    def show(names: list[str]) -> str:
        return ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")

    parts = [f"{len(missing)} missing ({show(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({show(unexpected)})"] if unexpected else []
    raise DatasetError(
        f"{raw} does not match the file list committed in {split_file}: {'; '.join(parts)}. "
        "Use the original, unmodified Kaggle download, or pass --no-count-check to split a "
        "different copy by the same rule (its results are then not comparable)."
    )


def prepare(name: str, raw: Path, out: Path, check_counts: bool = True,
            split_file: Path | None = None) -> dict[str, int]:  # fmt: skip
    """Write the standard layout for benchmark `name`; returns counts per output folder.

    check_counts=False accepts a download that differs from the published one (counts or file
    list): the same rule splits whatever is there and <out>/split.csv records the result."""
    if name not in BENCHMARKS:
        raise DatasetError(f"prepare knows {', '.join(BENCHMARKS)}, not {name!r}")
    if not raw.is_dir():
        raise DatasetError(f"--raw {raw} does not exist: point it at the unpacked Kaggle download")
    collect, expected = BENCHMARKS[name]
    images = collect(raw)
    split_file = split_file or SPLITS_DIR / f"{name}.csv"
    committed = read_split_file(split_file) if check_counts and split_file.is_file() else None
    if committed is not None:
        check_file_list(raw, split_file, {i.name for i in images}, set(committed))
    counts = {label: sum(1 for i in images if i.label == label) for label in (0, 1)}
    if check_counts and counts != expected:
        raise DatasetError(
            f"{raw}: found {counts[0]} normal and {counts[1]} anomalous images, expected "
            f"{expected[0]} and {expected[1]} for {name}; is this the complete Kaggle download?"
        )
    split = assign_split([(i.name, i.label) for i in images])
    if committed is not None:
        found = {i.name: (i.label, split[i.name]) for i in images}
        if found != committed:
            diff = sorted(set(found.items()) ^ set(committed.items()))[:3]
            raise DatasetError(
                f"{raw} does not match the committed split {split_file} (first differences: "
                f"{diff}); use the original Kaggle download."
            )
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"--out {out} exists and is not empty; remove it or pick another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    written = {"train/good": 0, "test/good": 0, "test/bad": 0}
    try:
        for image in images:
            folder = "test/bad" if image.label else f"{split[image.name]}/good"
            target = temp / folder / image.name.replace("/", "_")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.path, target)
            written[folder] += 1
        write_split_file(temp / "split.csv", images, split)
        if out.exists():
            out.rmdir()
        os.rename(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adlab.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--raw", type=Path, required=True, help="the unpacked Kaggle download")
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write")
    parser.add_argument(
        "--no-count-check",
        action="store_true",
        help="accept a download whose counts or file names differ from the published ones "
        "(split by the same rule, recorded in <out>/split.csv)",
    )
    args = parser.parse_args(argv)
    try:
        written = prepare(args.name, args.raw, args.out, check_counts=not args.no_count_check)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in written.items()))
    print(f"use it with: python -m adlab.run dataset={args.name} dataset.root={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
