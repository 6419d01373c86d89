"""Benchmark tables (experiment=bench_*): one table per benchmark (or per dataset of it), rows the
plan's rows, columns datasets or categories then the mean, the paper's number beside each cell.

A job of a benchmark carries `config.bench` = {name, table, row, papers} (set by the sweeper),
so rows are the plan's rows (rd4ad, rd4ad k-shot, urd, ...) whatever settings each job used, and
a cell's paper number comes from the presets its own jobs name (`papers`), never from another
dataset's preset. The sweep's benchmark.json lists jobs not run for want of data.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from adlab.paper import PaperError, paper_value, preset_paper
from adlab.report import paper_notes, values_of

TABLE_OF_OVERRIDE = re.compile(r"bench=\{name:([^,}]+),table:([^,}]+)")


def bench_of(result: dict) -> dict | None:
    return (result.get("config") or {}).get("bench")


def table_key(result: dict) -> tuple[str, str]:
    bench = bench_of(result) or {}
    return str(bench.get("name")), str(bench.get("table"))


def _papers(names: list[str], cache: dict) -> list[dict]:
    blocks = []
    for name in names:
        if name not in cache:
            try:
                cache[name] = preset_paper(name)
            except PaperError as err:
                print(f"warning: benchmark paper {name}: {err}")
                cache[name] = None
        if cache[name] is not None and cache[name] not in blocks:
            blocks.append(cache[name])
    return blocks


def cells_of(results: list[dict], metric: str, pooled: bool = False):
    """{(row, column): [values]}, the rows in plan order, sorted columns, {row: paper names}."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    papers: dict[str, list[str]] = defaultdict(list)
    rows: dict[str, None] = {}
    for r in results:
        row = str(bench_of(r)["row"])
        rows.setdefault(row)
        papers[row] += [p for p in bench_of(r).get("papers") or [] if p not in papers[row]]
        for column, value in values_of(r, metric, pooled):
            if value is not None and value == value:
                cells[(row, column)].append(100 * float(value))
    columns = sorted({c for _, c in cells})
    return cells, list(rows), columns, papers


def _cell(values: list[float], paper: float | None) -> str:
    if not values:
        text = "-"
    elif len(values) == 1:
        text = f"{values[0]:.1f}"
    else:
        text = f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"
    return text if paper is None else f"{text} [paper {paper:.1f}]"


def table_markdown(results: list[dict], metric: str, pooled: bool, cache: dict) -> list[str]:
    cells, rows, columns, papers = cells_of(results, metric, pooled)
    if not cells:
        return []
    out = [f"| method | {' | '.join(columns)} | mean |", "|---" * (len(columns) + 2) + "|"]
    used: list[dict] = []
    for row in [r for r in rows if any(cells.get((r, c)) for c in columns)]:
        blocks = _papers(papers[row], cache)
        method = row.split()[0]
        published = [paper_value(blocks, method, metric, c) for c in columns]
        means = [statistics.fmean(cells[(row, c)]) for c in columns if cells.get((row, c))]
        paper_mean = paper_value(blocks, method, metric, "mean")
        if paper_mean is None and published and None not in published:
            paper_mean = statistics.fmean(published)  # type: ignore[arg-type]
        mean = [statistics.fmean(means)] if means else []
        line = [_cell(cells.get((row, c), []), p) for c, p in zip(columns, published)]
        out.append(f"| {row} | " + " | ".join(line) + f" | {_cell(mean, paper_mean)} |")
        if any(p is not None for p in [*published, paper_mean]):
            used += [b for b in blocks if b not in used]
    if used:
        notes = [
            n.replace("; Δ = measured - paper (points).", ".") for n in paper_notes(used, metric)
        ]
        out += ["", *dict.fromkeys(notes)]
    return out


