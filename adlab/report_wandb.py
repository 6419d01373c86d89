"""`adlab.report <sweep dir> --wandb`: the sweep's table as W&B Tables in a run of its own.

The run joins the sweep's group (the jobs' group, adlab.tracking.group_name), so the W&B
workspace of a sweep shows its jobs and its table together. Offline (no login, or
WANDB_MODE=offline) the run is written under <sweep dir>/wandb/ for `wandb sync`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from adlab.paper import paper_value
from adlab.report import cell_rows, paper_blocks, table
from adlab.tracking import group_name, wandb_mode

CELL_COLUMNS = ["metric", "method", "dataset", "mean", "std", "n"]


def wide_rows(results: list[dict], metric: str, pooled: bool) -> tuple[list[str], list[list]]:
    """The markdown table of one metric: a row per method, "mean ± std" per dataset, row mean,
    and a "paper: <method>" row where the runs' preset publishes numbers (adlab.paper)."""
    methods, datasets, cells = table(results, metric, pooled)
    blocks = paper_blocks(results)
    rows = []
    for method in dict.fromkeys(r.get("method") or "?" for r in results):
        values = [paper_value(blocks, method, metric, d) for d in datasets]
        if any(v is not None for v in values):
            rows.append(
                [
                    f"paper: {method}",
                    *("-" if v is None else f"{v:.1f}" for v in values),
                    paper_value(blocks, method, metric, "mean"),
                ]
            )
    for m in methods:
        row = [m]
        for d in datasets:
            values = cells.get((m, d), [])
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            row.append(f"{statistics.fmean(values):.1f} ± {std:.1f}" if values else "-")
        means = [statistics.fmean(cells[(m, d)]) for d in datasets if cells.get((m, d))]
        row.append(round(statistics.fmean(means), 2) if means else None)
        rows.append(row)
    return ["method", *datasets, "mean"], rows


def log_report(
    root: Path, results: list[dict], metrics: list[str], pooled: bool, project: str = "adlab"
) -> Path:
    """Log `report/cells` (long form) and `report/<metric>` (as printed) in a W&B run of the
    sweep's group; returns the run's local directory."""
    import wandb

    mode = wandb_mode("auto")
    run = wandb.init(
        project=project,
        group=group_name(root),
        job_type="report",
        name=f"report {root.name}",
        dir=str(root),
        mode=mode,
        config={"root": str(root.resolve()), "metrics": metrics, "jobs": len(results)},
        reinit="finish_previous",
    )
    try:
        tables = {
            "report/cells": wandb.Table(
                columns=CELL_COLUMNS, data=cell_rows(results, metrics, pooled)
            )
        }
        for metric in metrics:
            columns, rows = wide_rows(results, metric, pooled)
            if rows:
                tables[f"report/{metric}"] = wandb.Table(columns=columns, data=rows)
        run.log(tables)
        return Path(run.dir).parent
    finally:
        run.finish()
