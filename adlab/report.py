"""Aggregate the results.json files of a (multi)run into paper-style tables.

    python -m adlab.report multirun/2026-11-24/10-00-00                 # markdown to stdout
    python -m adlab.report multirun/... --metrics image_auroc aupro --csv table.csv
    python -m adlab.report multirun/... --plot table.png     # bars per method, panel per dataset
    python -m adlab.report multirun/... --wandb              # the table as W&B Tables (own run)

Rows are methods, columns datasets (with the category when there is one, and the shots of a k-shot
run); a cell is the mean over seeds in percent, with the standard deviation when several seeds
ran; a few-shot run tested against several support sets counts each set as a seed. A multi-class
run (one model for several categories, e.g. Uni-Medical) gives one column per category, so the
row mean is the mean over classes that multi-class tables report; --pooled shows its pooled
metric instead. Runs are grouped by every override except the seeds (and the row and column
keys): a sweep over `method.optimizer.lr=...` gives one row per value, labelled with the keys that
differ, and the mean and std of a cell are over seeds only. Failed jobs (no results.json) are
listed so that a partial sweep is never mistaken for a complete one.

Runs of a preset carry its published numbers (`config.paper`, adlab/paper.py): each measured
method gets a "paper" row and a "Δ" row per measured row (measured - paper, in points). For
`--metrics code_pdd/image_auroc` the paper row shows the numbers the paper's code measured that
way, when the preset says so (`paper.code_metrics: pdd`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from adlab.paper import PaperError, check_paper, paper_value

DEFAULT_METRICS = ("image_auroc", "pixel_auroc", "aupro")


# Overrides that never define a row: the seed (averaged over), the row and column keys
# themselves, and settings that do not change the numbers (with everything under them).
# pdd_ablation names its row itself (method_name pdd_t1s1, ...).
NOT_GROUPED = (
    "seed",
    "sampler.seeds",
    "method",
    "dataset",
    "dataset.category",
    "sampler.shots",
    "pdd_ablation",
    "trainer.enable_progress_bar",
)
NOT_GROUPED_UNDER = ("hydra", "logger")


def load_results(root: Path) -> tuple[list[dict], list[Path]]:
    """All results.json under root, and the job dirs (with a .hydra folder) that have none.
    Each result gets `overrides` (from results.json, else the job's .hydra/overrides.yaml)."""
    found = []
    for path in sorted(root.rglob("results.json")):
        result = json.loads(path.read_text())
        if "overrides" not in result:
            result["overrides"] = read_overrides(path.parent / ".hydra" / "overrides.yaml")
        found.append(result)
    missing = [
        d.parent for d in sorted(root.rglob(".hydra")) if not (d.parent / "results.json").exists()
    ]
    return found, missing


def read_overrides(path: Path) -> list[str]:
    """Hydra's overrides.yaml is a YAML list of `key=value` strings."""
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line[2:].strip().strip("'\"") for line in lines if line.startswith("- ")]


def grouping_overrides(result: dict) -> dict[str, str]:
    """The overrides of a run that define its group: every key=value but NOT_GROUPED ones."""
    out = {}
    for item in result.get("overrides") or []:
        key, _, value = item.lstrip("+~").partition("=")
        if key not in NOT_GROUPED and key.split(".")[0] not in NOT_GROUPED_UNDER:
            out[key] = value
    return out


