"""Hydra sweeper of the benchmark presets: the plan's jobs, after one check of all their data.

Hydra's basic sweeper launches a cartesian product; a benchmark is a union of per-method sweeps,
so this sweeper launches the override lists adlab.benchmark expands from the preset's
`benchmark:` block. It checks every dataset first (a Hydra callback could stop the sweep but not
drop jobs, which benchmark.only_available=true needs), then hands the jobs to the configured
launcher, so joblib and submitit/SLURM work unchanged. Hydra loads sweepers only from the
hydra_plugins package: hydra_plugins/adlab_benchmark is the thin class, the logic is here.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from adlab.benchmark import Job, PlanError, expand, needs_of, split_user_overrides
from adlab.data.presence import inspect, missing_report

log = logging.getLogger(__name__)


def plan_jobs(config: DictConfig, arguments: list[str]) -> list[Job]:
    """The jobs of the composed config's benchmark block with the command line's overrides."""
    if OmegaConf.select(config, "benchmark") is None:
        raise HydraException(
            "hydra/sweeper=benchmark needs a benchmark: block; use experiment=bench_medical or "
            "experiment=bench_industrial."
        )
    extra = split_user_overrides(arguments)
    refuse_sweeps(extra)
    plan = OmegaConf.to_container(config.benchmark, resolve=True)
    return expand(plan, extra)  # type: ignore[arg-type]


def refuse_sweeps(arguments: list[str]) -> None:
    """A benchmark's seeds, datasets and methods come from its plan, never from `a=1,2`."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise HydraException(
            f"{sweeps}: a benchmark's seeds, datasets and methods come from its plan; use "
            "benchmark.seeds=[..], benchmark.datasets=[..] or benchmark.methods=[..] instead."
        )


def available(jobs: list[Job]) -> tuple[list[Job], dict]:
    """The jobs whose data is all present, and {need: check result} of the absent sets."""
    results = {need: inspect(need) for need in needs_of(jobs)}
    missing = {n: r for n, r in results.items() if "error" in r}
    runnable = [j for j in jobs if not any(n in missing for n in j.needs)]
    return runnable, missing


def launch(sweeper, arguments: list[str]) -> Any:
    """The sweep: expand, check the data once, save the plan, launch the runnable jobs."""
    config, launcher = sweeper.config, sweeper.launcher
    try:
        jobs = plan_jobs(config, arguments)
    except (PlanError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    runnable, missing = available(jobs)
    only_available = bool(OmegaConf.select(config, "benchmark.only_available"))
    if missing and not only_available:
        # one plain list and exit status 2, not a traceback (Hydra reports Exceptions with one)
        print(f"error: {missing_report(missing)}\nNo job was started.", file=sys.stderr)
        raise SystemExit(2)
    if missing:
        log.warning(missing_report(missing))
        log.warning(f"benchmark.only_available=true: {len(runnable)} of {len(jobs)} jobs run.")
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    write_plan(sweep_dir / "benchmark.json", jobs, runnable, missing)
    size = sweeper.max_batch_size or max(1, len(runnable))
    returns, index = [], 0
    for start in range(0, len(runnable), size):
        batch = [job.overrides for job in runnable[start : start + size]]
        sweeper.validate_batch_is_legal(batch)
        results = launcher.launch(batch, initial_job_idx=index)
        for r in results:
            _ = r.return_value  # raises if the job failed, as the basic sweeper does
        index += len(batch)
        returns.append(results)
    return returns


def write_plan(path: Path, jobs: list[Job], runnable: list[Job], missing: dict) -> None:
    """The sweep's plan beside its jobs: what ran, and what did not for want of data (report)."""
    ran = {id(j) for j in runnable}
    payload = {
        "jobs": len(jobs),
        "launched": len(runnable),
        "not_run": [
            {"benchmark": j.benchmark, "row": j.row, "table": j.table, "dataset": j.dataset,
             "category": j.category, "seed": j.seed, "shots": j.shots}
            for j in jobs if id(j) not in ran
        ],
        "missing": {n.label(): r["error"] for n, r in missing.items()},
        "borrowed": borrowed(jobs),
    }  # fmt: skip
    path.write_text(json.dumps(payload, indent=2))


def borrowed(jobs: list[Job]) -> list[dict]:
    """The plan's borrowed-settings notes, one per (table, row, note) with its datasets."""
    notes: dict[tuple, list[str]] = {}
    for j in jobs:
        if j.borrowed:
            datasets = notes.setdefault((j.benchmark, j.table, j.row, j.borrowed), [])
            if j.dataset not in datasets:
                datasets.append(j.dataset)
    return [
        {"benchmark": b, "table": t, "row": r, "note": n, "datasets": d}
        for (b, t, r, n), d in notes.items()
    ]
