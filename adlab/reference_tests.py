"""The test phase of a few-shot method: one test per support set with the same trained weights.

The run's metrics are the mean over the sets; each set's metrics and files and the standard
deviation (over sets, n-1) go to results.json, the loggers (test/<set>/<metric>,
test/<metric>_std) and <run dir>/support_sets/<set>.txt. A method without supports is tested once,
as before. The checkpoint that was tested then carries the first set's support features.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from adlab.data.support import SupportSet


def mean_and_std(
    per_set: Sequence[Mapping[str, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the sample standard deviation (0 for one set) over the sets."""
    names = dict.fromkeys(k for metrics in per_set for k in metrics)
    mean, std = {}, {}
    for name in names:
        values = [float(m.get(name, math.nan)) for m in per_set]
        mean[name] = statistics.fmean(values)
        std[name] = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def write_support_files(run_dir: Path, support: SupportSet) -> str:
    folder = run_dir / "support_sets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{support.label}.txt"
    path.write_text("".join(f"{f}\n" for f in support.files))
    return str(path)


def test_per_reference_set(trainer, method, datamodule, loggers, run_dir: Path,
                           ckpt_path: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Test `method` once, or once per support set; returns the results.json entries."""
    sets = datamodule.reference_sets() if method.references_needed else []
    loader = datamodule.test_dataloader()
    if not sets:  # no supports, or a checkpoint's stored ones
        trainer.test(method, dataloaders=loader, ckpt_path=ckpt_path, verbose=False)
        return {}
    records, first = [], None
    for support in sets:
        method.reference_images = datamodule.reference_images(support)
        method.test_prefix = f"test/{support.label}" if len(sets) > 1 else "test"
        trainer.test(method, dataloaders=loader, ckpt_path=ckpt_path, verbose=False)
        records.append({
            "label": support.label,
            "seed": support.seed,
            "files": support.files,
            "list": write_support_files(run_dir, support),
            "metrics": dict(method.test_results),
        })  # fmt: skip
        if first is None:
            first = (method.visuals, method.worst, method.evaluator,
                     method.test_results_by_category, stored_references(method.model))  # fmt: skip
    method.test_prefix = "test"
    method.visuals, method.worst, method.evaluator, method.test_results_by_category, refs = first
    for name, value in refs.items():  # the network keeps the first set's support features
        method.model.register_reference(name, value)
    mean, std = mean_and_std([r["metrics"] for r in records])
    method.test_results = mean
    if len(sets) > 1:
        log_summary(loggers, mean, std, trainer.global_step)
    return {"metrics_std": std, "support_sets": records}


def stored_references(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.references().items()}


def log_summary(loggers, mean: Mapping[str, float], std: Mapping[str, float], step: int) -> None:
    """The mean over support sets as test/<metric> and its std as test/<metric>_std."""
    values = {f"test/{k}": v for k, v in mean.items()}
    values.update({f"test/{k}_std": v for k, v in std.items()})
    for lg in loggers:
        lg.log_metrics(values, step=step)
        lg.save()


def store_references(checkpoint: Path, method) -> None:
    """Write the network's current support features into a saved checkpoint, so that the file
    scores new images without a dataset (adlab.evaluate with sampler=full, load_model)."""
    if not checkpoint.is_file():
        return
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for name, value in stored_references(method.model).items():
        ckpt["state_dict"][f"model.{name}"] = value.cpu()
    tmp = checkpoint.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(checkpoint)