def label_variants(results: list[dict]) -> None:
    """Set `variant` on each result: the grouping overrides whose values differ across the runs
    of the same method (keys that only tell methods apart stay out of the labels)."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_method[r.get("method") or "?"].append(r)
    for runs in by_method.values():
        groups = [grouping_overrides(r) for r in runs]
        keys = sorted({k for g in groups for k in g})
        varying = [k for k in keys if len({g.get(k) for g in groups}) > 1]
        for result, group in zip(runs, groups):
            result["variant"] = ", ".join(f"{k}={group.get(k, 'default')}" for k in varying)


def dataset_label(result: dict) -> str:
    """name[/category], with the number of shots of a k-shot run (one column per k)."""
    config = result.get("config", {})
    dataset = config.get("dataset", {})
    name = dataset.get("name", "?")
    category = dataset.get("category")
    label = f"{name}/{category}" if category else name
    sampler = config.get("sampler") or {}
    return f"{label} ({sampler.get('shots')}-shot)" if sampler.get("name") == "kshot" else label


def method_label(result: dict) -> str:
    """The method, with the teacher when it has a single named one (rd4ad (resnet18.tv_in1k))."""
    teacher = result.get("config", {}).get("teacher", {}).get("name")
    name = result.get("method") or "?"
    label = f"{name} ({teacher})" if teacher else name
    return f"{label} [{result['variant']}]" if result.get("variant") else label


def values_of(result: dict, metric: str, pooled: bool = False) -> list[tuple[str, float | None]]:
    """(column, value) pairs of one result: per category for a multi-class run unless pooled;
    one per support set of a few-shot run tested on several (so a cell is mean ± std over them)."""
    sets = result.get("support_sets") or []
    if len(sets) > 1:
        return [(dataset_label(result), s.get("metrics", {}).get(metric)) for s in sets]
    per_category = {
        c: v for c, v in (result.get("metrics_per_category") or {}).items() if c != "category_mean"
    }
    if per_category and not pooled:
        name = result.get("config", {}).get("dataset", {}).get("name", "?")
        return [(f"{name}/{c}", v.get(metric)) for c, v in per_category.items()]
    return [(dataset_label(result), result.get("metrics", {}).get(metric))]


def table(
    results: list[dict], metric: str, pooled: bool = False
) -> tuple[list[str], list[str], dict]:
    """Cells {(method, dataset): [values over seeds]} for one metric."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        for column, value in values_of(r, metric, pooled):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                cells[(method_label(r), column)].append(100 * float(value))
    methods = sorted({m for m, _ in cells})
    datasets = sorted({d for _, d in cells})
    return methods, datasets, cells


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def row_mean(cells: dict, method: str, datasets: list[str]) -> float | None:
    """The mean over a row's columns of the per-column means (None for an empty row)."""
    means = [statistics.fmean(cells[(method, d)]) for d in datasets if cells.get((method, d))]
    return statistics.fmean(means) if means else None


def paper_blocks(results: list[dict]) -> list[dict]:
    """The distinct paper blocks of the runs (a preset's published numbers); a malformed one is
    reported on stderr and left out."""
    blocks: list[dict] = []
    for r in results:
        try:
            block = check_paper((r.get("config") or {}).get("paper"), "config.paper")
        except PaperError as err:
            print(f"warning: {r.get('run_dir', '?')}: {err}", file=sys.stderr)
            continue
        if block is not None and block not in blocks:
            blocks.append(block)
    return blocks


def paper_rows(
    blocks: list[dict], method: str, labels: list[str], metric: str, datasets: list[str], cells
) -> list[str]:
    """The "paper" row of one method and a "Δ" row (measured - paper) per measured variant."""
    values = [paper_value(blocks, method, metric, d) for d in datasets]
    mean = paper_value(blocks, method, metric, "mean")
    if mean is None and values and None not in values:
        mean = statistics.fmean(values)
    if mean is None and all(v is None for v in values):
        return []
    num = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    diff = lambda a, b: "-" if a is None or b is None else f"{a - b:+.1f}"  # noqa: E731
    rows = [f"| paper: {method} | " + " | ".join(num(v) for v in values) + f" | {num(mean)} |"]
    for label in labels:
        measured = [
            statistics.fmean(cells[(label, d)]) if cells.get((label, d)) else None for d in datasets
        ]
        deltas = [diff(a, b) for a, b in zip(measured, values)]
        total = diff(row_mean(cells, label, datasets), mean)
        rows.append(f"| Δ {label} | " + " | ".join(deltas) + f" | {total} |")
    return rows


def markdown(results: list[dict], metrics: list[str], pooled: bool = False) -> str:
    blocks = paper_blocks(results)
    names = {method_label(r): r.get("method") or "?" for r in results}
    out = []
    for metric in metrics:
        methods, datasets, cells = table(results, metric, pooled)
        if not methods:
            continue
        out.append(f"### {metric} (%)\n")
        out.append("| method | " + " | ".join(datasets) + " | mean |")
        out.append("|---" * (len(datasets) + 2) + "|")
        groups: dict[str, list[str]] = defaultdict(list)
        for m in methods:
            groups[names[m]].append(m)
        compared = False
        for method, labels in groups.items():
            for m in labels:
                row = [fmt(cells.get((m, d), [])) for d in datasets]
                avg = row_mean(cells, m, datasets)
                out.append(
                    f"| {m} | " + " | ".join(row) + f" | {'-' if avg is None else f'{avg:.1f}'} |"
                )
            extra = paper_rows(blocks, method, labels, metric, datasets, cells)
            out.extend(extra)
            compared |= bool(extra)
        if compared:
            out.append("")
            out.extend(paper_notes(blocks, metric))
        out.append("")
    return "\n".join(out)


