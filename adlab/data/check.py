"""Check a dataset folder before training: counts, masks, image sizes and modes.

    python -m adlab.data.check dataset=<name> dataset.root=<dir> [dataset.category=<c>]
    python -m adlab.data.check --decode dataset=<name> dataset.root=<dir>

Without --decode, images are checked by their headers (masks are decoded); --decode decodes
every image and mask (with a progress bar) and lists every problem at once. The last line
printed is one JSON object (the datamodule summary) for scripts and CI. Exit status: 0 no
problem, 1 problems found by --decode, 2 the set cannot be read or set up.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from adlab.data.datamodule import AnomalyDataModule
from adlab.data.dataset import default_workers
from adlab.data.io import read_image
from adlab.data.records import DatasetError
from adlab.data.validate import RESIZE_HINT, SKIP_HINT_MANY, MaskSizeError, one_class_splits
from adlab.paths import CONF_DIR

SKIPPED_NOTE = "A run leaves the undecodable ones out (dataset.on_bad_image=skip is set)."


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
    if dm.unsupported:
        lines.append(
            f"  not read (look like images, unsupported format): {len(dm.unsupported)}: "
            + ", ".join(dm.unsupported[:5])
        )
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


def decode_all(dm: AnomalyDataModule) -> list[str]:
    """Every problem of the set, not only the first: images or masks that do not decode fully,
    masks of another size than their image, and test splits without one of the classes."""
    samples = dm.read()
    dm.config["verify"] = "full"
    cache = dm.make_cache(len(samples))
    workers = int(dm.config.get("decode_workers") or default_workers())
    failed = cache.load(samples, workers, progress=True)
    problems = [str(err) for err in failed.values()]
    hints = []
    if any(not isinstance(err, MaskSizeError) for err in failed.values()):
        skip_set = dm.config.get("on_bad_image") == "skip"
        hints.append(SKIPPED_NOTE if skip_set else SKIP_HINT_MANY)
    if any(isinstance(err, MaskSizeError) for err in failed.values()):
        hints.append(RESIZE_HINT)
    if not dm.allow_one_class:
        one_class = one_class_splits(s for s in samples if s.path not in failed)
        problems += [f"{line}; the test metrics need both classes." for line in one_class]
        if one_class:
            hints.append("Set eval.allow_one_class=true to test a split with one class anyway.")
    if problems:
        problems.append(f"{len(problems)} problems. " + " ".join(hints))
    return problems


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    decode = "--decode" in args
    cfg = load_config([a for a in args if a != "--decode"])
    dm = AnomalyDataModule(
        dataset=cfg.dataset, sampler=cfg.sampler, image_size=cfg.image_size,
        crop_size=cfg.data.crop_size, resample=cfg.data.resample, normalize=cfg.data.normalize,
        batch_size=1, eval_batch_size=1, num_workers=0, seed=cfg.seed,
        allow_one_class=cfg.eval.allow_one_class,
    )  # fmt: skip
    dm.config["cache"] = "none"  # a check keeps no pixels
    try:
        if decode:
            problems = decode_all(dm)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if problems:
                return 1
        dm.config["verify"] = "header"  # decoded above, or a quick check asked for
        dm.setup()
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(dm)))
    print(json.dumps(dm.summary()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
