"""Published numbers as data: the `paper:` block of a preset (conf/experiment/*.yaml).

    paper:
      source: "PDD (Lu et al., CVPR 2026), single-class medical results"
      code_metrics: pdd      # optional: the numbers come from this code's own metric code
      note: "..."            # optional
      results:               # report row (method_name) -> metric -> dataset, category or mean -> %
        rd4ad: {image_auroc: {headct: 74.3}}
        pdd: {image_auroc: {headct: 97.5}}

One source of truth: a run stores the block in results.json (`config.paper`), `adlab.report`
prints it as a "paper" row with the difference, and experiments/paper_tables.py writes the README
tables from the same files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import OmegaConf

from adlab.metrics.code_metrics import CODE_METRICS
from adlab.paths import CONF_DIR

MEAN = "mean"  # the key of a value published only as the mean over a table's columns
KEYS = ("source", "code_metrics", "note", "results")
MARKER = re.compile(r"<!-- paper-table: ([^>]*?) -->\n.*?<!-- /paper-table -->", re.DOTALL)


class PaperError(ValueError):
    """A malformed paper block; the message names the key and the fix."""


def check_paper(block, where: str = "paper") -> dict | None:
    """The block as plain dicts after checking its schema; None stays None."""
    if block is None:
        return None
    if OmegaConf.is_config(block):
        block = OmegaConf.to_container(block, resolve=True)
    if not isinstance(block, Mapping):
        raise PaperError(f"{where} must be a mapping with source and results; got {block!r}.")
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise PaperError(f"{where}: unknown keys {unknown}; use {list(KEYS)}.")
    if not isinstance(block.get("source"), str) or not block["source"].strip():
        raise PaperError(f'{where}.source is missing: name the paper and table ("PDD Table 1").')
    code = block.get("code_metrics")
    if code is not None and code not in CODE_METRICS:
        raise PaperError(f"{where}.code_metrics={code!r}: use one of {list(CODE_METRICS)} or null.")
    results = block.get("results") or {}
    if not isinstance(results, Mapping):
        raise PaperError(f"{where}.results must map method -> metric -> dataset -> percent.")
    for method, metrics in results.items():
        if not isinstance(metrics, Mapping):
            raise PaperError(f"{where}.results.{method} must map metric -> dataset -> percent.")
        for metric, values in metrics.items():
            if not isinstance(values, Mapping):
                raise PaperError(
                    f"{where}.results.{method}.{metric} must map dataset (or {MEAN}) -> percent."
                )
            for key, value in values.items():
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if not ok or not 0 <= value <= 100 or math.isnan(value):
                    raise PaperError(
                        f"{where}.results.{method}.{metric}.{key}={value!r}: give the published "
                        "number in percent (0..100), as printed in the paper."
                    )
    return {**dict(block), "results": {m: dict(v) for m, v in results.items()}}


def _published_metric(block: Mapping, metric: str) -> str:
    """The metric under which the paper's numbers are stored: `code_<c>/<m>` reads `<m>` of a
    block whose numbers came from code c (the like-for-like comparison)."""
    code, _, name = metric.partition("/")
    if name and code == f"code_{block.get('code_metrics')}":
        return name
    return metric


def paper_value(blocks: Iterable[Mapping], method: str, metric: str, column: str) -> float | None:
    """The published percent of a report cell: `column` is "dataset/category" (or "dataset" or
    "mean"); a paper key matches the whole label, the category or the dataset name."""
    name, _, category = column.partition("/")
    for block in blocks:
        values = block["results"].get(method, {}).get(_published_metric(block, metric), {})
        for key in (column, category, name):
            if key and key in values:
                return float(values[key])
    return None


def preset_paper(name: str, conf_dir: str | Path = CONF_DIR) -> dict:
    """The checked paper block written in conf/experiment/<name>.yaml."""
    path = Path(conf_dir) / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise PaperError(f"experiment={name}: no such preset ({path}).")
    block = check_paper(OmegaConf.load(path).get("paper"), f"{path.name}: paper")
    if block is None:
        raise PaperError(f"{path} has no paper: block; add the published numbers there.")
    return block


def paper_table(presets: list[str], conf_dir: str | Path = CONF_DIR) -> str:
    """Markdown: one row per (method, metric) and one column per dataset key, over the presets'
    paper blocks in order, then the sources."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    columns: dict[str, None] = {}
    sources: dict[str, list[str]] = {}
    for name in presets:
        block = preset_paper(name, conf_dir)
        sources.setdefault(block["source"], []).append(name)
        for method, metrics in block["results"].items():
            for metric, values in metrics.items():
                rows.setdefault((method, metric), {}).update(values)
                columns.update(dict.fromkeys(values))
    head = ["method", "metric", *columns]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for (method, metric), values in rows.items():
        cells = [f"{values[c]:.1f}" if c in values else "-" for c in columns]
        lines.append("| " + " | ".join([method, metric, *cells]) + " |")
    lines.append("")
    for source, names in sources.items():
        lines.append(f"Source: {source} ({', '.join(f'`experiment={n}`' for n in names)}).")
    return "\n".join(lines)


def fill_tables(text: str, conf_dir: str | Path = CONF_DIR) -> str:
    """The text with every `<!-- paper-table: preset ... -->` ... `<!-- /paper-table -->` block
    regenerated from the presets it names."""

    def render(match: re.Match) -> str:
        presets = match.group(1).split()
        table = paper_table(presets, conf_dir)
        return f"<!-- paper-table: {' '.join(presets)} -->\n{table}\n<!-- /paper-table -->"

    return MARKER.sub(render, text)