def paper_notes(blocks: list[dict], metric: str) -> list[str]:
    """Where the paper rows come from, and which code's metric produced them."""
    lines = []
    for block in blocks:
        line = f"paper: {block['source']}; Δ = measured - paper (points)."
        code = block.get("code_metrics")
        if code and not metric.startswith("code_"):
            line += (
                f" The paper's numbers come from its code's metrics: compare code_{code}/{metric}."
            )
        lines.append(line)
    return lines


def cell_rows(results: list[dict], metrics: list[str], pooled: bool) -> list[list]:
    """One row per (metric, method, dataset) cell: mean and seed std in percent, seed count."""
    rows = []
    for metric in metrics:
        methods, datasets, cells = table(results, metric, pooled)
        for m in methods:
            for d in datasets:
                values = cells.get((m, d), [])
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    rows.append([metric, m, d, statistics.fmean(values), std, len(values)])
    return rows


def write_csv(results: list[dict], metrics: list[str], path: Path, pooled: bool = False) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "dataset", "metric", "mean", "std", "n"])
        for metric, m, d, mean, std, n in cell_rows(results, metrics, pooled):
            writer.writerow([m, d, metric, f"{mean:.4f}", f"{std:.4f}", n])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adlab.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="a run or multirun directory")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument(
        "--benchmark",
        metavar="NAME",
        help="benchmark runs (experiment=bench_*): only this benchmark's tables (medical, ...)",
    )
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="multi-class runs: one pooled column instead of one column per category",
    )
    parser.add_argument(
        "--plot", type=Path, help="write a PNG of the first metric: a panel per dataset"
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="log the table to W&B in a run of the sweep's group (offline: files for wandb sync)",
    )
    parser.add_argument("--project", default="adlab", help="W&B project for --wandb")
    args = parser.parse_args(argv)
    if not args.root.exists():
        print(f"error: {args.root} does not exist", file=sys.stderr)
        return 2
    results, missing = load_results(args.root)
    if not results:
        print(f"error: no results.json under {args.root}", file=sys.stderr)
        return 1
    if any(bench_of(r) for r in results):
        return benchmark_report(args, results, missing)
    diverged = [r for r in results if r.get("status") == "diverged"]
    results = [r for r in results if r.get("status") != "diverged"]
    label_variants(results)
    print(markdown(results, args.metrics, args.pooled))
    if diverged:
        print(f"{len(diverged)} job(s) diverged (non-finite loss, no metrics):")
        for r in diverged:
            info = r.get("divergence", {})
            print(f"  {r.get('run_dir')}: step {info.get('step')}, lr {info.get('learning_rates')}")
    if missing:
        print(f"{len(missing)} job(s) without results.json (failed or running):")
        for d in missing:
            print(f"  {d}")
    if args.csv:
        write_csv(results, args.metrics, args.csv, args.pooled)
        print(f"wrote {args.csv}")
    extras(args, results)
    return 0


def benchmark_report(args: argparse.Namespace, results: list[dict], missing: list[Path]) -> int:
    """The tables of a benchmark sweep (adlab/report_bench.py); other runs under the same root
    are reported as usual after them."""
    from adlab import report_bench

    plan = report_bench.read_plan(args.root, missing)
    bench = [r for r in results if bench_of(r)]
    if args.benchmark:
        bench = [r for r in bench if bench_of(r).get("name") == args.benchmark]
        plan["failed_by_table"] = {
            k: v for k, v in plan["failed_by_table"].items() if k[0] == args.benchmark
        }
        if not bench:
            print(f"error: no job of benchmark {args.benchmark} under {args.root}", file=sys.stderr)
            return 1
    print(report_bench.markdown(bench, args.metrics, args.pooled, plan))
    others = [r for r in results if not bench_of(r) and r.get("status") != "diverged"]
    if others:
        label_variants(others)
        print(markdown(others, args.metrics, args.pooled))
    if args.csv:
        report_bench.write_csv(bench, args.metrics, args.csv, args.pooled)
        print(f"wrote {args.csv}")
    extras(args, bench)
    return 0


def extras(args: argparse.Namespace, results: list[dict]) -> None:
    """--plot and --wandb: the table as a PNG and as W&B Tables (with the paper rows)."""
    if args.plot:
        from adlab.report_plot import plot

        print(f"wrote {plot(results, args.metrics[0], args.plot, args.pooled)}")
    if args.wandb:
        from adlab.report_wandb import log_report

        run_dir = log_report(args.root, results, args.metrics, args.pooled, args.project)
        print(f"logged the table to W&B ({run_dir})")


def bench_of(result: dict) -> dict | None:
    """The benchmark a job belongs to (config.bench, set by the benchmark sweeper), or None."""
    return (result.get("config") or {}).get("bench")


if __name__ == "__main__":
    sys.exit(main())
