"""Paper numbers as data: the presets' `paper:` blocks, the README tables generated from them,
and adlab.report's paper and Δ rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from adlab.paper import PaperError, check_paper, fill_tables, paper_table, paper_value
from adlab.report import main

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_carries_a_valid_paper_block(preset):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={preset}", "method_name=x", "run_name=x"])
    block = check_paper(cfg.paper)
    assert block is not None and block["source"]
    assert block["results"] or block.get("note")  # numbers, or why there are none


def test_numbers_are_those_of_methods_md():
    """A few cells against shared/METHODS.md, so that a typo in a preset shows up."""
    headct = check_paper(_yaml("pdd_headct"))
    assert headct["results"]["pdd"]["image_auroc"] == {"headct": 97.5}
    assert headct["results"]["rd4ad"]["image_auroc"] == {"headct": 74.3}
    chexpert = check_paper(_yaml("pdd_chexpert"))["results"]
    assert (
        chexpert["rd4ad"]["image_auroc"]["chexpert"],
        chexpert["pdd"]["image_auroc"]["chexpert"],
    ) == (71.9, 79.1)
    mvtec = check_paper(_yaml("rd4ad_mvtec"))["results"]["rd4ad"]
    assert (mvtec["image_auroc"]["mean"], mvtec["pixel_auroc"]["mean"]) == (98.5, 97.8)
    bmad = check_paper(_yaml("rd4ad_bmad"))["results"]["rd4ad"]["image_auroc"]
    assert bmad["bmad_liver"] == 60.0 and bmad["bmad_camelyon16"] == 66.6


def _yaml(name):
    from omegaconf import OmegaConf

    return OmegaConf.load(REPO / "conf" / "experiment" / f"{name}.yaml").paper


def test_readme_tables_equal_the_generated_ones():
    readmes = sorted((REPO / "experiments").glob("*/README.md"))
    marked = [p for p in readmes if "<!-- paper-table:" in p.read_text()]
    assert {p.parent.name for p in marked} == {"d24fad", "pdd", "rd4ad", "urd"}
    for path in marked:
        text = path.read_text()
        assert fill_tables(text) == text, f"{path}: run python experiments/paper_tables.py"
    proc = subprocess.run(
        [sys.executable, "experiments/paper_tables.py", "--check"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tables_are_rendered_from_the_blocks(tmp_path):
    conf = tmp_path / "experiment"
    conf.mkdir()
    (conf / "a.yaml").write_text(
        "paper:\n  source: X Table 2\n  results:\n"
        "    m1: {image_auroc: {d1: 90.0, d2: 80.25}}\n    m2: {aupro: {d2: 70}}\n"
    )
    (conf / "b.yaml").write_text("paper:\n  source: Y\n  results: {m1: {image_auroc: {d3: 1}}}\n")
    table = paper_table(["a", "b"], tmp_path)
    assert table.splitlines()[:4] == [
        "| method | metric | d1 | d2 | d3 |",
        "|---|---|---|---|---|",
        "| m1 | image_auroc | 90.0 | 80.2 | 1.0 |",
        "| m2 | aupro | - | 70.0 | - |",
    ]
    assert "Source: X Table 2 (`experiment=a`)." in table
    stale = "intro\n<!-- paper-table: a -->\nold numbers\n<!-- /paper-table -->\nend\n"
    fresh = fill_tables(stale, tmp_path)
    assert (
        fresh.startswith("intro\n<!-- paper-table: a -->\n| method |")
        and "old numbers" not in fresh
    )
    assert fresh.endswith("<!-- /paper-table -->\nend\n") and fill_tables(fresh, tmp_path) == fresh
    with pytest.raises(PaperError, match="c.yaml has no paper: block"):
        (conf / "c.yaml").write_text("trainer: {max_epochs: 1}\n")
        paper_table(["c"], tmp_path)


def _pdd(value):
    return {"source": "S", "results": {"pdd": {"image_auroc": value}}}


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"results": {}}, "source is missing"),
        (_pdd({"headct": 0.975}), None),
        (_pdd({"headct": 197.5}), r"results\.pdd\.image_auroc\.headct=197\.5.*percent"),
        (_pdd(97.5), r"results\.pdd\.image_auroc must map"),
        ({"source": "S", "code_metrics": "urd"}, r"code_metrics='urd'.*\['rd4ad', 'pdd'\]"),
        ({"source": "S", "table": 1}, r"unknown keys \['table'\]"),
    ],
)
def test_malformed_blocks_name_the_key(block, match):
    if match is None:  # a fraction is a valid (if suspicious) percentage: no silent rescaling
        assert check_paper(block)["results"]["pdd"]["image_auroc"]["headct"] == 0.975
        return
    with pytest.raises(PaperError, match=match):
        check_paper(block)


def test_paper_values_match_dataset_category_and_code_metrics():
    block = check_paper(
        {
            "source": "S",
            "code_metrics": "pdd",
            "results": {"pdd": {"image_auroc": {"headct": 97.5, "mean": 90.0, "bottle": 99.0}}},
        }
    )
    assert paper_value([block], "pdd", "image_auroc", "headct/headct") == 97.5
    assert paper_value([block], "pdd", "image_auroc", "mvtec/bottle") == 99.0
    assert paper_value([block], "pdd", "image_auroc", "mean") == 90.0
    assert paper_value([block], "pdd", "code_pdd/image_auroc", "headct/headct") == 97.5
    assert paper_value([block], "pdd", "code_rd4ad/image_auroc", "headct/headct") is None
    assert paper_value([block], "rd4ad", "image_auroc", "headct/headct") is None


PDD_PAPER = {
    "source": "PDD (Lu et al., CVPR 2026), single-class medical results",
    "code_metrics": "pdd",
    "results": {
        "rd4ad": {"image_auroc": {"headct": 74.3}},
        "pdd": {"image_auroc": {"headct": 97.5}},
    },
}


def _job(root, name, auroc, sign, paper=PDD_PAPER, code=None):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    config = {"dataset": {"name": "headct", "category": "headct"}, "teacher": {}, "paper": paper}
    metrics = {"image_auroc": auroc, **({"code_pdd/image_auroc": code} if code else {})}
    payload = {
        "method": "pdd",
        "metrics": metrics,
        "config": config,
        "overrides": [f"experiment=pdd_headct{sign}", f"seed={name}"],
    }
    (job / "results.json").write_text(json.dumps(payload))


def test_report_prints_the_paper_row_and_the_difference(tmp_path, capsys):
    _job(tmp_path, "0", 0.95, "", code=0.96)
    _job(tmp_path, "1", 0.97, "", code=0.99)
    _job(tmp_path, "2", 0.90, "_paper")
    metrics = ["image_auroc", "code_pdd/image_auroc"]
    assert main([str(tmp_path), "--metrics", *metrics]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = lines.index("| method | headct/headct | mean |")
    assert lines[start + 2 : start + 7] == [
        "| pdd [experiment=pdd_headct] | 96.0 ± 1.4 (n=2) | 96.0 |",
        "| pdd [experiment=pdd_headct_paper] | 90.0 | 90.0 |",
        "| paper: pdd | 97.5 | 97.5 |",
        "| Δ pdd [experiment=pdd_headct] | -1.5 | -1.5 |",
        "| Δ pdd [experiment=pdd_headct_paper] | -7.5 | -7.5 |",
    ]
    assert "compare code_pdd/image_auroc" in out
    # the official batch-level metric against the same published number
    code = lines[lines.index("### code_pdd/image_auroc (%)") :]
    assert "| paper: pdd | 97.5 | 97.5 |" in code
    assert "| Δ pdd [experiment=pdd_headct] | +0.0 | +0.0 |" in code
    assert not any("paper: rd4ad" in line for line in lines)  # rd4ad was not measured


def test_runs_without_a_preset_get_no_paper_row(tmp_path, capsys):
    _job(tmp_path, "0", 0.95, "", paper=None)
    assert main([str(tmp_path), "--metrics", "image_auroc"]) == 0
    out = capsys.readouterr().out
    assert "paper" not in out and "| pdd | 95.0 | 95.0 |" in out


def test_report_reads_a_mean_only_paper_value(tmp_path, capsys):
    """RD4AD's MVTec number is a mean over categories: it fills the mean column only."""
    paper = {"source": "RD4AD", "results": {"rd4ad": {"image_auroc": {"mean": 98.5}}}}
    for i, (cat, auroc) in enumerate([("bottle", 1.0), ("cable", 0.94)]):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        config = {"dataset": {"name": "mvtec", "category": cat}, "teacher": {}, "paper": paper}
        (job / "results.json").write_text(
            json.dumps({"method": "rd4ad", "metrics": {"image_auroc": auroc}, "config": config})
        )
    assert main([str(tmp_path), "--metrics", "image_auroc"]) == 0
    out = capsys.readouterr().out
    assert "| paper: rd4ad | - | - | 98.5 |" in out
    assert "| Δ rd4ad | - | - | -1.5 |" in out


def test_wandb_report_table_carries_the_paper_row():
    from adlab.report_wandb import wide_rows

    paper = {"source": "PDD", "results": {"pdd": {"image_auroc": {"headct": 97.5}}}}
    results = [
        {
            "method": "pdd",
            "metrics": {"image_auroc": auroc},
            "config": {"dataset": {"name": "headct"}, "teacher": {}, "paper": paper},
        }
        for auroc in (0.90, 0.96)
    ]
    columns, rows = wide_rows(results, "image_auroc", pooled=False)
    assert columns == ["method", "headct", "mean"]
    assert rows[0] == ["paper: pdd", "97.5", None]
    assert rows[1] == ["pdd", "93.0 ± 4.2", 93.0]