def markdown(results: list[dict], metrics: list[str], pooled: bool, plan: dict) -> str:
    """Every benchmark table, with under each the failed, diverged and not-run jobs."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[table_key(r)].append(r)
    failed = plan.get("failed_by_table", {})
    for key in failed:
        groups.setdefault(key, [])
    cache: dict = {}
    out = []
    for (name, table), members in sorted(groups.items()):
        title = name if table == name else f"{name}: {table}"
        out.append(f"## benchmark {title}\n")
        for metric in metrics:
            lines = table_markdown(
                [r for r in members if r.get("status") != "diverged"], metric, pooled, cache
            )
            if lines:
                out += [f"### {metric} (%), mean ± std over seeds [published]\n", *lines, ""]
        out += _borrowed(plan, name, table, members)
        out += _problems(members, failed.get((name, table), []), plan, name, table)
    return "\n".join(out)


def _borrowed(plan: dict, name: str, table: str, members: list[dict]) -> list[str]:
    notes = [
        b for b in plan.get("borrowed", []) if (b.get("benchmark"), b["table"]) == (name, table)
    ]
    if not notes:
        return []
    lines = ["Settings borrowed where a paper has none:"]
    lines += [f"  {b['row']} on {', '.join(b['datasets'])}: {b['note']}" for b in notes]
    return [*lines, ""]


def _problems(members, failed: list[Path], plan: dict, name: str, table: str) -> list[str]:
    lines = []
    diverged = [r for r in members if r.get("status") == "diverged"]
    if diverged:
        lines.append(f"{len(diverged)} job(s) diverged (non-finite loss, no metrics):")
        for r in diverged:
            info = r.get("divergence", {})
            lines.append(
                f"  {r.get('run_dir')}: step {info.get('step')}, lr {info.get('learning_rates')}"
            )
    if failed:
        lines.append(f"{len(failed)} job(s) without results.json (failed or running):")
        lines += [f"  {d}" for d in failed]
    not_run = [
        j for j in plan.get("not_run", []) if (j.get("benchmark"), j["table"]) == (name, table)
    ]
    if not_run:
        absent = ", ".join(plan.get("missing", {}))
        lines.append(f"{len(not_run)} job(s) not run, their data missing ({absent}):")
        for j in not_run:
            where = j["dataset"] + (f"/{j['category']}" if j.get("category") else "")
            shots = f", {j['shots']}-shot" if j.get("shots") else ""
            lines.append(f"  {j['row']} on {where}{shots}, seed {j['seed']}")
    return [*lines, ""] if lines else []


def read_plan(root: Path, missing: list[Path]) -> dict:
    """The benchmark.json of every sweep under root (jobs not run, missing sets, borrowed
    settings), with the failed job dirs assigned to their tables (read from the bench= override
    in the job's .hydra/overrides.yaml)."""
    plan: dict = {"not_run": [], "missing": {}, "borrowed": []}
    for path in sorted(root.rglob("benchmark.json")):
        sweep = json.loads(path.read_text())
        plan["not_run"] += sweep.get("not_run", [])
        plan["missing"].update(sweep.get("missing", {}))
        plan["borrowed"] += [b for b in sweep.get("borrowed", []) if b not in plan["borrowed"]]
    by_table: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for job_dir in missing:
        overrides = job_dir / ".hydra" / "overrides.yaml"
        found = TABLE_OF_OVERRIDE.search(overrides.read_text()) if overrides.is_file() else None
        key = (found.group(1), found.group(2)) if found else ("?", "?")
        by_table[key].append(job_dir)
    plan["failed_by_table"] = dict(by_table)
    return plan


def write_csv(results: list[dict], metrics: list[str], path: Path, pooled: bool = False) -> None:
    """One line per benchmark, table, row, column and metric: mean, std, n and the paper."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        if r.get("status") != "diverged":
            groups[table_key(r)].append(r)
    cache: dict = {}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["benchmark", "table", "method", "dataset", "metric", "mean", "std", "n", "paper"]
        )
        for (name, table), members in groups.items():
            for metric in metrics:
                cells, rows, columns, papers = cells_of(members, metric, pooled)
                for row in rows:
                    blocks = _papers(papers[row], cache)
                    for column in columns:
                        vals = cells.get((row, column), [])
                        if not vals:
                            continue
                        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                        paper = paper_value(blocks, row.split()[0], metric, column)
                        writer.writerow([
                            name, table, row, column, metric, f"{statistics.fmean(vals):.4f}",
                            f"{std:.4f}", len(vals), "" if paper is None else f"{paper:.1f}",
                        ])  # fmt: skip
