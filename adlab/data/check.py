"""Check a dataset folder before training: counts, masks, image sizes and modes.

    python -m adlab.data.check dataset=<name> dataset.root=<dir> [dataset.category=<c>]

The last line printed is one JSON object (the datamodule summary) for scripts and CI.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from adlab.data.datamodule import AnomalyDataModule
from adlab.data.io import read_image
from adlab.data.records import DatasetError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="data_check", overrides=overrides)


def describe(dm: AnomalyDataModule, max_files: int = 2000) -> list[str]:
    """Readable lines: counts per split and label, masks, image sizes and modes (from headers)."""
    lines = [f"dataset {dm.config.get('name')} at {dm.root}"]
    for split in ("train", "valid", "test"):
        samples = dm.splits.get(split, [])
        labels = Counter(s.label for s in samples)
        cats = sorted({s.category for s in samples})
        lines.append(
            f"  {split:5s}: {labels[0]:6d} normal {labels[1]:6d} anomalous"
            f"  categories: {', '.join(cats) or '-'}"
        )
    summary = dm.summary()
    lines.append(
        f"  masks: {summary['masks']} (pixel ground truth: {'yes' if dm.has_masks else 'no'})"
    )
    everything = [s for split in dm.splits.values() for s in split]
    sizes, modes = Counter(), Counter()
    for sample in everything[:max_files]:
        size, mode = _header(sample.path)
        sizes[f"{size[0]}x{size[1]}"] += 1
        modes[mode] += 1
    shown = f" (first {max_files} files)" if len(everything) > max_files else ""
    lines.append(
        f"  image sizes{shown}: " + ", ".join(f"{k} x{v}" for k, v in sizes.most_common(5))
    )
    lines.append("  image modes: " + ", ".join(f"{k} x{v}" for k, v in modes.most_common()))
    if dm.skipped:
        lines.append(
            f"  skipped (on_bad_image=skip): {len(dm.skipped)}: " + ", ".join(dm.skipped[:5])
        )
    lines.append(f"  fingerprint: {dm.fingerprint}")
    return lines


def _header(path: str) -> tuple[tuple[int, int], str]:
    if path.lower().endswith(".dcm"):
        return read_image(path).size, "DICOM"
    with Image.open(path) as image:
        return image.size, image.mode


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    cfg = load_config(overrides)
    dm = AnomalyDataModule(
        dataset=cfg.dataset, sampler=cfg.sampler, image_size=cfg.image_size,
        crop_size=cfg.data.crop_size, resample=cfg.data.resample, normalize=cfg.data.normalize,
        batch_size=1, eval_batch_size=1, num_workers=0, seed=cfg.seed,
    )  # fmt: skip
    dm.config["cache"] = "none"  # a check reads headers only; training decodes
    try:
        dm.setup()
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(dm)))
    print(json.dumps(dm.summary()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
