"""Expand a benchmark plan (the `benchmark:` block of experiment=bench_*) into its jobs.

A benchmark is a union of per-method sweeps with different datasets and settings, which Hydra's
cartesian sweeper cannot express; the plan lists them declaratively and this module turns it into
one override list per job. The sweeper (adlab/sweeper.py) launches exactly these lists and
`python -m adlab.plan` counts and times the same ones, so the two always agree.

Plan keys: name, table_per (benchmark | dataset), seeds, datasets, categories {dataset: [..]},
roots {dataset: folder}, only_available, methods (row filter), overrides {method: [..]} (for
every row of that method, the first word of the row),
lodo_members, shots, jobs: [{row, datasets, experiment | method, settings, paper, borrowed,
few_shot, lodo, seed_key}].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

JOB_KEYS = {
    "row", "datasets", "experiment", "method", "settings", "paper", "borrowed", "few_shot",
    "lodo", "seed_key",
}  # fmt: skip
PLAN_KEYS = {
    "name", "table_per", "seeds", "datasets", "categories", "roots", "only_available", "methods",
    "overrides", "lodo_members", "shots", "jobs",
}  # fmt: skip


class PlanError(ValueError):
    """A malformed benchmark plan; the message names the key and the fix."""


@dataclass(frozen=True)
class Need:
    """One dataset (and category) a job reads, at the folder the job will use."""

    dataset: str
    category: str | None = None
    root: str | None = None

    def label(self) -> str:
        return f"{self.dataset}/{self.category}" if self.category else self.dataset


@dataclass
class Job:
    """One run of the benchmark: its report row and table, and its override list."""

    row: str
    table: str
    dataset: str
    category: str | None
    seed: int
    shots: int | None
    overrides: list[str]
    needs: list[Need] = field(default_factory=list)
    borrowed: str | None = None
    benchmark: str = ""


def _quote(value: str) -> str:
    """A Hydra override value that stays a string ("01", paths with odd characters)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_plan(plan: Mapping) -> None:
    unknown = sorted(set(plan) - PLAN_KEYS)
    if unknown:
        raise PlanError(f"benchmark: unknown keys {unknown}; use {sorted(PLAN_KEYS)}.")
    for key in ("name", "seeds", "datasets", "jobs"):
        if not plan.get(key):
            raise PlanError(f"benchmark.{key} is missing or empty; see adlab/benchmark.py.")
    if plan.get("table_per", "benchmark") not in ("benchmark", "dataset"):
        raise PlanError("benchmark.table_per must be benchmark or dataset.")
    for i, job in enumerate(plan["jobs"]):
        where = f"benchmark.jobs[{i}]"
        bad = sorted(set(job) - JOB_KEYS)
        if bad:
            raise PlanError(f"{where}: unknown keys {bad}; use {sorted(JOB_KEYS)}.")
        if not job.get("row") or not job.get("datasets"):
            raise PlanError(f"{where} needs row and datasets.")
        if bool(job.get("experiment")) == bool(job.get("method")):
            raise PlanError(f"{where} ({job['row']}): give experiment (a preset) or method.")
        if job.get("few_shot") and not plan.get("shots"):
            raise PlanError(f"{where} is few_shot: set benchmark.shots, e.g. [2, 4, 8].")
        if job.get("lodo") and not plan.get("lodo_members"):
            raise PlanError(f"{where} is lodo: set benchmark.lodo_members.")


def _wanted(plan: Mapping, row: str) -> bool:
    methods = plan.get("methods")
    return not methods or row in methods or row.split()[0] in methods


def split_user_overrides(arguments: list[str]) -> list[str]:
    """The command line minus what the plan itself handles (experiment=, benchmark.*)."""
    out = []
    for arg in arguments:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key == "experiment" or key == "benchmark" or key.startswith("benchmark."):
            continue
        out.append(arg)
    return out


def expand(plan: Mapping, extra: list[str] | None = None) -> list[Job]:
    """Every job of the plan in a fixed order (entry, dataset, category, shots, seed); `extra`
    (the user's overrides) is appended to each job, after the plan's settings."""
    check_plan(plan)
    categories = plan.get("categories") or {}
    jobs = []
    for entry in plan["jobs"]:
        if not _wanted(plan, str(entry["row"])):
            continue
        for dataset in [d for d in entry["datasets"] if d in plan["datasets"]]:
            for category in categories.get(dataset) or [None]:
                for shots in plan["shots"] if entry.get("few_shot") else [None]:
                    for seed in plan["seeds"]:
                        category = None if category is None else str(category)
                        jobs.append(_job(plan, entry, dataset, category, shots, int(seed), extra))
    if not jobs:
        raise PlanError(
            "the benchmark selects no job: check benchmark.datasets and benchmark.methods against "
            "the datasets and rows of benchmark.jobs."
        )
    return jobs


def _job(plan, entry, dataset, category, shots, seed, extra) -> Job:
    """One job's overrides: settings source, data, shots, settings, seed, the method's extra
    overrides, the user's, then `bench=` (its row and table for the report)."""
    row, name = str(entry["row"]), str(plan["name"])
    roots = {k: str(v) for k, v in (plan.get("roots") or {}).items() if v}
    members = list(plan.get("lodo_members") or [])
    source = entry.get("experiment")
    out = [f"experiment={source}" if source else f"method={entry['method']}", f"dataset={dataset}"]
    if category is not None:
        out.append(f"dataset.category={_quote(category)}")
    if dataset in roots:
        out.append(f"dataset.root={_quote(roots[dataset])}")
    needs = [Need(dataset, category, roots.get(dataset))]
    if entry.get("lodo"):
        out.append(f"protocol.members=[{','.join(members)}]")
        out += [f"+protocol.roots.{m}={_quote(roots[m])}" for m in members if m in roots]
        needs += [Need(m, None, roots.get(m)) for m in members if m != dataset]
    if shots is not None:
        out.append(f"sampler.shots={shots}")
    out += list(entry.get("settings") or [])
    seed_key = entry.get("seed_key") or "seed"
    out.append(f"seed={seed}" if seed_key == "seed" else f"{seed_key}=[{seed}]")
    out += list((plan.get("overrides") or {}).get(row.split()[0]) or [])
    out += list(extra or [])
    table = name if plan.get("table_per", "benchmark") == "benchmark" else dataset
    papers = ",".join(entry.get("paper") or [])
    out.append(f"bench={{name:{name},table:{table},row:{_quote(row)},papers:[{papers}]}}")
    return Job(row, table, dataset, category, seed, shots, out, needs, entry.get("borrowed"), name)


def needs_of(jobs: list[Job]) -> list[Need]:
    """The distinct datasets the jobs read, in first-use order."""
    return list(dict.fromkeys(n for job in jobs for n in job.needs))
