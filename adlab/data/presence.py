"""Is every dataset a benchmark needs there? One headers-only check per set, before any job.

The check is adlab.data.check's (the datamodule's setup with `verify: header`, no pixels kept),
run once per (dataset, category, folder) so that a sweep of hundreds of jobs stops with one list
of what is missing and how to get each, instead of failing job by job.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from adlab.benchmark import Need
from adlab.data.datamodule import AnomalyDataModule
from adlab.data.records import DatasetError
from adlab.paths import CONF_DIR


def dataset_config(need: Need, conf_dir: str | Path = CONF_DIR) -> dict:
    """conf/dataset/<name>.yaml over dataset_defaults, with the need's category and folder."""
    conf = Path(conf_dir)
    path = conf / "dataset" / f"{need.dataset}.yaml"
    if not path.is_file():
        raise DatasetError(
            f"dataset={need.dataset}: no config {path}; benchmark.datasets names it."
        )
    cfg = OmegaConf.merge(OmegaConf.load(conf / "dataset_defaults.yaml"), OmegaConf.load(path))
    if need.category is not None:
        cfg.category = need.category
    if need.root is not None:
        cfg.root = need.root
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def inspect(need: Need, conf_dir: str | Path = CONF_DIR) -> dict:
    """The set's counts (the check's summary), or {"error": why} when it cannot be read."""
    try:
        config = dataset_config(need, conf_dir)
        dm = AnomalyDataModule(
            dataset=config, sampler={"name": "full"}, image_size=64, crop_size=None,
            resample="bilinear", normalize="none", batch_size=1, eval_batch_size=1,
            num_workers=0, seed=0, allow_one_class=True,
        )  # fmt: skip
        dm.config["cache"] = "none"
        dm.config["verify"] = "header"
        dm.setup()
    except (DatasetError, OSError) as err:
        return {"error": str(err), "root": _root(need, conf_dir)}
    return {**dm.summary(), "root": str(dm.root)}


def _root(need: Need, conf_dir) -> str:
    try:
        return str(dataset_config(need, conf_dir).get("root"))
    except DatasetError:
        return "?"


def sources(conf_dir: str | Path = CONF_DIR) -> dict[str, str]:
    path = Path(conf_dir) / "dataset_sources.yaml"
    return dict(OmegaConf.load(path)) if path.is_file() else {}


def missing_report(missing: dict[Need, dict], conf_dir: str | Path = CONF_DIR) -> str:
    """One list: each absent set, the folder looked at, why, and how to get it."""
    hints = sources(conf_dir)
    lines = [f"{len(missing)} dataset(s) the benchmark needs are missing or unreadable:"]
    for need, info in missing.items():
        lines.append(f"  {need.label()} at {info.get('root')}: {info['error']}")
        lines.append(f"      get it: {hints.get(need.dataset, 'see README.md, Datasets')}")
    lines.append(
        "Point each at its folder with benchmark.roots.<dataset>=<folder> (or set ADLAB_DATA), "
        "or run what is there with benchmark.only_available=true."
    )
    return "\n".join(lines)
